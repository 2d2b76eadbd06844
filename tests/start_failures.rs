//! Nodes that die as they start, on loopback clusters (no privileges
//! needed): `cluster up` and `cluster restart` must not take an answer from
//! another process at the node's address for the node itself, and must say
//! why the node died, in its own words.

mod common;

use std::process::Command;

use common::{NetnsCluster, TestCluster, BIN};
use dynabed::cluster::{manage, runstate};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread")]
async fn a_second_cluster_on_the_same_addresses_fails_with_the_address_error_and_leaves_the_first_serving() {
    let first = TestCluster::up(70, 3, "memory", &[]);
    // Removes whatever the second start leaves under its prefix, also if this test fails.
    let second = NetnsCluster::new("t71");
    let out = second.dynabed(&[
        "cluster",
        "up",
        "--loopback",
        "--nodes",
        "3",
        "--storage",
        "memory",
        "--prefix",
        "t71",
        "--loopback_host",
        "127.0.70.2",
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the second start fails: {stdout}");
    assert!(!stdout.contains("ring converged"), "{stdout}");
    assert!(
        stderr.contains("listening on 127.0.70.") && stderr.contains("Address already in use"),
        "the node's own error: {stderr}"
    );
    assert!(!second.procs().exists(), "its cluster files are removed");
    assert!(!runstate::dir_of("t71").exists(), "its run state is removed");

    for id in first.ids() {
        let record = manage::node_record(&first.procs, &id).unwrap();
        assert!(record.is_alive(), "{id} of the first cluster still runs");
        let status = first.status(&id).await;
        assert_eq!(status["id"], id.as_str());
        if let Some(pid) = status["pid"].as_u64() {
            assert_eq!(pid, u64::from(record.pid), "{id} answers from the first cluster's process");
        }
        first.wait_all_alive(&id).await;
    }
    common::ok(&first.client("node1").put("after-second", "still here".into(), None, Some(3)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_a_node_whose_port_is_taken_fails_with_the_nodes_own_error() {
    let cluster = TestCluster::up(72, 3, "memory", &[]);
    cluster.signal("node2", Signal::SIGKILL);
    let addr = cluster.nodes["node2"];
    // The killed node's listening socket is released as its process is torn
    // down, which may finish just after the process is gone: retry briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let squatter = loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => break listener,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("node2's port is not free yet ({e}); retrying");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("node2's port is still taken 10 s after it was killed: {e}"),
        }
    };
    let restart =
        || Command::new(BIN).args(["cluster", "restart", "node2", "--cluster_procs"]).arg(&cluster.procs).output();

    let out = restart().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && !stdout.contains("restarted"), "{stdout}");
    assert!(
        stderr.contains(&format!("listening on {addr}")) && stderr.contains("Address already in use"),
        "the node's own error: {stderr}"
    );
    assert!(!manage::node_record(&cluster.procs, "node2").unwrap().is_alive());

    drop(squatter);
    let out = restart().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("restarted node2"));
    assert!(manage::node_record(&cluster.procs, "node2").unwrap().is_alive());
    cluster.wait_all_alive("node2").await;
}

/// Processes whose command line names `needle` (the nodes of one cluster
/// name its cluster file).
fn processes_naming(needle: &str) -> Vec<u32> {
    let pids = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    pids.filter(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let alive = netns::process::Spawned::of(*pid).is_some_and(|p| p.is_alive());
        alive && String::from_utf8_lossy(&cmdline).contains(needle)
    })
    .collect()
}

#[test]
fn a_start_interrupted_at_any_point_leaves_no_node_and_no_run_state() {
    let mut interrupted = 0;
    for delay_ms in [50, 300, 900] {
        common::reclaim("t187");
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cluster_procs.json");
        let child = Command::new(BIN)
            .args(["cluster", "up", "--loopback", "--nodes", "100", "--storage", "memory"])
            .args(["--prefix", "t187", "--loopback_host", "127.0.187.2", "--cluster_procs"])
            .arg(&procs)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            // Up before the signal came: a cluster like any other.
            let down = Command::new(BIN).args(["cluster", "down", "--cluster_procs"]).arg(&procs).output().unwrap();
            assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
            continue;
        }
        interrupted += 1;
        assert!(stderr.contains("interrupted") && stderr.contains("removed"), "after {delay_ms} ms: {stderr}");
        let left = processes_naming(&procs.to_string_lossy());
        assert!(left.is_empty(), "after {delay_ms} ms, node processes {left:?} were left running: {stderr}");
        assert!(!runstate::dir_of("t187").exists(), "after {delay_ms} ms the run state is still there: {stderr}");
    }
    assert!(interrupted > 0, "no start was interrupted (100 nodes took under 50 ms?)");
}
