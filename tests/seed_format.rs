//! Every cluster speaks the seed's `cluster_procs.json`: node i on port
//! 60000+i−1 (or --base_port + i − 1), reached at localhost:<port> — on
//! loopback directly, in a netns cluster through the client namespace's
//! port map — so a driver written from the seed's README alone
//! (`tests/seed_driver.py`) runs unchanged under `dynabed exec`, SIGKILLing
//! a node by the pid in the file included.

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use common::{ok_output as ok, privileged, reclaim, NetnsCluster, TestCluster, BIN};
use dynabed::cluster::manage;
use serde_json::json;

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seed_driver.py");
const VALUE: &str = "written through localhost";

/// Runs the seed driver through `dynabed exec` in the cluster's folder
/// (where its cluster_procs.json is), writing `key` and killing `victim`.
fn run_driver(cluster: &NetnsCluster, key: &str, victim: &str) -> String {
    std::fs::copy(DRIVER, cluster.dir.path().join("seed_driver.py")).unwrap();
    ok(&cluster.dynabed(&["exec", "--", "/usr/bin/python3", "seed_driver.py", key, victim]))
}

/// The seed's fields of each node, in node order: (id, pid, port).
fn seed_entries(procs: &Path) -> Vec<(String, u64, u64)> {
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(procs).unwrap()).unwrap();
    let mut entries: Vec<(String, u64, u64)> = raw
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, e)| (id.clone(), e["pid"].as_u64().unwrap(), e["port"].as_u64().unwrap()))
        .collect();
    entries.sort_by_key(|(id, ..)| id[4..].parse::<u32>().unwrap());
    entries
}

fn assert_driver_saw_the_cluster(printed: &str, victim: &str) {
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines,
        [
            "node1 put 204".to_owned(),
            format!("node2 get 200 {VALUE}"),
            format!("node3 get 200 {VALUE}"),
            format!("killed {victim}"),
            format!("{victim} refused"),
            format!("node1 get 200 {VALUE}"),
        ],
        "{printed}"
    );
}

fn reserved_ports_in(namespace: &str) -> String {
    let read = || std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap();
    netns::namespace::run_in(namespace, read).unwrap().trim().to_owned()
}

#[test]
fn a_seed_driver_reaches_a_namespaced_cluster_at_localhost_and_kills_by_pid() {
    if !privileged("seed_driver_netns") {
        return;
    }
    let cluster = NetnsCluster::new("p1");
    let host_reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap();
    ok(&cluster.up(3));
    let entries = seed_entries(&cluster.procs());
    let ports: Vec<u64> = entries.iter().map(|(_, _, port)| *port).collect();
    assert_eq!(ports, [60000, 60001, 60002], "{entries:?}");
    for namespace in ["p1-client", "p1-n1", "p1-n3"] {
        assert_eq!(reserved_ports_in(namespace), "60000-60002,61000-61002", "in {namespace}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap(),
        host_reserved,
        "the host's own reservation is untouched"
    );

    let victim = manage::node_record(&cluster.procs(), "node3").unwrap();
    assert_eq!(u64::from(victim.pid), entries[2].1);
    assert_driver_saw_the_cluster(&run_driver(&cluster, "seedkey", "node3"), "node3");
    assert!(!victim.is_alive(), "the driver's SIGKILL took node3 down");

    // Restarted with its address and port, the node is at the same localhost port.
    manage::restart(&cluster.procs(), "node3").unwrap();
    let curl = |path: &str| {
        let url = format!("http://localhost:60002{path}");
        ok(&cluster.dynabed(&["exec", "--", "curl", "-s", "--max-time", "10", &url]))
    };
    let status: serde_json::Value = serde_json::from_str(&curl("/status")).unwrap();
    assert_eq!(status["id"], "node3");
    assert_eq!(curl("/kv/seedkey"), VALUE, "a quorum read through the restarted node");
    // A port no node has is nobody's.
    let nobody = cluster.dynabed(&["exec", "--", "curl", "-s", "--max-time", "5", "http://localhost:60003/kv/seedkey"]);
    assert!(!nobody.status.success(), "localhost:60003 answered: {}", String::from_utf8_lossy(&nobody.stdout));

    ok(&cluster.dynabed(&["cluster", "down"]));
    assert!(!netns::namespace::exists("p1-client"), "the port map went with the client namespace");
}

#[test]
fn a_loopback_cluster_puts_every_node_on_127_0_0_1_with_its_own_ports() {
    // Ports below the ephemeral range, clear of the suite's other clusters.
    let cluster = NetnsCluster::new("p2");
    let args = ["cluster", "up", "--loopback", "--nodes", "3", "--prefix", "p2", "--storage", "memory"];
    ok(&cluster.dynabed(&[&args[..], &["--base_port", "23000"]].concat()));
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(cluster.procs()).unwrap()).unwrap();
    for (i, id) in ["node1", "node2", "node3"].iter().enumerate() {
        let node = &raw[id];
        assert_eq!(node["host"], "127.0.0.1", "{raw}");
        assert_eq!(node["port"], 23000 + i, "{raw}");
        assert_eq!(node["peer_port"], 24000 + i, "{raw}");
        assert!(node["netns"].is_null(), "{raw}");
    }
    assert_driver_saw_the_cluster(&run_driver(&cluster, "loopkey", "node2"), "node2");
    ok(&cluster.dynabed(&["cluster", "down"]));
}

