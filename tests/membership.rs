//! Gossip membership and failure detection on real processes.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, TestCluster};
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
