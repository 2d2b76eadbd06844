//! Gossip membership and failure detection on real processes.

mod common;

use std::time::{Duration, Instant};

use common::{ok, wait_until, TestCluster};
use nix::sys::signal::Signal;

#[tokio::test]
async fn twenty_nodes_all_see_each_other() {
    let cluster = TestCluster::up(30, 20, "memory", &[]);
    let converged =
        cluster.startup.lines().find(|l| l.starts_with("ring converged")).expect("cluster up reports convergence");
    println!("20 loopback nodes: {converged}");
    for id in cluster.ids() {
        let status = cluster.status(&id).await;
        let members = status["members"].as_array().unwrap();
        assert_eq!(members.len(), 20, "{id} knows {} members", members.len());
        assert!(members.iter().all(|m| m["alive"] == true), "{id}: {members:?}");
        assert_eq!(status["ring"]["members"].as_array().unwrap().len(), 20);
    }
}

#[tokio::test]
async fn a_paused_node_is_marked_down_and_comes_back() {
    // Heartbeats are gossiped every 100 ms; 1 s of silence means down.
    let cluster = TestCluster::up(31, 5, "memory", &[]);
    let detection = Duration::from_millis(1000);
    let others = ["node1", "node2", "node3", "node4"];
    cluster.signal("node5", Signal::SIGSTOP);
    let stopped = Instant::now();
    wait_until("every other node sees node5 down", Duration::from_secs(10), || async {
        let mut all = true;
        for id in others {
            let status = cluster.status(id).await;
            let node5 = status["members"].as_array().unwrap().iter().find(|m| m["id"] == "node5").cloned().unwrap();
            all &= node5["alive"] == false;
        }
        all
    })
    .await;
    let took = stopped.elapsed();
    println!(
        "node5 marked down by all others {} ms after SIGSTOP (detection time {} ms)",
        took.as_millis(),
        detection.as_millis()
    );
    assert!(took <= detection + Duration::from_millis(1500), "detection took {took:?}");
    let status = cluster.status("node1").await;
    assert_eq!(status["ring"]["members"].as_array().unwrap().len(), 5, "a down node stays in the ring");

    cluster.signal("node5", Signal::SIGCONT);
    for id in others {
        cluster.wait_all_alive(id).await;
    }
}

#[tokio::test]
async fn a_joining_node_takes_its_share_of_partitions_and_data() {
    let mut cluster = TestCluster::up(32, 3, "memory", &["--node_arg=--anti_entropy=off"]);
    let keys: Vec<String> = (0..300).map(|i| format!("user{i}")).collect();
    for key in &keys {
        let put = cluster.client("node1").put(key, bytes::Bytes::from(key.clone()), None, Some(3)).await.unwrap();
        common::ok(&put);
    }
    let args: Vec<String> = [
        "--host",
        "127.0.32.5",
        "--port",
        "60000",
        "--peer_port",
        "61000",
        "--seeds",
        "127.0.32.2:61000",
        "--storage",
        "memory",
        "--N",
        "3",
        "--partitions",
        "256",
        "--anti_entropy=off",
        "--fail_after_ms",
        "1000",
        "--gossip_ms",
        "100",
    ]
    .map(String::from)
    .to_vec();
    cluster.add_node("node4", &args).await;
    for id in cluster.ids() {
        cluster.wait_all_alive(&id).await;
        assert_eq!(cluster.status(&id).await["ring"]["members"].as_array().unwrap().len(), 4);
    }
    let owned = cluster.merkle_roots("node4").await.len();
    println!("node4 replicates {owned} of 256 partitions after joining 3 nodes (N=3)");
    assert!((140..=230).contains(&owned), "about 3/4 of the partitions: {owned}");

    cluster.repair_round(1).await;
    let mut on_node4 = 0;
    for key in &keys {
        let held = cluster.replicas("node1", key).await;
        if let Some(values) = held.get("node4") {
            assert_eq!(values, &vec![Some(key.clone().into_bytes())], "{key} on the new node");
            on_node4 += 1;
        }
        assert!(cluster.converged(key).await, "{key}");
    }
    assert!(on_node4 > keys.len() / 2, "node4 received its share: {on_node4} of {}", keys.len());
}

#[tokio::test]
async fn a_node_leaves_gracefully_and_hands_its_data_over() {
    let cluster = TestCluster::up(34, 4, "memory", &["--node_arg=--anti_entropy=off"]);
    let keys: Vec<String> = (0..200).map(|i| format!("user{i}")).collect();
    for key in &keys {
        common::ok(&cluster.client("node1").put(key, bytes::Bytes::from(key.clone()), None, Some(3)).await.unwrap());
    }
    let leaving = dynabed::cluster::manage::node_record(&cluster.procs, "node4").unwrap();
    let stats = cluster.admin("node4", "leave", serde_json::json!({})).await;
    println!("node4 left: {stats}");
    assert!(stats["keys"].as_u64().unwrap() > 100 && stats["failed_writes"] == 0, "{stats}");
    assert!(leaving.wait_gone(Duration::from_secs(5)), "node4 stops after leaving");
    for id in ["node1", "node2", "node3"] {
        let status = cluster.status(id).await;
        assert_eq!(status["ring"]["members"].as_array().unwrap().len(), 3, "{id}: {status}");
    }
    for key in &keys {
        let held = cluster.replicas("node1", key).await;
        assert_eq!(held.len(), 3);
        assert!(held.values().all(|v| v == &vec![Some(key.clone().into_bytes())]), "{key}: {held:?}");
    }
    let read = cluster.client("node2").get("user7", Some(3)).await.unwrap();
    assert_eq!(read.body, "user7", "R=3 on the three that remain");
}

#[tokio::test]
async fn the_last_member_is_refused_a_leave_and_keeps_serving() {
    let cluster = TestCluster::up(35, 1, "memory", &[]);
    ok(&cluster.client("node1").put("k", bytes::Bytes::from("v"), None, Some(1)).await.unwrap());
    let refused = cluster.client("node1").admin("leave", &serde_json::json!({})).await.unwrap();
    assert_eq!(refused.status, 409, "{}", refused.reason());
    assert!(refused.reason().contains("last member"), "{}", refused.reason());
    let read = cluster.client("node1").get("k", Some(1)).await.unwrap();
    assert_eq!(ok(&read).body.as_ref(), b"v", "still serving, data intact");
    assert_eq!(cluster.status("node1").await["ring"]["members"], serde_json::json!(["node1"]));
}
