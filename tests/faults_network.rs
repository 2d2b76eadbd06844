//! The network faults users ask for — jitter, correlated loss, per-port
//! targeting, duplication, reordering, corruption — on namespaced clusters
//! (root only): each applied, its effect measured here independently of
//! the tool's own probe, healed, and nothing of it left behind. Plus the
//! checks that need no root: plan files with the new kinds parse, bad
//! combinations get one-line errors.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{ok_output as ok, privileged, NetnsCluster, BIN};
use dynabed::cluster::running::Cluster;
use dynabed::cluster::runstate::RunState;
use dynabed::faults::heal::{heal, HealFor};
use dynabed::faults::leftovers::leftovers;

/// The node's client and peer addresses.
fn ports(cluster: &NetnsCluster, id: &str) -> (SocketAddr, SocketAddr) {
    let read = Cluster::read(&cluster.procs()).unwrap();
    let node = read.node(id).unwrap();
    (node.addr, node.peer_addr())
}

/// Heals every fault in force the way `fault heal` does and asserts that
/// no undo step left anything behind (rules, tables, qdiscs, the daemon).
fn heal_leaves_nothing(cluster: &NetnsCluster) {
    let state = RunState::existing(&cluster.prefix).unwrap().expect("the cluster's run state");
    let healed = heal(&state, None, HealFor::Service).unwrap();
    assert!(!healed.is_empty(), "a fault was in force");
    let left = leftovers(&state, &healed).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Times in ms of `n` fresh TCP handshakes from `namespace`.
fn handshakes(namespace: &str, addr: SocketAddr, n: usize) -> Vec<f64> {
    netns::namespace::run_in(namespace, || {
        (0..n)
            .map(|_| {
                let started = Instant::now();
                TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    })
    .unwrap()
}

fn mean_sd(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    (mean, (samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
}

/// Sequence numbers as they arrived at a UDP socket on `to` (in the node's
/// namespace), `count` sent from the client namespace 100 µs apart.
fn arrivals(cluster: &NetnsCluster, node_ns: &str, to: SocketAddr, count: u32) -> Vec<u32> {
    let receiver = netns::namespace::run_in(node_ns, || UdpSocket::bind(to)).unwrap().unwrap();
    receiver.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let reading = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 8];
        while let Ok(4) = receiver.recv(&mut buf) {
            seen.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
        seen
    });
    let client_ns = format!("{}-client", cluster.prefix);
    let sender = netns::namespace::run_in(&client_ns, || UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    for seq in 0..count {
        sender.send_to(&seq.to_be_bytes(), to).unwrap();
        std::thread::sleep(Duration::from_micros(100));
    }
    reading.join().unwrap()
}

/// Which of `count` datagrams arrived at least once.
fn delivered(seen: &[u32], count: u32) -> Vec<bool> {
    let mut arrived = vec![false; count as usize];
    seen.iter().for_each(|&s| arrived[s as usize] = true);
    arrived
}

#[test]
fn jitter_spreads_round_trips_by_the_deviation_asked_and_heals() {
    if !privileged("jitter") {
        return;
    }
    let cluster = NetnsCluster::new("j2");
    ok(&cluster.up(3));
    let (client_port, _) = ports(&cluster, "node2");
    let out = ok(&cluster.dynabed(&["fault", "slow", "--node", "node2", "--slow_ms", "50", "--jitter_ms", "20"]));
    assert!(out.contains("standard deviation"), "the tool measured the spread: {out}");
    let (mean, sd) = mean_sd(&handshakes("j2-client", client_port, 100));
    println!("slow 50 ms, jitter 20 ms (normal): 100 handshakes, mean {mean:.1} ms, sd {sd:.1} ms");
    // 100 draws of a normal spread: the sample deviation is within 20 %
    // of 20 ms in all but about 1 % of runs (clipping at zero lowers it by
    // ~4 %); a busy machine only adds spread.
    assert!((45.0..=70.0).contains(&mean), "mean {mean:.1} ms");
    assert!((16.0..=26.0).contains(&sd), "sd {sd:.1} ms");
    heal_leaves_nothing(&cluster);
    let (mean, _) = mean_sd(&handshakes("j2-client", client_port, 20));
    assert!(mean < 20.0, "healed: handshakes take {mean:.1} ms");
}

#[test]
fn correlated_loss_comes_in_bursts_of_the_asked_correlation() {
    if !privileged("correlated_loss") {
        return;
    }
    let cluster = NetnsCluster::new("j3");
    ok(&cluster.up(3));
    let (client_port, _) = ports(&cluster, "node3");
    let args = ["fault", "loss", "--node", "node3", "--loss_pct", "20", "--loss_correlation_pct", "70"];
    let out = ok(&cluster.dynabed(&args));
    assert!(out.contains("after a lost one"), "{out}");
    let count = 5000;
    let arrived = delivered(&arrivals(&cluster, "j3-n3", SocketAddr::new(client_port.ip(), 41000), count), count);
    let lost = arrived.iter().filter(|a| !**a).count() as f64 / count as f64;
    let after_loss: Vec<bool> = arrived.windows(2).filter(|w| !w[0]).map(|w| !w[1]).collect();
    let burst = after_loss.iter().filter(|l| **l).count() as f64 / after_loss.len() as f64;
    println!("loss 20 % correlated 70 %: lost {:.1} %, lost after a loss {:.1} %", lost * 100.0, burst * 100.0);
    // Bursts (mean length 3.3) widen the share's spread to about ±1.2
    // points; independent losses would give ~20 % after a loss, not 70.
    assert!((0.14..=0.26).contains(&lost), "lost {lost}");
    assert!((0.6..=0.8).contains(&burst), "lost after a loss {burst}");
    heal_leaves_nothing(&cluster);
    let arrived = delivered(&arrivals(&cluster, "j3-n3", SocketAddr::new(client_port.ip(), 41001), 500), 500);
    assert!(arrived.iter().all(|a| *a), "healed: nothing lost");
}

#[test]
fn a_per_port_fault_slows_the_peer_port_only() {
    if !privileged("per_port") {
        return;
    }
    let cluster = NetnsCluster::new("j4");
    ok(&cluster.up(3));
    let (client_port, peer_port) = ports(&cluster, "node1");
    let out = ok(&cluster.dynabed(&["fault", "slow", "--node", "node1", "--slow_ms", "60", "--port", "peer"]));
    assert!(out.contains("untouched"), "the tool checked the other port: {out}");
    let peer = mean_sd(&handshakes("j4-client", peer_port, 10)).0;
    let client = mean_sd(&handshakes("j4-client", client_port, 10)).0;
    println!("slow 60 ms on the peer port: peer handshakes {peer:.1} ms, client handshakes {client:.1} ms");
    assert!(peer >= 55.0, "the peer port is slowed: {peer:.1} ms");
    assert!(client < 30.0, "the client port is not: {client:.1} ms");
    heal_leaves_nothing(&cluster);
    assert!(mean_sd(&handshakes("j4-client", peer_port, 10)).0 < 30.0, "healed");
}

#[test]
fn duplicate_sends_the_asked_share_twice_on_the_chosen_port_and_heals() {
    if !privileged("duplicate") {
        return;
    }
    let cluster = NetnsCluster::new("j5");
    ok(&cluster.up(3));
    let (client_port, peer_port) = ports(&cluster, "node2");
    ok(&cluster.dynabed(&["fault", "duplicate", "--node", "node2", "--duplicate_pct", "30", "--port", "client"]));
    let count = 3000;
    let twice = |to: SocketAddr| {
        let seen = arrivals(&cluster, "j5-n2", to, count);
        seen.len() as u32 - delivered(&seen, count).iter().filter(|a| **a).count() as u32
    };
    let on_client = twice(SocketAddr::new(client_port.ip(), client_port.port()));
    let on_peer = twice(SocketAddr::new(peer_port.ip(), peer_port.port()));
    println!("duplicate 30 % on the client port: {on_client} of {count} twice; peer port {on_peer}");
    // Binomial(3000, 0.3): ±5 points is six deviations.
    assert!((750..=1050).contains(&on_client), "{on_client} of {count} arrived twice");
    assert_eq!(on_peer, 0, "the peer port has no duplicates");
    heal_leaves_nothing(&cluster);
    assert_eq!(twice(client_port), 0, "healed: no duplicates");
}

#[test]
fn reorder_and_corrupt_are_measured_and_healed() {
    if !privileged("reorder_corrupt") {
        return;
    }
    let cluster = NetnsCluster::new("j6");
    ok(&cluster.up(3));
    let (client_port, _) = ports(&cluster, "node3");
    let to = SocketAddr::new(client_port.ip(), 42000);
    // Arrivals after a datagram sent later had arrived.
    let late = |seen: &[u32]| {
        let mut highest = 0;
        seen.iter()
            .filter(|&&s| {
                let overtaken = s < highest;
                highest = highest.max(s);
                overtaken
            })
            .count()
    };
    ok(&cluster.dynabed(&["fault", "reorder", "--node", "node3", "--reorder_pct", "25", "--slow_ms", "20"]));
    let seen = arrivals(&cluster, "j6-n3", to, 2000);
    println!("reorder 25 %: {} of {} arrived after a later one", late(&seen), seen.len());
    assert_eq!(seen.len(), 2000, "reordering loses nothing");
    // Each datagram sent at once (a quarter) overtakes the held ones sent
    // in the 10 ms before it: most held ones arrive late.
    assert!(late(&seen) >= 500, "{} late", late(&seen));
    heal_leaves_nothing(&cluster);
    assert_eq!(late(&arrivals(&cluster, "j6-n3", to, 500)), 0, "healed: in order");

    ok(&cluster.dynabed(&["fault", "corrupt", "--node", "node3", "--corrupt_pct", "10"]));
    let seen = arrivals(&cluster, "j6-n3", to, 3000);
    let damaged = 1.0 - seen.len() as f64 / 3000.0;
    println!("corrupt 10 %: {:.1} % never arrived intact", damaged * 100.0);
    assert!((0.06..=0.14).contains(&damaged), "{damaged}");
    heal_leaves_nothing(&cluster);
}

#[test]
fn a_plan_with_the_new_kinds_parses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let plan = r#"[
        {"at_s": 0, "duration_s": 5, "kind": "slow", "targets": ["node1"],
         "params": {"slow_ms": 50, "jitter_ms": 20, "jitter_dist": "pareto", "port": "peer"}},
        {"at_s": 5, "duration_s": 5, "kind": "loss", "targets": ["node2"],
         "params": {"loss_pct": 10, "loss_correlation_pct": 50}},
        {"at_s": 10, "duration_s": 5, "kind": "duplicate", "targets": ["node3"], "params": {"duplicate_pct": 5}},
        {"at_s": 15, "duration_s": 5, "kind": "reorder", "targets": ["node1"], "params": {"reorder_pct": 30}},
        {"at_s": 20, "duration_s": 5, "kind": "corrupt", "targets": ["node2"], "params": {"corrupt_pct": 2, "port": "client"}}
    ]"#;
    std::fs::write(&path, plan).unwrap();
    let events = dynabed::faults::plan::load(&path).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["slow", "loss", "duplicate", "reorder", "corrupt"]);
    std::fs::write(&path, plan.replace("\"jitter_dist\": \"pareto\"", "\"jitter_dist\": \"cauchy\"")).unwrap();
    assert!(dynabed::faults::plan::load(&path).is_err(), "an unknown distribution is refused");
}

/// Exit status and stderr of `dynabed fault ARGS` (no cluster needed: the
/// settings are checked first).
fn refused(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN).arg("fault").args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[test]
fn bad_combinations_get_one_line_errors() {
    for (args, says) in [
        (&["loss", "--node", "node1", "--jitter_ms", "5"][..], "jitter_ms applies to kernel-level slow only"),
        (&["slow", "--node", "node1", "--jitter_dist", "pareto"], "jitter_dist applies to slow with jitter_ms"),
        (&["slow", "--node", "node1", "--jitter_ms", "5", "--fault_layer", "app"], "kernel-level slow"),
        (&["partition", "--node", "node1", "--port", "peer"], "port applies to kernel-level slow, loss"),
        (&["loss", "--node", "node1", "--loss_correlation_pct", "100"], "loss_correlation_pct must be 0-99"),
        (&["loss", "--node", "node1", "--loss_pct", "100", "--loss_correlation_pct", "50"], "below 100"),
        (&["duplicate", "--node", "node1", "--fault_layer", "app"], "no application-level form"),
        (&["reorder", "--node", "node1", "--duplicate_pct", "5"], "duplicate_pct applies to duplicate only"),
        (&["slow", "--node", "node1", "--loss_pct", "5"], "loss_pct applies to loss only"),
        (&["pause", "--node", "node1", "--no_restart"], "no_restart applies to crash only"),
    ] {
        let error = refused(args);
        assert!(error.contains(says), "{args:?}: {error}");
        assert_eq!(error.lines().count(), 1, "{args:?}: {error}");
    }
}