#[test]
fn ports_past_65535_or_a_host_off_loopback_are_refused_in_one_line_before_anything_starts() {
    let cluster = NetnsCluster::new("p3");
    for (flag, value, expect) in [
        ("--base_port", "64535", "--base_port 64535: 3 nodes need peer ports up to 65537, past 65535"),
        ("--loopback_host", "10.0.0.1", "a loopback host is an IPv4 address in 127.0.0.0/8"),
        // The flag's former name, kept for old scripts, is the same flag.
        ("--loopback_base", "10.0.0.1", "a loopback host is an IPv4 address in 127.0.0.0/8"),
    ] {
        let out = cluster.dynabed(&["cluster", "up", "--loopback", "--nodes", "3", "--prefix", "p3", flag, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(first.starts_with("error") && first.contains(expect), "{flag} {value}: {stderr}");
        assert!(!cluster.procs().exists(), "no cluster file after {flag} {value}");
    }
}

/// All nodes of a loopback cluster share 127.0.0.1, so a node cannot tell
/// its peers apart by their address: it knows each by the name the peer
/// proved in the handshake, and an application-level cut of one peer
/// leaves the others alone.
#[tokio::test]
async fn on_one_shared_address_an_app_cut_drops_only_the_peer_it_names() {
    reclaim("p4");
    let dir = tempfile::tempdir().unwrap();
    let procs = dir.path().join("cluster_procs.json");
    let out = Command::new(BIN)
        .args(["cluster", "up", "--loopback", "--nodes", "3", "--prefix", "p4", "--storage", "memory"])
        .args(["--base_port", "25000", "--node_arg=--timeout_cap_ms=1500"])
        .arg("--cluster_procs")
        .arg(&procs)
        .output()
        .unwrap();
    let cluster = TestCluster::adopt(dir, procs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hosts: Vec<String> = cluster.nodes.values().map(|addr| addr.ip().to_string()).collect();
    assert_eq!(hosts, ["127.0.0.1"; 3]);

    cluster.admin("node1", "fault", json!({"partition": {"peers": ["node2"]}})).await;
    // W=3 needs node1's own acknowledgement, whoever coordinates.
    let cluster = &cluster;
    let put = |via: &'static str| async move {
        cluster.client(via).put(&format!("via-{via}"), Bytes::from("v"), None, Some(3)).await.unwrap().status
    };
    assert!(put("node3").await.is_success(), "node1 still answers node3");
    assert!(!put("node2").await.is_success(), "node1 drops what node2 sends");
}
