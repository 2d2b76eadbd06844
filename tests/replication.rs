//! Replication under real process failures: hinted handoff after SIGKILL,
//! durability of acknowledged writes, and read repair.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{ok, wait_until, TestCluster};
use nix::sys::signal::Signal;

/// The sum over `ids` of one `/status` number, by JSON pointer.
async fn total_over(cluster: &TestCluster, ids: &[&str], pointer: &str) -> u64 {
    let mut total = 0;
    for id in ids {
        total += cluster.status(id).await.pointer(pointer).and_then(|v| v.as_u64()).expect(pointer);
    }
    total
}

async fn total(cluster: &TestCluster, pointer: &str) -> u64 {
    let ids = cluster.ids();
    total_over(cluster, &ids.iter().map(String::as_str).collect::<Vec<_>>(), pointer).await
}

#[tokio::test]
async fn hinted_handoff_delivers_writes_missed_by_a_killed_node() {
    let cluster = TestCluster::up(20, 3, "fjall", &[]);
    let delivered_before = total(&cluster, "/hints_delivered").await;
    cluster.signal("node3", Signal::SIGKILL);

    let keys: Vec<String> = (0..30).map(|i| format!("hinted{i}")).collect();
    for key in &keys {
        let put =
            cluster.client("node1").put(key, Bytes::from(format!("value of {key}")), None, Some(2)).await.unwrap();
        ok(&put);
    }
    let pending = total_over(&cluster, &["node1", "node2"], "/hints_pending").await;
    assert!(pending >= keys.len() as u64, "hints kept for node3: {pending}");

    cluster.restart("node3").await;
    wait_until("every hint is delivered", Duration::from_secs(20), || async {
        total(&cluster, "/hints_pending").await == 0
    })
    .await;
    let delivered = total(&cluster, "/hints_delivered").await - delivered_before;
    assert!(delivered >= keys.len() as u64, "hints delivered: {delivered}");
    for key in &keys {
        let held = cluster.replicas("node1", key).await;
        let expected = Some(format!("value of {key}").into_bytes());
        assert_eq!(held["node3"], vec![expected], "{key} on the restarted node");
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let cluster = TestCluster::up(21, 3, "fjall", &[]);
    let keys: Vec<String> = (0..100).map(|i| format!("durable{i}")).collect();
    for key in &keys {
        ok(&cluster.client("node1").put(key, Bytes::from(key.clone()), None, Some(3)).await.unwrap());
    }
    cluster.signal("node2", Signal::SIGKILL);
    cluster.restart("node2").await;
    cluster.wait_all_alive("node1").await;
    for key in &keys {
        let held = cluster.replicas("node1", key).await;
        assert_eq!(held["node2"], vec![Some(key.clone().into_bytes())], "{key} after SIGKILL");
    }
    assert_eq!(total(&cluster, "/hints_pending").await, 0, "W=3 writes needed no hints");
}

#[tokio::test]
async fn a_read_repairs_a_stale_replica() {
    // Memory storage: a restarted node comes back empty, i.e. stale.
    let cluster = TestCluster::up(22, 3, "memory", &[]);
    ok(&cluster.client("node1").put("repair-me", Bytes::from("v1"), None, Some(3)).await.unwrap());
    cluster.signal("node3", Signal::SIGKILL);
    cluster.restart("node3").await;
    cluster.wait_all_alive("node1").await;
    assert_eq!(cluster.replicas("node1", "repair-me").await["node3"], Vec::<Option<Vec<u8>>>::new(), "node3 lost it");

    let read = cluster.client("node1").get("repair-me", Some(2)).await.unwrap();
    assert_eq!(read.body, "v1");
    wait_until("node3 is repaired", Duration::from_secs(5), || async {
        cluster.replicas("node1", "repair-me").await["node3"] == vec![Some(b"v1".to_vec())]
    })
    .await;
    assert!(total(&cluster, "/counters/read_repairs").await >= 1);
}

#[tokio::test]
async fn sloppy_quorum_writes_to_a_stand_in_which_hands_off() {
    let cluster = TestCluster::up(23, 5, "fjall", &[]);
    let key = "sloppy";
    let owners: Vec<String> = cluster.replicas("node1", key).await.into_keys().collect();
    let outsiders: Vec<String> = cluster.ids().into_iter().filter(|id| !owners.contains(id)).collect();
    let (down, coordinator) = (&owners[2], &owners[0]);
    cluster.signal(down, Signal::SIGKILL);

    // W=3 with a preference-list node down succeeds only through a stand-in.
    let put = cluster.client(coordinator).put(key, Bytes::from("kept for later"), None, Some(3)).await.unwrap();
    ok(&put);
    let ids: Vec<&str> = outsiders.iter().map(String::as_str).collect();
    assert_eq!(total_over(&cluster, &ids, "/hints_pending").await, 1, "one stand-in holds the hint");

    cluster.restart(down).await;
    wait_until("the stand-in hands the hint off", Duration::from_secs(20), || async {
        total_over(&cluster, &ids, "/hints_pending").await == 0
    })
    .await;
    assert_eq!(cluster.replicas("node1", key).await[down.as_str()], vec![Some(b"kept for later".to_vec())]);
    assert_eq!(total_over(&cluster, &ids, "/hints_delivered").await, 1);
}
