//! The seed's five example runs (section 3), through
//! `scripts/experiment_driver` with the seed's flags, on 5-node namespaced
//! clusters with persistent storage (root only; skipped, and said so,
//! without the capabilities).

mod common;

use std::process::Command;

use common::experiment::{drive_with, Row, Run};
use common::{ok_output, privileged, NetnsCluster};
use dynabed::cluster::runstate;

/// The seed's example flags, plus a --duration that holds warmup and failure.
fn seed_example(prefix: &str, flags: &[&str]) -> Option<(NetnsCluster, Run)> {
    if !privileged(prefix) {
        return None;
    }
    let cluster = NetnsCluster::new(prefix);
    // These runs check what the driver records, not how fast the store
    // gives up: the store's timeouts (a 100 ms floor, 600 ms to "down")
    // are for a machine that is not running other clusters beside it, and
    // the suite runs two of these at once on two cores. The short defaults
    // are checked by tests/store_faults.rs and the i09 bar.
    let loaded =
        ["--node_arg=--timeout_floor_ms=500", "--node_arg=--timeout_cap_ms=1500", "--node_arg=--fail_after_ms=3000"];
    let mut up = vec!["cluster", "up", "--netns", "--nodes", "5", "--prefix", prefix, "--storage", "fjall"];
    up.extend(loaded);
    ok_output(&cluster.dynabed(&up));
    let out = cluster.dir.path().join("results");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/experiment_driver");
    let mut command = Command::new(script);
    command.env("DYNABED_BIN", common::BIN).current_dir(cluster.dir.path());
    let run = drive_with(command, &out, &[flags, &["--duration", "35"]].concat());
    run.assert_clean();
    Some((cluster, run))
}

fn median(mut values: Vec<i64>) -> i64 {
    assert!(!values.is_empty(), "no values");
    values.sort_unstable();
    values[values.len() / 2]
}

/// Requests that neither entered at nor were served by `target`, started in `window`.
fn elsewhere<'a>(rows: &'a [Row], target: &str, window: std::ops::Range<i64>) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| r.phase != "load" && r.entry != target && r.node != target && window.contains(&r.t_start_us))
        .collect()
}

fn every_key_converged(run: &Run) {
    let results = run.repair_results.as_ref().expect("repair_results.json");
    let keys = results.as_object().unwrap();
    assert_eq!(keys.len(), 1000, "every tested key");
    let never: Vec<&String> = keys.iter().filter(|(_, r)| r.is_null()).map(|(k, _)| k).collect();
    assert!(never.is_empty(), "keys that did not converge within 10 rounds: {never:?}");
    assert!(run.stdout().contains("[REPAIR], KeysConvergedInRounds="), "{}", run.stdout());
}

#[test]
fn a_control_run_has_every_phase_and_no_errors() {
    let Some((_cluster, run)) = seed_example("tx1", &["--failure_mode", "none", "--workload", "A"]) else { return };
    for phase in ["load", "warmup", "failure", "recovery"] {
        assert!(run.rows.iter().any(|r| r.phase == phase), "a {phase} request");
    }
    assert!(run.faults["events"].as_array().unwrap().is_empty(), "no fault in a control run");
    assert!(run.summary["availability"]["overall"].as_f64().unwrap() > 0.999, "{}", run.summary["availability"]);
    // Each measured operation reads with probability ½ (the preload reads
    // and writes each key once, so it says nothing; an update's own read
    // is part of the update): six binomial
    // deviations on whatever number of requests the machine managed.
    let measured: Vec<&Row> = run.rows.iter().filter(|r| r.phase != "load" && r.op != "update_read").collect();
    let reads = measured.iter().filter(|r| r.op == "read").count() as f64 / measured.len() as f64;
    let tolerance = 6.0 * (0.25 / measured.len() as f64).sqrt();
    assert!((reads - 0.5).abs() < tolerance, "workload A reads half the time: {reads} of {}", measured.len());
}

