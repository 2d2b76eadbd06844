//! Namespaced clusters on the real kernel (root only): topology, isolation
//! from the host, coexisting prefixes, cleanup by ownership, bad input.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ok_output as ok, privileged, NetnsCluster, BIN};
use dynabed::client::Client;
use dynabed::cluster::{cleanup, reach::reach, running::Cluster, runstate};

/// Addresses and routes of the host's own namespace, as text lines.
fn host_network() -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for args in [["-o", "addr", "show"], ["-o", "route", "show"]] {
        let out = Command::new("ip").args(args).output().expect("ip is installed");
        lines.extend(
            String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
        );
    }
    lines
}

#[test]
fn five_nodes_in_namespaces_reach_each_other_and_leave_nothing() {
    if !privileged("five_nodes") {
        return;
    }
    let cluster = NetnsCluster::new("tn1");
    let before = host_network();
    ok(&cluster.up(5));
    let namespaces = cluster.namespaces();
    assert_eq!(namespaces.len(), 7, "hub, client and five nodes: {namespaces:?}");
    assert!(namespaces.iter().all(|n| netns::namespace::exists(n)));
    assert_eq!(host_network(), before, "the host namespace got no new address or route");
    assert!(!host_network().iter().any(|l| l.contains("198.18.")), "no 198.18.0.0/15 in the host namespace");

    let read = Cluster::read(&cluster.procs()).unwrap();
    assert_eq!(read.client_netns(), Some("tn1-client"));
    for node in read.nodes() {
        let (id, entry) = (&node.id, &node.entry);
        let node_ns = entry.netns.as_deref().unwrap();
        let inside =
            std::fs::metadata(format!("/proc/{}/ns/net", entry.pid)).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        assert_eq!(inside.ok(), Some(netns::namespace::inode(node_ns).unwrap()), "{id} runs in {node_ns}");
    }
    // Every node answers from the client namespace and sees the other four alive.
    let views = reach(Some("tn1-client"), || async {
        let mut views = Vec::new();
        for node in read.nodes() {
            views.push(Client::new(node.addr).status().await?);
        }
        Ok(views)
    })
    .unwrap();
    for view in views {
        assert_eq!(view.members.iter().filter(|m| m.alive).count(), 5, "{view:?}");
    }
    // The people's commands enter the client namespace by themselves.
    ok(&cluster.dynabed(&["put", "k", "through the client namespace"]));
    assert_eq!(ok(&cluster.dynabed(&["get", "k"])), "through the client namespace");
    let curl = ok(&cluster.dynabed(&["exec", "--", "curl", "-s", "http://198.18.0.6:60004/kv/k"]));
    assert_eq!(curl, "through the client namespace");
    ok(&cluster.dynabed(&["cluster", "status"]));

    ok(&cluster.dynabed(&["cluster", "down"]));
    assert!(namespaces.iter().all(|n| !netns::namespace::exists(n)), "namespaces removed");
    for node in read.nodes() {
        assert!(node.running().is_none(), "{} stopped", node.id);
    }
    assert!(runstate::RunState::existing("tn1").unwrap().is_none(), "run state removed");
    assert!(!cluster.procs().exists(), "cluster files removed");
    assert_eq!(host_network(), before);
}

#[test]
fn two_prefixes_coexist_and_a_prefix_in_use_is_refused() {
    if !privileged("two_prefixes") {
        return;
    }
    let a = NetnsCluster::new("tn2");
    let b = NetnsCluster::new("tn3");
    ok(&a.up(3));
    ok(&b.up(3));
    ok(&a.dynabed(&["put", "only-in-a", "x"]));
    assert_eq!(ok(&a.dynabed(&["get", "only-in-a"])), "x");
    let in_b = b.dynabed(&["get", "only-in-a"]);
    assert!(!in_b.status.success(), "same addresses, separate networks");
    assert!(String::from_utf8_lossy(&in_b.stderr).contains("not found"));

    let again = NetnsCluster { prefix: "tn2".into(), dir: tempfile::tempdir().unwrap() };
    let refused = again.up(3);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("already owns") && message.lines().count() == 1, "{message}");
    std::mem::forget(again); // it owns nothing: dropping it would clean up tn2 under `a`
    assert_eq!(ok(&a.dynabed(&["get", "only-in-a"])), "x", "the refused start touched nothing");
}

