//! Big namespaced clusters without a big machine (root only): past a
//! bridge's port limit the hosts are spread over leaf bridges joined by
//! trunks to a root bridge. The limit is lowered so that 12 nodes need
//! three leaves.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ok_output as ok, privileged, NetnsCluster};
use dynabed::cluster::{reach::reach, running::Cluster, runstate};

const PORTS: u16 = 6;

#[test]
fn a_cluster_past_the_port_limit_spans_leaf_bridges_and_every_host_reaches_every_other() {
    if !privileged("leaf_bridges") {
        return;
    }
    let cluster = NetnsCluster::new("g1");
    ok(&cluster.dynabed(&[
        "cluster",
        "up",
        "--netns",
        "--nodes",
        "12",
        "--prefix",
        "g1",
        "--storage",
        "memory",
        "--bridge_ports",
        &PORTS.to_string(),
    ]));
    let namespaces = cluster.namespaces();

    // 13 hosts (the client and 12 nodes), 5 per leaf: br1..br3 under br0.
    let links = netns::link::list("g1-hub").unwrap();
    let index_of = |name: &str| links.iter().find(|l| l.name == name).map(|l| l.index);
    let bridges: Vec<&str> =
        links.iter().filter(|l| l.kind.as_deref() == Some("bridge")).map(|l| l.name.as_str()).collect();
    assert_eq!(bridges.len(), 4, "{bridges:?}");
    let mut ports: BTreeMap<u32, usize> = BTreeMap::new();
    for link in &links {
        if let Some(master) = link.master {
            *ports.entry(master).or_default() += 1;
        }
    }
    for bridge in ["br0", "br1", "br2", "br3"] {
        let index = index_of(bridge).unwrap_or_else(|| panic!("no {bridge} in the hub"));
        let used = ports.get(&index).copied().unwrap_or(0);
        assert!((1..=usize::from(PORTS)).contains(&used), "{bridge} has {used} ports");
    }
    assert_eq!(ports.get(&index_of("br0").unwrap()), Some(&3), "the root holds the three trunks");

    // Every node's namespace reaches every node, across leaves, and the
    // client's does too.
    let read = Cluster::read(&cluster.procs()).unwrap();
    let addrs: Vec<_> = read.nodes().iter().map(|n| n.addr).collect();
    let mut from: Vec<String> = read.nodes().iter().map(|n| n.entry.netns.clone().unwrap()).collect();
    from.push("g1-client".into());
    for namespace in &from {
        let unreachable = reach(Some(namespace), || async {
            let mut unreachable = Vec::new();
            for addr in &addrs {
                let connect = tokio::net::TcpStream::connect(addr);
                if !matches!(tokio::time::timeout(Duration::from_secs(5), connect).await, Ok(Ok(_))) {
                    unreachable.push(*addr);
                }
            }
            Ok(unreachable)
        })
        .unwrap();
        assert!(unreachable.is_empty(), "from {namespace}: {unreachable:?} unreachable");
    }
    let status = ok(&cluster.dynabed(&["cluster", "status"]));
    assert!(status.contains("node12"), "{status}");

    ok(&cluster.dynabed(&["cluster", "down"]));
    assert!(namespaces.iter().all(|n| !netns::namespace::exists(n)), "namespaces removed");
    assert!(runstate::RunState::existing("g1").unwrap().is_none(), "run state removed");
}

#[test]
fn too_few_partitions_for_the_nodes_are_refused() {
    if !privileged("too_few_partitions") {
        return;
    }
    let cluster = NetnsCluster::new("g2");
    let out = cluster.dynabed(&["cluster", "up", "--netns", "--nodes", "12", "--prefix", "g2", "--partitions", "8"]);
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("--partitions 8"), "{message}");
    assert!(!runstate::dir_of("g2").exists(), "nothing left");
}
