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
