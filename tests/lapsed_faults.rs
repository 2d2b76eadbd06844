//! A delay-line daemon that dies while its delay is in force (root only):
//! its rules use queue-bypass, so the delay is gone. Everything that looks
//! at the fault must say so, and everything that removes it must still
//! succeed, although the daemon's socket refuses every connection.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::experiment::drive;
use common::{ok_output as ok, privileged, NetnsCluster, BIN};
use dynabed::cluster::runstate::{self, RunState};
use dynabed::faults::{delay_daemon, journal};
use netns::process::{Signal, Spawned};

/// This kernel's slow fault runs on the delay line only without sch_netem.
fn delay_line_in_use(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    let netem = netns::qdisc::probe_netem().is_supported();
    if netem {
        eprintln!("{test}: skipped: needs a kernel without sch_netem (slow runs on netem here, not the delay line)");
    }
    !netem
}

/// The delay line the run state records, once it holds a verified fault.
fn verified_delay_line(prefix: &str) -> Spawned {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owned = RunState::existing(prefix).unwrap().map(|s| s.owned().unwrap()).unwrap_or_default();
        let verified = journal::in_force(prefix).unwrap().iter().any(|f| f.verified.is_some());
        if let Some(daemon) = owned.processes.iter().find(|p| p.role == delay_daemon::ROLE).filter(|_| verified) {
            return daemon.record();
        }
        assert!(Instant::now() < deadline, "no verified fault held by a delay line in {prefix} after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigkill(daemon: Spawned) {
    assert!(daemon.signal(Signal::SIGKILL), "the delay line (pid {}) was running", daemon.pid);
    assert!(daemon.wait_gone(Duration::from_secs(5)), "the delay line survived SIGKILL");
}

fn stdout(cluster: &NetnsCluster, args: &[&str]) -> String {
    ok(&cluster.dynabed(args))
}

#[test]
fn fault_list_shows_a_killed_delay_line_lapsed_and_heal_clears_what_is_left() {
    if !delay_line_in_use("lapsed_list") {
        return;
    }
    let cluster = NetnsCluster::new("th1");
    ok(&cluster.up(3));
    let applied = stdout(&cluster, &["fault", "slow", "--node", "node2", "--slow_ms", "100"]);
    assert!(applied.contains("nfqueue-delay-line") && applied.contains("verified"), "{applied}");
    let daemon = verified_delay_line("th1");
    sigkill(daemon);

    let listed = stdout(&cluster, &["fault", "list"]);
    assert!(listed.contains("lapsed") && listed.contains(&format!("pid {}", daemon.pid)), "{listed}");
    assert!(!listed.contains("verified"), "a lapsed fault is not shown as in force: {listed}");
    let listed: serde_json::Value = serde_json::from_str(&stdout(&cluster, &["fault", "list", "--json"])).unwrap();
    let why = listed[0]["lapse"].as_str().unwrap_or_default();
    assert!(why.contains(&format!("pid {}", daemon.pid)) && listed[0]["targets"][0] == "node2", "{listed}");

    let healed = stdout(&cluster, &["fault", "heal"]);
    assert!(healed.contains("healed fault 1"), "{healed}");
    let chain = netns::firewall::Chain::forward("th1-hub", "DYNABED_SLOW1").unwrap();
    assert!(chain.list().is_err(), "its iptables chain is removed");
    let owned = RunState::existing("th1").unwrap().unwrap().owned().unwrap();
    assert!(
        journal::in_force("th1").unwrap().is_empty() && owned.processes.iter().all(|p| p.role != delay_daemon::ROLE),
        "{owned:?}"
    );
    assert!(!runstate::dir_of("th1").join("delay-line.sock").exists(), "the stale socket is removed");

    // The next delay gets a daemon of its own.
    let again = stdout(&cluster, &["fault", "slow", "--node", "node3", "--slow_ms", "100"]);
    assert!(again.contains("verified"), "{again}");
    assert_ne!(verified_delay_line("th1"), daemon);
    ok(&cluster.dynabed(&["fault", "heal"]));
}

#[test]
fn cluster_down_and_cleanup_succeed_with_a_dead_delay_line_in_force() {
    if !delay_line_in_use("lapsed_down") {
        return;
    }
    let cluster = NetnsCluster::new("th2");
    ok(&cluster.up(3));
    ok(&cluster.dynabed(&["fault", "slow", "--node", "node1", "--slow_ms", "100"]));
    sigkill(verified_delay_line("th2"));
    let namespaces = cluster.namespaces();
    assert!(!namespaces.is_empty());

    ok(&cluster.dynabed(&["cluster", "down"]));
    ok(&cluster.dynabed(&["cleanup", "--prefix", "th2"]));
    let left: Vec<&String> = namespaces.iter().filter(|n| netns::namespace::exists(n)).collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!runstate::dir_of("th2").exists(), "nothing left of the run state");
}

#[test]
fn a_fault_held_for_a_duration_ends_with_an_error_when_its_delay_line_dies() {
    if !delay_line_in_use("lapsed_hold") {
        return;
    }
    let cluster = NetnsCluster::new("th3");
    ok(&cluster.up(3));
    let mut holder = Command::new(BIN)
        .args(["fault", "slow", "--node", "node2", "--slow_ms", "100", "--duration", "120"])
        .current_dir(cluster.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sigkill(verified_delay_line("th3"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while holder.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            holder.kill().unwrap();
            panic!("the holder still counts down a minute after its delay line died");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = holder.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("lapsed"), "{stderr}");
    assert_eq!(journal::in_force("th3").unwrap().len(), 0, "and it healed it");
}

#[test]
fn the_driver_records_a_lapsed_delay_and_fails_the_run() {
    if !delay_line_in_use("lapsed_driver") {
        return;
    }
    let cluster = NetnsCluster::new("th4");
    ok(&cluster.up(3));
    let killer = std::thread::spawn(|| sigkill(verified_delay_line("th4")));
    let out = cluster.dir.path().join("results");
    let args = [
        "--failure_mode",
        "slow",
        "--slow_ms",
        "100",
        "--target",
        "node2",
        "--warmup",
        "2",
        "--failure_duration",
        "8",
        "--duration",
        "12",
        "--keyspace",
        "100",
        "--concurrency",
        "2",
    ];
    let run = drive(&cluster.procs(), &out, &args);
    killer.join().expect("the delay line was killed during the run");

    assert!(!run.output.status.success(), "the run fails: {}", run.stdout());
    assert!(run.stderr().contains("lapsed"), "it says why: {}", run.stderr());
    let event = &run.faults["events"][0];
    let at = |field: &str| event[field].as_i64().unwrap_or_else(|| panic!("no {field} in {event}"));
    let (applied, lapsed, healed) = (at("applied_us"), at("lapsed_us"), at("heal_started_us"));
    assert!(applied < lapsed && lapsed <= healed, "lapsed while in force: {event}");
    assert!(event["lapse"].as_str().is_some_and(|why| why.contains("delay-line")), "{event}");
    let lapses = run.summary["lapsed_faults"].as_array().expect("the summary lists lapses");
    assert_eq!(lapses.len(), 1, "{lapses:?}");
    assert!(run.stdout().contains("ERROR: fault event 0"), "{}", run.stdout());
    assert_eq!(run.summary["leftovers"].as_array().map(Vec::len), Some(0), "{}", run.summary["leftovers"]);
}
