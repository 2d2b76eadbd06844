//! Merkle-tree anti-entropy: repair rounds after real divergence, the
//! seed-determined number of rounds, and deletes with tombstone reaping.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{ok, wait_until, TestCluster};
use nix::sys::signal::Signal;

/// Hint delivery and background anti-entropy off, so only rounds repair.
const QUIET: &[&str] = &["--node_arg=--anti_entropy=off"];

async fn write_keys(cluster: &TestCluster, via: &str, keys: &[String], w: usize) {
    for key in keys {
        ok(&cluster.client(via).put(key, Bytes::from(format!("value of {key}")), None, Some(w)).await.unwrap());
    }
}

/// Brings `ids` back empty (memory storage loses everything on SIGKILL).
async fn lose_data(cluster: &TestCluster, ids: &[&str]) {
    for id in ids {
        cluster.signal(id, Signal::SIGKILL);
        cluster.restart(id).await;
    }
    for id in cluster.ids() {
        cluster.wait_all_alive(&id).await;
    }
}

/// Runs staged rounds until every key converged; key → rounds it needed.
async fn rounds_to_converge(cluster: &TestCluster, keys: &[String], seed: u64) -> BTreeMap<String, u64> {
    let mut needed = BTreeMap::new();
    for round in 1..=20 {
        cluster.repair_round(seed * 1000 + round).await;
        for key in keys {
            if !needed.contains_key(key) && cluster.converged(key).await {
                needed.insert(key.clone(), round);
            }
        }
        if needed.len() == keys.len() {
            return needed;
        }
    }
    panic!("{} of {} keys did not converge in 20 rounds", keys.len() - needed.len(), keys.len());
}

#[tokio::test]
async fn one_empty_replica_converges_in_one_round() {
    let cluster = TestCluster::up(40, 3, "memory", QUIET);
    cluster.switch(&["node1", "node2", "node3"], false, false).await;
    let keys: Vec<String> = (0..300).map(|i| format!("user{i}")).collect();
    write_keys(&cluster, "node1", &keys, 3).await;
    lose_data(&cluster, &["node3"]).await;
    assert!(!cluster.converged("user1").await, "node3 came back empty");
    assert_ne!(cluster.merkle_roots("node1").await, cluster.merkle_roots("node3").await);

    let stats = cluster.repair_round(1).await;
    let received: u64 =
        stats.iter().map(|s| s["keys_received"].as_u64().unwrap() + s["keys_sent"].as_u64().unwrap()).sum();
    assert!(received >= keys.len() as u64, "the round moved the missing keys: {stats:?}");
    for key in &keys {
        assert!(cluster.converged(key).await, "{key} not converged after one round");
    }
    let roots = cluster.merkle_roots("node1").await;
    assert_eq!(roots.len(), 256);
    assert_eq!(roots, cluster.merkle_roots("node2").await);
    assert_eq!(roots, cluster.merkle_roots("node3").await, "identical Merkle roots on every replica");

    let again = cluster.repair_round(2).await;
    for s in &again {
        assert_eq!(s["in_sync"], s["exchanges"], "a converged cluster exchanges only roots: {s}");
        assert_eq!(s["keys_received"], 0);
    }
}

#[tokio::test]
async fn rounds_needed_with_two_stale_replicas_vary_and_are_reproducible() {
    let cluster = TestCluster::up(41, 3, "memory", QUIET);
    cluster.switch(&["node1", "node2", "node3"], false, false).await;
    let keys: Vec<String> = (0..200).map(|i| format!("user{i}")).collect();
    write_keys(&cluster, "node1", &keys, 3).await;

    lose_data(&cluster, &["node2", "node3"]).await;
    let first = rounds_to_converge(&cluster, &keys, 7).await;
    lose_data(&cluster, &["node2", "node3"]).await;
    let second = rounds_to_converge(&cluster, &keys, 7).await;
    assert_eq!(first, second, "the same seed gives the same rounds for every key");

    let mut histogram = BTreeMap::new();
    for rounds in first.values() {
        *histogram.entry(*rounds).or_insert(0) += 1;
    }
    println!("rounds to converge (seed 7): {histogram:?}");
    assert!(histogram.len() > 1, "rounds vary from key to key: {histogram:?}");

    lose_data(&cluster, &["node2", "node3"]).await;
    let other_seed = rounds_to_converge(&cluster, &keys, 8).await;
    assert_ne!(first, other_seed, "another seed draws other peers");
}

#[tokio::test]
async fn a_delete_missed_by_a_replica_stays_deleted_and_is_reaped() {
    let cluster =
        TestCluster::up(42, 3, "fjall", &["--node_arg=--anti_entropy=off", "--node_arg=--tombstone_grace_ms=300"]);
    cluster.switch(&["node1", "node2", "node3"], false, false).await;
    ok(&cluster.client("node1").put("gone", Bytes::from("old"), None, Some(3)).await.unwrap());
    let read = cluster.client("node1").get("gone", None).await.unwrap();

    cluster.signal("node3", Signal::SIGKILL);
    ok(&cluster.client("node1").delete("gone", read.context.as_deref(), Some(2)).await.unwrap());
    cluster.restart("node3").await;
    cluster.wait_all_alive("node1").await;
    let held = cluster.replicas("node1", "gone").await;
    assert_eq!(held["node3"], vec![Some(b"old".to_vec())], "node3 still has the old value");
    assert_eq!(held["node1"], vec![None], "node1 holds the tombstone");

    cluster.repair_round(1).await;
    assert!(cluster.converged("gone").await);
    assert_eq!(cluster.replicas("node1", "gone").await["node3"], vec![None], "node3 now holds the tombstone");
    assert_eq!(cluster.client("node3").get("gone", Some(3)).await.unwrap().status, 404);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut reaped = 0;
    for id in cluster.ids() {
        let stats = cluster.admin(&id, "repair/round", serde_json::json!({"seed": 2})).await;
        reaped += stats["tombstones_reaped"].as_u64().unwrap();
    }
    assert_eq!(reaped, 1, "the partition's first replica reaps the tombstone once");
    wait_until("no replica holds anything for the key", Duration::from_secs(5), || async {
        cluster.replicas("node1", "gone").await.values().all(|v| v.is_empty())
    })
    .await;
    cluster.repair_round(3).await;
    assert_eq!(cluster.client("node2").get("gone", Some(3)).await.unwrap().status, 404, "the value never comes back");
}