#[test]
fn cleanup_after_the_launcher_is_killed_mid_way_removes_everything() {
    if !privileged("cleanup_after_kill") {
        return;
    }
    let cluster = NetnsCluster::new("tn4");
    let mut launcher = Command::new(BIN)
        .args(["cluster", "up", "--netns", "--nodes", "60", "--prefix", "tn4", "--storage", "memory"])
        .current_dir(cluster.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(cluster.dir.path().join("launcher.log")).unwrap())
        .spawn()
        .unwrap();
    // Kill it once it has started building.
    let started = || cluster.namespaces().len() >= 5;
    let said = || std::fs::read_to_string(cluster.dir.path().join("launcher.log")).unwrap_or_default();
    let made_some = wait_until(started);
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    assert!(made_some, "the launcher made no 5 namespaces in 20 s; it said: {}", said());
    let owned = runstate::RunState::existing("tn4").unwrap().unwrap().owned().unwrap();
    assert!(!owned.namespaces.is_empty());

    let out = ok(&Command::new(BIN).args(["cleanup", "--prefix", "tn4"]).output().unwrap());
    assert!(out.contains("removed"), "{out}");
    assert!(owned.namespaces.iter().all(|n| !netns::namespace::exists(n)), "every recorded namespace removed");
    for p in &owned.processes {
        let record = netns::process::Spawned { pid: p.pid, start_time: p.start_time };
        assert!(!record.is_alive(), "{} stopped", p.role);
    }
    assert!(runstate::RunState::existing("tn4").unwrap().is_none());
}

#[test]
fn cleanup_never_signals_a_process_whose_start_time_differs() {
    if !privileged("cleanup_start_time") {
        return;
    }
    let bystander =
        netns::process::spawn_in(None, &["sleep".into(), "30".into()], Path::new("/dev/null"), &[]).unwrap();
    let state = runstate::RunState::open("tn5").unwrap();
    state
        .update(|o| {
            o.processes.push(dynabed::api::cluster::OwnedProcess {
                role: "node node1".into(),
                pid: bystander.pid,
                start_time: bystander.start_time + 1,
                host: None,
            })
        })
        .unwrap();
    drop(state);
    cleanup::cleanup("tn5").unwrap();
    assert!(bystander.is_alive(), "a pid with another start time is not ours");
    assert!(bystander.stop(Duration::from_secs(2)));
}

#[test]
fn bad_input_is_one_line_and_leaves_nothing() {
    if !privileged("bad_input") {
        return;
    }
    let cluster = NetnsCluster::new("tn6");
    for (args, expect) in [
        (vec!["--nodes", "3000", "--prefix", "tn6"], "3000"),
        (vec!["--nodes", "3", "--prefix", "toolongprefix"], "prefix"),
        (
            vec!["--nodes", "3", "--prefix", "tn6", "--cluster_procs", "/proc/no/such/cluster_procs.json"],
            "/proc/no/such",
        ),
    ] {
        let mut full = vec!["cluster", "up", "--netns"];
        full.extend(args);
        let out = cluster.dynabed(&full);
        assert!(!out.status.success(), "{full:?} should fail");
        let message = String::from_utf8_lossy(&out.stderr);
        let first = message.lines().next().unwrap_or("");
        assert!(first.contains("error") && message.contains(expect), "{full:?}: {message}");
        assert!(!runstate::dir_of("tn6").exists(), "no run state left after {full:?}");
        assert!(!netns::namespace::exists("tn6-hub"));
    }
}

/// Whether `done` became true within 20 s.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}
