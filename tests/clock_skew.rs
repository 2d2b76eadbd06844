//! The `skew` fault on loopback clusters: made, verified, listed and healed
//! through the CLI and plans, refused on the kernel layer, and reaching the
//! node's time-based parts (tombstone grace, pruning by age).

mod common;

use std::process::{Command, Output};

use bytes::Bytes;
use common::{ok, wait_until, TestCluster, BIN};
use serde_json::json;

fn run(cluster: &TestCluster, args: &[&str]) -> Output {
    Command::new(BIN).args(args).arg("--cluster_procs").arg(&cluster.procs).output().expect("dynabed runs")
}

fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn clock(cluster: &TestCluster, id: &str) -> serde_json::Value {
    cluster.status(id).await["clock"].clone()
}

const HOUR_MS: i64 = 3_600_000;

/// The offset a fault's probe measured, from its `verified offset N ms`.
fn measured_offset(text: &str) -> i64 {
    let (_, rest) = text.split_once("verified offset ").unwrap_or_else(|| panic!("no measured offset in {text}"));
    rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{text}"))
}

/// Whether `text` reports an offset within the probe's 5 % of `asked_ms`.
fn verified_near(text: &str, asked_ms: i64) -> bool {
    (measured_offset(text) - asked_ms).abs() <= asked_ms.abs() / 20
}

#[tokio::test]
async fn a_skew_is_applied_verified_listed_and_healed() {
    let cluster = TestCluster::up(230, 3, "memory", &[]);
    let applied = succeeded(&run(&cluster, &["fault", "skew", "--node", "node2", "--offset_ms", "-3600000"]));
    assert!(verified_near(&applied, -HOUR_MS), "{applied}");

    let listed: serde_json::Value =
        serde_json::from_str(&succeeded(&run(&cluster, &["fault", "list", "--json"]))).unwrap();
    let record = &listed[0];
    assert_eq!(
        (&record["kind"], &record["layer"], &record["targets"]),
        (&json!("skew"), &json!("app"), &json!(["node2"]))
    );
    assert!(verified_near(record["verified"].as_str().unwrap(), -HOUR_MS), "{listed}");

    let skewed = clock(&cluster, "node2").await;
    assert_eq!(skewed["offset_ms"], -HOUR_MS);
    let host_ms = dynabed::api::now_ms() as i64;
    assert!(host_ms - skewed["now_ms"].as_i64().unwrap() > HOUR_MS - 60_000, "an hour behind: {skewed}");
    assert_eq!(clock(&cluster, "node1").await["offset_ms"], 0, "only node2 is skewed");

    // A second app fault on the same node adds to the skew, not replaces it.
    succeeded(&run(&cluster, &["fault", "slow", "--node", "node2", "--fault_layer", "app", "--slow_ms", "5"]));
    assert_eq!(clock(&cluster, "node2").await["offset_ms"], -HOUR_MS, "the slowdown kept the skew");

    let kernel = run(&cluster, &["fault", "skew", "--node", "node1", "--offset_ms", "5", "--fault_layer", "kernel"]);
    let refusal = String::from_utf8_lossy(&kernel.stderr);
    assert!(!kernel.status.success() && refusal.lines().count() == 1, "{refusal}");
    assert!(refusal.contains("time namespaces") && refusal.contains("--fault_layer app"), "{refusal}");

    // A node holds its app faults in memory: restarted, it has dropped both,
    // and the list says so instead of showing them in force.
    cluster.signal("node2", nix::sys::signal::Signal::SIGKILL);
    cluster.restart("node2").await;
    assert_eq!(clock(&cluster, "node2").await["offset_ms"], 0);
    let listed: serde_json::Value =
        serde_json::from_str(&succeeded(&run(&cluster, &["fault", "list", "--json"]))).unwrap();
    let lapses: Vec<_> = listed.as_array().unwrap().iter().map(|r| r["lapse"].as_str().unwrap_or("")).collect();
    assert!(lapses.len() == 2 && lapses.iter().all(|why| why.contains("node node2")), "{listed}");

    succeeded(&run(&cluster, &["fault", "heal"]));
    let healed = clock(&cluster, "node2").await;
    assert_eq!((&healed["offset_ms"], &healed["drift_ppm"]), (&json!(0), &json!(0)));
    let host_ms = dynabed::api::now_ms() as i64;
    assert!((host_ms - healed["now_ms"].as_i64().unwrap()).abs() < 60_000, "back on the host's clock: {healed}");
    assert_eq!(succeeded(&run(&cluster, &["fault", "list", "--json"])).trim(), "[]");
}

