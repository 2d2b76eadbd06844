//! Application-level faults (the comparison layer) on real processes:
//! what `slow_ms` costs, and a partition that cuts peers but not clients.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ok, wait_until, TestCluster};
use hyper::Method;
use serde_json::json;

async fn timed_get(cluster: &TestCluster, via: &str, key: &str) -> (u16, Duration) {
    let mut client = cluster.client(via);
    client.status().await.unwrap(); // connect first: time the request alone
    let started = Instant::now();
    let answer = client.get(key, Some(2)).await.unwrap();
    (answer.status.as_u16(), started.elapsed())
}

/// The median time of five GETs: one request stalled by a busy machine
/// does not move it.
async fn median_get(cluster: &TestCluster, via: &str, key: &str) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        let (status, took) = timed_get(cluster, via, key).await;
        assert_eq!(status, 200);
        times.push(took);
    }
    times.sort();
    times[2]
}

#[tokio::test]
async fn a_slow_node_costs_twice_slow_ms_only_where_it_is_needed() {
    let cluster = TestCluster::up(50, 3, "memory", &[]);
    ok(&cluster.client("node1").put("k", Bytes::from("v"), None, Some(3)).await.unwrap());
    let slow = Duration::from_millis(300);
    cluster.admin("node1", "fault", json!({"slow_ms": 300})).await;

    let (status, through_slow) = timed_get(&cluster, "node1", "k").await;
    assert_eq!(status, 200);
    assert!(
        (2 * slow - Duration::from_millis(20)..Duration::from_millis(1500)).contains(&through_slow),
        "the client's and the quorum's round trips each pay 300 ms: {through_slow:?}"
    );
    // Whatever waits for the slow node takes at least slow_ms, so a request
    // faster than that did without it, however loaded the machine.
    let around_slow = median_get(&cluster, "node2", "k").await;
    assert!(around_slow < slow, "R=2 does without the slow replica: {around_slow:?}");

    let mut admin = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let state = cluster.client("node1").send(Method::GET, "/admin/fault", None, Bytes::new()).await.unwrap();
        assert_eq!(state.json().unwrap()["slow_ms"], 300);
        admin.push(started.elapsed());
    }
    admin.sort();
    assert!(admin[2] < slow, "the admin API is never slowed: {admin:?}");

    let healed = cluster.client("node1").send(Method::DELETE, "/admin/fault", None, Bytes::new()).await.unwrap();
    assert_eq!(healed.status, 200);
    let after = median_get(&cluster, "node1", "k").await;
    assert!(after < slow, "healed: {after:?}");
}

#[tokio::test]
async fn a_partitioned_node_loses_its_peers_but_keeps_its_clients() {
    let cluster = TestCluster::up(51, 3, "memory", &[]);
    cluster.admin("node3", "fault", json!({"partition": "all"})).await;
    for id in ["node1", "node2"] {
        wait_until(&format!("{id} sees node3 down"), Duration::from_secs(10), || async {
            let status = cluster.status(id).await;
            status["members"].as_array().unwrap().iter().any(|m| m["id"] == "node3" && m["alive"] == false)
        })
        .await;
    }
    let put = cluster.client("node1").put("cut", Bytes::from("while cut"), None, Some(2)).await.unwrap();
    ok(&put);
    // node3 still answers its clients, but cannot gather a quorum.
    assert_eq!(cluster.status("node3").await["id"], "node3");
    let (status, _) = timed_get(&cluster, "node3", "cut").await;
    assert_eq!(status, 503, "a quorum needs peers");

    let healed = cluster.client("node3").send(Method::DELETE, "/admin/fault", None, Bytes::new()).await.unwrap();
    assert_eq!(healed.status, 200);
    wait_until("the hint reaches node3 after healing", Duration::from_secs(15), || async {
        cluster.replicas("node1", "cut").await["node3"] == vec![Some(b"while cut".to_vec())]
    })
    .await;
}