#[test]
fn a_crashed_node_is_restarted_and_clients_back_off_from_it() {
    let flags = ["--failure_mode", "crash", "--workload", "A", "--warmup", "10", "--failure_duration", "20"];
    let Some((_cluster, run)) = seed_example("tx2", &flags) else { return };
    let (target, applied, healed) = run.fault_window();
    assert_eq!(run.faults["events"][0]["faults"][0]["backend"], "signal");
    let refused = run.rows.iter().filter(|r| r.entry == target && r.status == "connect").count();
    // Ten clients, each trying the dead node at most once per --backoff_ms (1 s).
    assert!((1..=10 * 22).contains(&refused), "{refused} refused connections to {target}");
    let during = elsewhere(&run.rows, &target, applied + 5_000_000..healed);
    let ok = during.iter().filter(|r| r.ok).count() as f64 / during.len() as f64;
    assert!(ok > 0.99, "requests not involving {target} succeed: {ok}");
    assert!(run.rows.iter().any(|r| r.phase == "recovery" && r.node == target && r.ok), "{target} serves again");
}

#[test]
fn a_slow_node_slows_only_the_requests_it_serves() {
    let flags = ["--failure_mode", "slow", "--slow_ms", "500", "--failure_duration", "15"];
    let Some((cluster, run)) = seed_example("tx3", &flags) else { return };
    let (target, applied, healed) = run.fault_window();
    let event = &run.faults["events"][0];
    let delay_line = std::fs::read_to_string(runstate::dir_of(&cluster.prefix).join("delay-line.log"));
    assert!(event["lapse"].is_null(), "the delay held to its heal: {event}\n{delay_line:?}");
    // Only requests that ended before the heal began: the ones in flight
    // then are released early and say nothing about the fault.
    let served_by_slow: Vec<i64> = run
        .rows
        .iter()
        .filter(|r| r.ok && r.node == target && r.t_start_us >= applied && r.t_end_us < healed)
        .map(|r| r.latency_us)
        .collect();
    let others: Vec<i64> =
        elsewhere(&run.rows, &target, applied..healed).iter().filter(|r| r.ok).map(|r| r.latency_us).collect();
    let (count, slow, fast) = (served_by_slow.len(), median(served_by_slow), median(others));
    // A request the slow node coordinates pays the client's round trip and
    // the quorum's: about 2 × 500 ms. One that waited for it would pay at
    // least 500 ms: less than half that is far from it, even on a busy
    // machine.
    assert!(slow > 500_000, "median of {count} via {target}: {slow} µs; {event}\n{delay_line:?}");
    assert!(fast < 250_000, "median elsewhere: {fast} µs");
}

#[test]
fn a_partitioned_node_does_not_stop_the_rest() {
    let flags = ["--failure_mode", "partition", "--partition_ms", "60000", "--failure_duration", "20"];
    let Some((_cluster, run)) = seed_example("tx4", &flags) else { return };
    assert!(run.stderr().contains("--partition_ms is unused"), "{}", run.stderr());
    partition_spares_the_rest(&run);
}

#[test]
fn a_single_partition_behaves_as_a_partition_and_repair_converges_every_key() {
    let flags = ["--failure_mode", "single_partition", "--failure_duration", "20", "--post_repair"];
    let Some((_cluster, run)) = seed_example("tx5", &flags) else { return };
    partition_spares_the_rest(&run);
    every_key_converged(&run);
}

fn partition_spares_the_rest(run: &Run) {
    let (target, applied, healed) = run.fault_window();
    assert_eq!(run.faults["events"][0]["kind"], "partition");
    assert_eq!(run.faults["events"][0]["faults"][0]["backend"], "nft-bridge");
    // The failure detector notices within --fail_after_ms (4 s).
    let noticed = applied + 5_000_000;
    let spared = elsewhere(&run.rows, &target, noticed..healed);
    let ok = spared.iter().filter(|r| r.ok).count() as f64 / spared.len() as f64;
    assert!(ok >= 0.99, "{ok} of {} requests not involving {target} succeeded", spared.len());
}

#[test]
fn post_repair_after_a_slow_node_maps_every_key_to_its_rounds() {
    let flags = ["--failure_mode", "slow", "--post_repair", "--max_repair_rounds", "10"];
    let Some((_cluster, run)) = seed_example("tx6", &flags) else { return };
    every_key_converged(&run);
    // The summary's distribution counts the same 1000 keys the file maps.
    let by_rounds = run.summary["repair"]["keys_by_rounds"].as_object().unwrap();
    assert_eq!(by_rounds.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 1000);
}