#[tokio::test]
async fn a_plan_holds_a_skew_for_its_duration_and_needs_the_app_layer() {
    let cluster = TestCluster::up(231, 3, "memory", &[]);
    let event = json!({"at_s": 0, "duration_s": 1, "kind": "skew", "targets": ["node3"],
        "layer": "app", "params": {"offset_ms": 90000, "drift_ppm": 1000}});
    let plan = cluster.dir.path().join("plan.json");
    std::fs::write(&plan, json!([event]).to_string()).unwrap();
    let ran = succeeded(&run(&cluster, &["fault", "run", "--plan", &plan.to_string_lossy()]));
    assert!(verified_near(&ran, 90_000) && ran.contains("healed fault"), "{ran}");
    assert_eq!(clock(&cluster, "node3").await["offset_ms"], 0, "healed at the end of the plan");

    let mut kernel = event.clone();
    kernel.as_object_mut().unwrap().remove("layer");
    std::fs::write(&plan, json!([kernel]).to_string()).unwrap();
    let refused = run(&cluster, &["fault", "run", "--plan", &plan.to_string_lossy()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(r#""layer": "app""#),
        "plans default to the kernel layer"
    );
}

#[tokio::test]
async fn a_clock_set_ahead_reaps_a_tombstone_before_its_grace_is_over() {
    let grace = format!("--node_arg=--tombstone_grace_ms={HOUR_MS}");
    let cluster = TestCluster::up(232, 3, "memory", &["--node_arg=--anti_entropy=off", &grace]);
    ok(&cluster.client("node1").put("gone", Bytes::from("v"), None, Some(3)).await.unwrap());
    let read = cluster.client("node1").get("gone", None).await.unwrap();
    ok(&cluster.client("node1").delete("gone", read.context.as_deref(), Some(3)).await.unwrap());
    assert!(cluster.converged("gone").await, "every replica holds the same tombstone");
    let reaped = |stats: serde_json::Value| stats["tombstones_reaped"].as_u64().unwrap();
    for id in cluster.ids() {
        assert_eq!(reaped(cluster.admin(&id, "repair/round", json!({"fanout": "all"})).await), 0, "an hour of grace");
    }

    // Only the key's first replica reaps its tombstones: skew that one.
    let replicas = cluster.client("node1").replicas("gone").await.unwrap();
    let reaper = replicas.replicas[0].node.clone();
    succeeded(&run(&cluster, &["fault", "skew", "--node", &reaper, "--offset_ms", &(2 * HOUR_MS).to_string()]));
    assert_eq!(reaped(cluster.admin(&reaper, "repair/round", json!({"fanout": "all"})).await), 1, "two hours later");
    wait_until("no replica holds anything for the key", std::time::Duration::from_secs(5), || async {
        cluster.replicas("node1", "gone").await.values().all(|held| held.is_empty())
    })
    .await;
}

#[test]
fn bad_skews_get_one_line_errors_before_any_cluster_is_read() {
    for (args, says) in [
        (&["skew", "--node", "node1"][..], "skew needs offset_ms or drift_ppm"),
        (&["skew", "--node", "node1", "--offset_ms", "-5", "--fault_layer", "kernel"], "no kernel-level form"),
        (&["skew", "--node", "node1", "--drift-ppm", "-1000000"], "drift_ppm must be from -999999"),
        (
            &["skew", "--node", "node1", "--offset_ms", "1", "--slow_ms", "5"],
            "slow_ms applies to slow and reorder only",
        ),
        (&["slow", "--node", "node1", "--offset_ms", "5"], "offset_ms applies to skew only"),
    ] {
        let out = Command::new(BIN).arg("fault").args(args).output().unwrap();
        let error = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert!(!out.status.success() && error.contains(says), "{args:?}: {error}");
        assert_eq!(error.lines().count(), 1, "{args:?}: {error}");
    }
}

#[tokio::test]
async fn a_clock_set_ahead_prunes_clock_entries_still_young_elsewhere() {
    let young = format!("--node_arg=--prune_young_ms={HOUR_MS}");
    let cluster = TestCluster::up(233, 3, "memory", &["--node_arg=--prune_limit=1", &young]);
    let pruned = |status: serde_json::Value| status["counters"]["prune_events"].as_u64().unwrap();
    // Two coordinators: two clock entries, one beyond the limit but young.
    let mut context = None;
    for via in ["node1", "node2"] {
        ok(&cluster.client(via).put("k", Bytes::from(via), context.as_deref(), Some(3)).await.unwrap());
        context = cluster.client(via).get("k", Some(3)).await.unwrap().context;
    }
    for id in cluster.ids() {
        assert_eq!(pruned(cluster.status(&id).await), 0, "{id}: every entry is younger than an hour");
    }

    succeeded(&run(&cluster, &["fault", "skew", "--node", "node3", "--offset_ms", &(2 * HOUR_MS).to_string()]));
    ok(&cluster.client("node3").put("k", Bytes::from("node3"), context.as_deref(), Some(3)).await.unwrap());
    // node3 coordinates and stamps; to its clock the other entries are two hours old.
    assert!(pruned(cluster.status("node3").await) >= 2, "node3 pruned the entries of node1 and node2");
}
