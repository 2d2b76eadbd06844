//! Kernel and process faults on namespaced clusters (root only), measured
//! from the cluster's own namespaces with fresh connections.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ok_output as ok, privileged, NetnsCluster, BIN};
use dynabed::api::admin::Held;
use dynabed::client::Client;
use dynabed::cluster::{reach::reach, running::Cluster, runstate::RunState};

fn connects_from(namespace: &str, addr: SocketAddr) -> bool {
    netns::namespace::run_in(namespace, || TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
        .unwrap()
}

fn node_addr(cluster: &NetnsCluster, id: &str, peer: bool) -> SocketAddr {
    let read = Cluster::read(&cluster.procs()).unwrap();
    let node = read.node(id).unwrap();
    if peer {
        node.peer_addr()
    } else {
        node.addr
    }
}

fn faults_in_force(prefix: &str) -> usize {
    dynabed::faults::journal::in_force(prefix).unwrap().len()
}

#[test]
fn a_kernel_partition_cuts_peers_keeps_clients_and_heals_at_once() {
    if !privileged("kernel_partition") {
        return;
    }
    let cluster = NetnsCluster::new("tf1");
    ok(&cluster.up(3));
    let peer3 = node_addr(&cluster, "node3", true);
    let client3 = node_addr(&cluster, "node3", false);
    assert!(connects_from("tf1-n1", peer3));

    let out = ok(&cluster.dynabed(&["fault", "partition", "--node", "node3"]));
    assert!(out.contains("nft-bridge") && out.contains("cannot connect"), "{out}");
    assert!(!connects_from("tf1-n1", peer3), "node1 no longer reaches node3");
    assert!(!connects_from("tf1-n2", peer3), "node2 no longer reaches node3");
    assert!(connects_from("tf1-client", client3), "clients still reach node3");
    // The cluster goes on without node3: W=2 through node1.
    ok(&cluster.dynabed(&["put", "--entry", "198.18.0.2:60000", "--W", "2", "cut", "while cut"]));

    // node1 must hear a heartbeat sent after the heal, not one from before.
    let client1 = node_addr(&cluster, "node1", false);
    reach(Some("tf1-client"), || async {
        let mut client = Client::new(client1);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = client.status().await?;
            if status.down().any(|id| id == "node3") {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "node1 never saw node3 down");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .unwrap();

    ok(&cluster.dynabed(&["fault", "heal"]));
    // The first fresh connection after the heal passes (a cut one would
    // time out): the heal takes effect at once.
    let healed_at = Instant::now();
    assert!(connects_from("tf1-n1", peer3), "a fresh connection passes right after the heal");
    assert_eq!(faults_in_force("tf1"), 0);
    // Peer traffic resumes within the peer timeout (1 s) plus 1 s: node1
    // hears node3's heartbeat again.
    let resumed = reach(Some("tf1-client"), || async {
        let mut client = Client::new(client1);
        loop {
            let status = client.status().await?;
            if status.members.iter().any(|m| m.id == "node3" && m.alive) {
                return Ok(healed_at.elapsed());
            }
            anyhow::ensure!(healed_at.elapsed() < Duration::from_secs(10), "node1 never saw node3 again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .unwrap();
    assert!(resumed < Duration::from_secs(2), "peer traffic resumed after {resumed:?}");
    let hub_tables = Command::new("ip").args(["netns", "exec", "tf1-hub", "nft", "list", "tables"]).output().unwrap();
    assert!(String::from_utf8_lossy(&hub_tables.stdout).trim().is_empty(), "no rule left in the hub");
}

#[test]
fn a_fault_survives_its_killed_applier_in_the_journal_and_heals_from_it() {
    if !privileged("journal") {
        return;
    }
    let cluster = NetnsCluster::new("tf2");
    ok(&cluster.up(3));
    let peer2 = node_addr(&cluster, "node2", true);
    let mut applier = Command::new(BIN)
        .args(["fault", "partition", "--node", "node2", "--duration", "60"])
        .current_dir(cluster.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The applier prints the fault once it is applied and verified.
    let mut said = String::new();
    BufReader::new(applier.stdout.take().unwrap()).read_line(&mut said).unwrap();
    assert!(said.contains("verified"), "the partition never took effect: {said:?}");
    applier.kill().unwrap(); // SIGKILL: it cannot heal
    applier.wait().unwrap();
    assert_eq!(faults_in_force("tf2"), 1, "the journal still holds the fault");
    assert!(!connects_from("tf2-n1", peer2), "and the fault is still in force");
    // A delay too, with its daemon, left in force by an applier that exits.
    ok(&cluster.dynabed(&["fault", "slow", "--node", "node3", "--slow_ms", "100"]));
    let owned = RunState::existing("tf2").unwrap().unwrap().owned().unwrap();
    let daemon = owned.processes.iter().find(|p| p.role == "delay-line").expect("a delay line runs");
    let daemon = netns::process::Spawned { pid: daemon.pid, start_time: daemon.start_time };
    assert!(daemon.is_alive());

    let out = ok(&Command::new(BIN).args(["cleanup", "--prefix", "tf2"]).output().unwrap());
    assert!(out.contains("healed 2 fault"), "{out}");
    assert!(!daemon.is_alive(), "no delay line left running");
    assert!(RunState::existing("tf2").unwrap().is_none());
}

#[test]
fn pause_completes_handshakes_but_answers_nothing_until_continued() {
    if !privileged("pause") {
        return;
    }
    let cluster = NetnsCluster::new("tf3");
    ok(&cluster.up(3));
    let client2 = node_addr(&cluster, "node2", false);
    let out = ok(&cluster.dynabed(&["fault", "pause", "--node", "node2"]));
    assert!(out.contains("state T"), "{out}");
    let answered = reach(Some("tf3-client"), || async {
        let connected = tokio::net::TcpStream::connect(client2).await.is_ok();
        let status = Client::new(client2).with_timeout(Duration::from_millis(800)).status().await;
        Ok((connected, status.is_ok()))
    })
    .unwrap();
    assert_eq!(answered, (true, false), "the kernel completes the handshake; the stopped node never answers");
    ok(&cluster.dynabed(&["fault", "heal"]));
    let after = reach(Some("tf3-client"), || async { Ok(Client::new(client2).status().await.is_ok()) }).unwrap();
    assert!(after, "answers again after SIGCONT");
}

#[test]
fn a_crashed_node_restarts_with_a_new_pid_and_its_acknowledged_writes() {
    if !privileged("crash") {
        return;
    }
    let cluster = NetnsCluster::new("tf4");
    let out = cluster.dynabed(&["cluster", "up", "--netns", "--nodes", "3", "--prefix", "tf4", "--storage", "fjall"]);
    ok(&out);
    for i in 0..20 {
        ok(&cluster.dynabed(&["put", "--W", "3", &format!("k{i}"), &format!("v{i}")]));
    }
    let before = Cluster::read(&cluster.procs()).unwrap().node("node1").unwrap().entry.pid;
    ok(&cluster.dynabed(&["fault", "crash", "--node", "node1"]));
    ok(&cluster.dynabed(&["fault", "heal"]));
    let read = Cluster::read(&cluster.procs()).unwrap();
    let after = read.node("node1").unwrap().entry.pid;
    assert_ne!(before, after, "a new process");
    assert!(read.node("node1").unwrap().running().is_some(), "the cluster files name the new process");
    let owned = RunState::existing("tf4").unwrap().unwrap().owned().unwrap();
    assert!(owned.processes.iter().any(|p| p.pid == after), "the run state owns it, for cleanup");
    let addr = node_addr(&cluster, "node1", false);
    let token = read.meta().admin_token.clone();
    let held = reach(Some("tf4-client"), || async {
        let mut client = Client::new(addr).with_token(Some(token));
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.status().await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the restarted node never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut values = Vec::new();
        for i in 0..20 {
            let answer = client.replicas(&format!("k{i}")).await?;
            let node1 = answer.replicas.into_iter().find(|r| r.node == "node1").unwrap();
            values.push(match node1.held {
                Held::Versions { versions } => versions.len(),
                Held::Unreadable { .. } => 0,
            });
        }
        Ok(values)
    })
    .unwrap();
    assert!(held.iter().all(|&n| n == 1), "every acknowledged write is on the restarted node: {held:?}");
}

#[test]
fn loss_drops_about_the_asked_share_one_way_and_heals() {
    if !privileged("loss") {
        return;
    }
    let cluster = NetnsCluster::new("tf5");
    ok(&cluster.up(3));
    ok(&cluster.dynabed(&["fault", "loss", "--node", "node2", "--loss_pct", "20"]));
    let sent = 5000;
    let lost = udp_loss("tf5-client", "tf5-n2", "198.18.0.3:40000".parse().unwrap(), sent);
    // Each datagram is dropped with probability 0.2: the share lost is
    // binomial, six deviations (±3.4 points over 5000) is no accident.
    let tolerance = 6.0 * (0.2 * 0.8 / sent as f64).sqrt();
    println!("loss 20 %: measured {:.1} % over {sent} datagrams (±{:.1})", lost * 100.0, tolerance * 100.0);
    assert!((lost - 0.2).abs() < tolerance, "measured {lost}");
    ok(&cluster.dynabed(&["fault", "heal"]));
    assert_eq!(udp_loss("tf5-client", "tf5-n2", "198.18.0.3:40001".parse().unwrap(), 500), 0.0);
}

#[test]
fn bandwidth_and_cpu_faults_are_applied_where_asked_and_removed() {
    if !privileged("bandwidth_cpu") {
        return;
    }
    let cluster = NetnsCluster::new("tf6");
    ok(&cluster.up(3));
    let out = ok(&cluster.dynabed(&["fault", "bandwidth", "--node", "node3", "--rate_kbit", "800"]));
    assert!(out.contains("tf6-hub/tf6-n3: tbf 100000 B/s") && out.contains("tf6-n3/eth0: tbf 100000 B/s"), "{out}");
    let out = ok(&cluster.dynabed(&["fault", "cpu", "--node", "node1", "--cpu_pct", "10"]));
    assert!(out.contains("limited to 10%"), "{out}");
    ok(&cluster.dynabed(&["fault", "heal"]));
    for (ns, dev) in [("tf6-hub", "tf6-n3"), ("tf6-n3", "eth0")] {
        assert_ne!(
            netns::qdisc::root(ns, dev).unwrap().map(|q| q.kind),
            Some("tbf".to_owned()),
            "{dev} shaped no more"
        );
    }
    let group = netns::cgroup::CpuGroup::open("dynabed-tf6-fault2").unwrap();
    assert!(!group.path.exists(), "the cgroup is gone");
}

/// Sends `count` datagrams from one namespace to a receiver in another,
/// paced, and returns the share that never arrived.
fn udp_loss(from: &str, to: &str, target: SocketAddr, count: usize) -> f64 {
    let receiver = netns::namespace::run_in(to, || std::net::UdpSocket::bind(target)).unwrap().unwrap();
    // Room for every datagram: a receiver kept off the CPU by a busy machine
    // must not lose any to a full socket buffer, which would read as loss.
    dynabed::faults::exec::check::force_receive_buffer(&receiver, 32 << 20).unwrap();
    receiver.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // Read while sending, until the sender is done and nothing came for
    // half a second: however late this thread runs, it counts everything.
    let counter = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut received = 0;
            let mut buf = [0u8; 16];
            let mut quiet_since = None;
            loop {
                if receiver.recv(&mut buf).is_ok() {
                    received += 1;
                    quiet_since = None;
                } else if done.load(Ordering::SeqCst) {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_millis(500) {
                        return received;
                    }
                }
            }
        }
    });
    let sender = netns::namespace::run_in(from, || std::net::UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    for i in 0..count {
        sender.send_to(&(i as u32).to_be_bytes(), target).unwrap();
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    done.store(true, Ordering::SeqCst);
    let received = counter.join().unwrap();
    1.0 - received as f64 / count as f64
}

/// The times of `count` requests to `/status` on one kept-alive connection
/// from the client namespace, in the order they were sent: one round trip
/// each.
fn rtts(client_ns: &str, addr: SocketAddr, count: usize) -> Vec<Duration> {
    reach(Some(client_ns), || async {
        let mut client = Client::new(addr);
        client.status().await?;
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            client.status().await?;
            times.push(started.elapsed());
        }
        Ok(times)
    })
    .unwrap()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Median time of `count` requests: a few stalled by a busy machine do not move it.
fn median_rtt(client_ns: &str, addr: SocketAddr, count: usize) -> Duration {
    median(rtts(client_ns, addr, count))
}

#[test]
fn slow_adds_its_delay_to_each_round_trip_on_both_layers() {
    if !privileged("slow") {
        return;
    }
    let cluster = NetnsCluster::new("tf7");
    ok(&cluster.up(3));
    let (slow, other) = (node_addr(&cluster, "node3", false), node_addr(&cluster, "node2", false));
    for layer in ["kernel", "app"] {
        let (base_slow, base_other) = (median_rtt("tf7-client", slow, 15), median_rtt("tf7-client", other, 15));
        let out =
            ok(&cluster.dynabed(&["fault", "slow", "--node", "node3", "--slow_ms", "200", "--fault_layer", layer]));
        let (during_slow, during_other) = (median_rtt("tf7-client", slow, 15), median_rtt("tf7-client", other, 15));
        let added = during_slow.saturating_sub(base_slow);
        println!("{layer}: {out}\n  round trip to node3 +{added:?} (asked 200 ms); to node2 {base_other:?} -> {during_other:?}");
        // The delay sets the lower bound; above it, the bound only has to
        // tell 200 ms from a delay applied twice (400 ms), which leaves room
        // for a busy machine.
        assert!((Duration::from_millis(180)..Duration::from_millis(300)).contains(&added), "{layer}: +{added:?}");
        // Unslowed means less than half the 200 ms asked: far from it even
        // on a busy machine (other tests run beside this one).
        let half = Duration::from_millis(100);
        let other_change = during_other.abs_diff(base_other);
        assert!(other_change < half, "{layer}: node2 changed by {other_change:?}");
        ok(&cluster.dynabed(&["fault", "heal"]));
        let after = rtts("tf7-client", slow, 15);
        assert!(after[0] < base_slow + half, "{layer}: the first request after the heal took {:?}", after[0]);
        let after = median(after);
        assert!(after < base_slow + half, "{layer}: {after:?} after heal, baseline {base_slow:?}");
    }
    assert!(
        RunState::existing("tf7").unwrap().unwrap().owned().unwrap().processes.iter().all(|p| p.role != "delay-line"),
        "the delay line stops once it delays nothing"
    );
}

#[test]
fn a_plan_applies_and_heals_each_event_on_time() {
    if !privileged("plan") {
        return;
    }
    let cluster = NetnsCluster::new("tf8");
    ok(&cluster.up(3));
    let plan = cluster.dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"[{"at_s": 0.5, "duration_s": 2.5, "kind": "partition", "targets": ["node2"]},
            {"at_s": 2.0, "duration_s": 0.5, "kind": "pause", "targets": ["node3"]}]"#,
    )
    .unwrap();
    // The runner prints a step's line once the step, verification probe
    // included, is done; the test's clock starts before the runner's.
    let started = Instant::now();
    let mut runner = Command::new(BIN)
        .args(["fault", "run", "--plan"])
        .arg(&plan)
        .current_dir(cluster.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<(String, f64)> = BufReader::new(runner.stdout.take().unwrap())
        .lines()
        .map(|line| (line.unwrap(), started.elapsed().as_secs_f64()))
        .collect();
    let output = runner.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "fault run: {}", String::from_utf8_lossy(&output.stderr));
    let out: String = lines.iter().map(|(line, _)| format!("{line}\n")).collect();
    let steps: Vec<(f64, f64)> =
        lines.iter().filter_map(|(line, seen)| Some((line.split_whitespace().next()?.parse().ok()?, *seen))).collect();
    let [(partition, partition_done), (pause, _)] = steps[..] else { panic!("two steps: {out}") };
    // A step never starts before its time. It starts late only while the
    // step before is still being applied (slow on a busy machine), and
    // then right after it: within 0.5 s of the later of its time and the
    // line before. A runner that counted each event's at_s from the step
    // before would start the pause at least 2 s after the partition's line.
    // A line's time is when its step was done, verification included,
    // which a loaded machine can stretch; the bound only catches a runner
    // that counted from the wrong origin.
    assert!((0.5..2.0).contains(&partition), "the partition applied on time: {out}");
    assert!(
        pause >= 2.0 && pause < partition_done.max(2.0) + 0.5,
        "the pause applied on time; the partition's line came at {partition_done:.3} s: {out}"
    );
    assert!(took >= Duration::from_millis(3000), "held until the last heal: {took:?}");
    assert_eq!(faults_in_force("tf8"), 0);
    assert!(connects_from("tf8-n1", node_addr(&cluster, "node2", true)), "the partition is healed");
}

#[test]
fn splits_can_group_nodes_and_cut_one_way() {
    if !privileged("split") {
        return;
    }
    let cluster = NetnsCluster::new("tf9");
    ok(&cluster.up(3));
    let peer = |id| node_addr(&cluster, id, true);
    ok(&cluster.dynabed(&["fault", "partition", "--node", "node1", "--with", "node2"]));
    assert!(connects_from("tf9-n1", peer("node2")), "one side stays whole");
    assert!(!connects_from("tf9-n1", peer("node3")) && !connects_from("tf9-n2", peer("node3")), "the sides are cut");
    ok(&cluster.dynabed(&["fault", "heal"]));

    ok(&cluster.dynabed(&["fault", "partition", "--node", "node2", "--direction", "in"]));
    let into = udp_loss("tf9-n1", "tf9-n2", "198.18.0.3:41000".parse().unwrap(), 200);
    let out_of = udp_loss("tf9-n2", "tf9-n1", "198.18.0.2:41000".parse().unwrap(), 200);
    assert_eq!((into, out_of), (1.0, 0.0), "only what goes into node2 is dropped");
    ok(&cluster.dynabed(&["fault", "heal"]));
    assert_eq!(udp_loss("tf9-n1", "tf9-n2", "198.18.0.3:41001".parse().unwrap(), 200), 0.0);
}

#[test]
fn the_seed_flags_run_as_a_one_event_plan_including_the_huge_delay_partition() {
    if !privileged("seed_flags") {
        return;
    }
    let cluster = NetnsCluster::new("tfa");
    ok(&cluster.up(3));
    let args = [
        "fault",
        "run",
        "--failure_mode",
        "partition",
        "--partition_style",
        "delay",
        "--partition_ms",
        "30000",
        "--warmup",
        "0.1",
        "--failure_duration",
        "1",
        "--target",
        "node2",
    ];
    let out = ok(&cluster.dynabed(&args));
    assert!(out.contains("Slow on node2") && out.contains("nfqueue-delay-line"), "{out}");
    assert!(out.contains("no handshake with node2 completes within 1 s"), "{out}");
    assert!(connects_from("tfa-client", node_addr(&cluster, "node2", false)), "healed at the end of the plan");

    let out = ok(&cluster.dynabed(&[
        "fault",
        "run",
        "--failure_mode",
        "crash",
        "--warmup",
        "0",
        "--failure_duration",
        "0.5",
        "--seed",
        "7",
    ]));
    assert!(out.contains("drawn from seed 7") && out.contains("Crash on node"), "{out}");
    assert_eq!(faults_in_force("tfa"), 0);
}
