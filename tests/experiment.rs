//! The experiment driver on loopback clusters (no privileges needed): key
//! distributions, staleness, the lost-write checker and bad input.

mod common;

use std::collections::{HashMap, HashSet};

use common::experiment::{drive, plan_file, Row};
use common::TestCluster;
use dynabed::workload::keys::{KeyChooser, KeyDistribution};
use rand::SeedableRng;

fn measured(rows: &[Row]) -> impl Iterator<Item = &Row> {
    rows.iter().filter(|r| r.phase != "load")
}

/// Requests the driver's measured phase sent to each key, over as many
/// runs (each with its own seed, so the draws are independent) as it takes
/// to reach `at_least`: the statistics below need that many requests, and
/// how fast they arrive depends on the machine, not on the driver.
fn key_counts(cluster: &TestCluster, out: &std::path::Path, dist: &str, at_least: u64) -> HashMap<String, u64> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for seed in 1.. {
        let total: u64 = counts.values().sum();
        if total >= at_least {
            break;
        }
        // Only a hang stops 8 clients from reaching the count in 20 runs.
        assert!(seed <= 20, "{dist}: only {total} requests in {} runs of 5 s", seed - 1);
        let seed = seed.to_string();
        let run =
            drive(&cluster.procs, out, &["--dist", dist, "--duration", "5", "--concurrency", "8", "--seed", &seed]);
        run.assert_clean();
        assert_eq!(run.manifest["settings"]["dist"], dist);
        // One draw per operation: an update's read is the same draw as its PUT.
        for row in measured(&run.rows).filter(|r| r.op != "update_read") {
            *counts.entry(row.key.clone()).or_default() += 1;
        }
    }
    counts
}

/// Pearson's χ² of `counts` against the key probabilities `p` (user<i> ↔ p[i]).
fn chi2(counts: &HashMap<String, u64>, p: &[f64]) -> f64 {
    let total: u64 = counts.values().sum();
    assert!(counts.keys().all(|k| k.strip_prefix("user").and_then(|i| i.parse::<usize>().ok()) < Some(p.len())));
    p.iter()
        .enumerate()
        .map(|(i, &p)| {
            let expected = p * total as f64;
            let observed = counts.get(&format!("user{i}")).copied().unwrap_or(0) as f64;
            (observed - expected).powi(2) / expected
        })
        .sum()
}

/// The smallest count that a Binomial(n, p) variable reaches with
/// probability at most `alpha`.
fn binomial_upper_bound(n: u64, p: f64, alpha: f64) -> u64 {
    let mut pmf = vec![(1.0 - p).powf(n as f64)];
    // Far enough into the tail that what is left is negligible.
    let limit = (n as f64 * p + 40.0 * (n as f64 * p).sqrt() + 40.0).min(n as f64) as u64;
    for k in 0..limit {
        let last = *pmf.last().unwrap();
        pmf.push(last * (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p));
    }
    let mut tail = 0.0;
    for k in (0..pmf.len()).rev() {
        tail += pmf[k];
        if tail > alpha {
            return k as u64 + 1;
        }
    }
    0
}

#[test]
fn zipf_sends_the_hottest_key_about_four_percent_uniform_a_tenth_of_one_and_an_open_loop_keeps_time() {
    let cluster = TestCluster::up(60, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    const KEYS: usize = 1000;
    // χ² over 1000 keys has 999 degrees of freedom, whatever the number of
    // requests: mean 999, standard deviation √1998 ≈ 45. Six deviations
    // above the mean is no accident.
    let chi2_limit = 999.0 + 6.0 * 1998f64.sqrt();
    // Enough requests that each key expects about 5 under uniform (so that
    // χ² is χ²), and that the tolerance on the hottest key's share (six
    // binomial deviations, 1.6 % at 5,000) leaves it far from uniform's 0.1 %.
    let at_least = 5_000;

    let uniform = vec![1.0 / KEYS as f64; KEYS];
    let counts = key_counts(&cluster, out.path(), "uniform", at_least);
    let total: u64 = counts.values().sum();
    let fit = chi2(&counts, &uniform);
    assert!(fit < chi2_limit, "uniform: χ² = {fit:.0} over {total} requests");
    // No key stands out: each key's count is Binomial(total, 1/1000); with
    // 1000 keys, a count this high has a one-in-a-million chance at most.
    let bound = binomial_upper_bound(total, 1.0 / KEYS as f64, 1e-9);
    let hottest = *counts.values().max().unwrap();
    assert!(
        hottest < bound,
        "uniform: the hottest key got {hottest} of {total} requests ({:.2} %), about 0.1 % expected",
        hottest as f64 * 100.0 / total as f64
    );

    // The law the driver should follow: the key chooser's own probabilities,
    // estimated from a million draws (their error adds about total / 1000
    // to χ², a few dozen at most).
    let chooser = KeyChooser::new(KeyDistribution::Zipf, KEYS as u64);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let mut model = vec![0.0; KEYS];
    let draws = 1_000_000;
    for _ in 0..draws {
        model[chooser.next(&mut rng) as usize] += 1.0 / draws as f64;
    }
    let (hot, p_hot) = model.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert!((0.035..0.045).contains(&p_hot), "YCSB's hottest item alone is 1/ζ ≈ 3.8 %: {p_hot}");

    let counts = key_counts(&cluster, out.path(), "zipf", at_least);
    let total: u64 = counts.values().sum();
    let share = counts.get(&format!("user{hot}")).copied().unwrap_or(0) as f64 / total as f64;
    let sigma = (p_hot * (1.0 - p_hot) / total as f64).sqrt();
    assert!(
        (share - p_hot).abs() < 6.0 * sigma,
        "zipf: user{hot} got {:.2} % of {total} requests, {:.2} ± {:.2} % expected",
        share * 100.0,
        p_hot * 100.0,
        6.0 * sigma * 100.0
    );
    let fit = chi2(&counts, &model);
    assert!(fit < chi2_limit, "zipf follows the chooser's law: χ² = {fit:.0} over {total} requests");
    let against_uniform = chi2(&counts, &uniform);
    assert!(against_uniform > chi2_limit, "zipf is far from uniform: χ² = {against_uniform:.0}");

    // An open loop: operations start on a 5 ms grid, however long each
    // takes (an update starts with its read; its PUT counts from its send).
    let run = drive(&cluster.procs, out.path(), &["--target_rate", "200", "--duration", "3", "--concurrency", "4"]);
    run.assert_clean();
    let mut starts: Vec<i64> = measured(&run.rows).filter(|r| r.op != "update").map(|r| r.t_start_us).collect();
    starts.sort_unstable();
    for (i, start) in starts.iter().enumerate() {
        assert!((start - i as i64 * 5000).abs() <= 1, "request {i} was meant to start at {} µs, not {start}", i * 5000);
    }
    // The grid has no gap: a loop that falls behind (on a loaded machine)
    // skips only slots at the end. It never starts more than the 600 slots
    // 3 s at 200/s hold.
    assert!((1..=600).contains(&starts.len()), "3 s at 200/s: {} requests", starts.len());
}

#[test]
fn a_replica_held_back_serves_reads_that_miss_exactly_the_writes_made_elsewhere() {
    let cluster = TestCluster::up(61, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let plan = plan_file(
        out.path(),
        r#"[{"at_s": 2, "duration_s": 6, "kind": "partition", "targets": ["node3"], "layer": "app"}]"#,
    );
    // Client i enters at node i+1; every node replicates every key (N = 3 of
    // 3); R = W = 1, so node3 answers from its own replica while the others
    // cannot reach it. Three clients over 100 keys keep writes per key
    // sparse enough that for most keys no write is in flight when the
    // partition starts, yet dense enough that node3's reader meets writes
    // made elsewhere however slowly a loaded machine runs them.
    let run = drive(
        &cluster.procs,
        out.path(),
        &[
            "--plan",
            &plan,
            "--duration",
            "10",
            "--R",
            "1",
            "--W",
            "1",
            "--routing",
            "fixed",
            "--concurrency",
            "3",
            "--keyspace",
            "100",
        ],
    );
    run.assert_clean();
    let event = &run.faults["events"][0];
    let (apply_started, applied, heal_started) = (
        event["apply_started_us"].as_i64().unwrap(),
        event["applied_us"].as_i64().unwrap(),
        event["heal_started_us"].as_i64().unwrap(),
    );
    // A write made elsewhere reaches node3 unless the partition stops it.
    // One that was under way while the partition began, give or take the
    // margin (a busy machine may still be replicating a write after
    // acknowledging it), may have either outcome, however long it took.
    // A read that ended before the heal began was served by the cut-off
    // node3 alone.
    let margin = 500_000;
    let elsewhere: Vec<&Row> = measured(&run.rows).filter(|r| r.op == "update" && r.ok && r.node != "node3").collect();
    let mut checked = 0;
    for read in measured(&run.rows).filter(|r| {
        r.op == "read" && r.ok && r.node == "node3" && r.t_start_us > applied + margin && r.t_end_us < heal_started
    }) {
        let writes: Vec<&&Row> = elsewhere.iter().filter(|w| w.key == read.key).collect();
        if writes.iter().any(|w| w.t_start_us < applied + margin && w.t_end_us > apply_started - margin) {
            continue; // a write in flight as the partition began: either outcome is right
        }
        let missed: Vec<&&&Row> =
            writes.iter().filter(|w| w.t_end_us > applied && w.t_end_us < read.t_start_us).collect();
        assert_eq!(read.stale, Some(!missed.is_empty()), "{read:?}");
        assert_eq!(read.stale_versions, Some(missed.len() as u32), "{read:?} missed {missed:?}");
        if let Some(oldest) = missed.iter().map(|w| w.t_end_us).min() {
            let expected_ms = (read.t_start_us - oldest) as f64 / 1000.0;
            assert!((read.stale_ms.unwrap() - expected_ms).abs() < 0.002, "{read:?}: expected {expected_ms} ms");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} stale reads to check");
    assert!(run.summary["staleness"]["stale_reads"].as_u64().unwrap() >= checked);
}

#[test]
fn the_checker_reports_acknowledged_writes_wiped_from_every_replica() {
    // Memory storage: a crash wipes a node's data. Crashing all three
    // replicas at once loses every write acknowledged before.
    let cluster = TestCluster::up(62, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let plan = plan_file(
        out.path(),
        r#"[{"at_s": 2, "duration_s": 1, "kind": "crash", "targets": ["node1", "node2", "node3"]}]"#,
    );
    let run = drive(
        &cluster.procs,
        out.path(),
        &["--plan", &plan, "--duration", "5", "--update_mode", "blind", "--concurrency", "4"],
    );
    assert!(!run.output.status.success(), "a lost write fails the run");
    let lost = run.summary["lost_writes"]["lost"].as_u64().unwrap();
    assert!(lost >= 1000, "at least the preload's 1000 writes are gone: {lost}");
    assert!(run.stderr().contains("acknowledged writes were lost"), "{}", run.stderr());
    assert!(run.stdout().contains(&format!("[CHECKER], LostWrites, {lost}")), "{}", run.stdout());
}

#[test]
fn bad_input_is_one_line_before_anything_starts() {
    let cluster = TestCluster::up(63, 3, "memory", &[]);
    let dir = tempfile::tempdir().unwrap();
    let malformed = dir.path().join("bad.json");
    std::fs::write(&malformed, "{not json").unwrap();
    let procs = cluster.procs.to_string_lossy().into_owned();
    for (args, reason) in [
        (vec!["--cluster_procs", "/nonexistent/cluster_procs.json"], "no cluster described by"),
        (vec!["--cluster_procs", &malformed.to_string_lossy()], "is not a cluster file"),
        (vec!["--cluster_procs", &procs, "--failure_mode", "explode"], "invalid value 'explode' for '--failure_mode"),
        (vec!["--cluster_procs", &procs, "--N", "5"], "does not match the cluster's N = 3"),
        (
            vec!["--cluster_procs", &procs, "--failure_mode", "crash", "--duration", "15"],
            "is longer than --duration 15 s",
        ),
        (vec!["--cluster_procs", &procs, "--R", "4"], "--R 4 must be between 1 and --N 3"),
    ] {
        let out = dir.path().join("out");
        let output = std::process::Command::new(common::BIN)
            .arg("experiment")
            .args(&args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must fail");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: ") && first.contains(reason), "{args:?}: {stderr}");
        if !reason.starts_with("invalid value") {
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        }
        assert!(!out.exists(), "{args:?}: nothing written before the checks");
    }
}

#[test]
fn coordinator_routing_enters_at_the_coordinator_and_rmw_reads_before_each_update() {
    let cluster = TestCluster::up(65, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let run = drive(&cluster.procs, out.path(), &["--routing", "coordinator", "--duration", "3", "--N", "3"]);
    run.assert_clean();
    let served: Vec<&Row> = measured(&run.rows).filter(|r| r.ok).collect();
    assert!(
        !served.is_empty() && served.iter().all(|r| r.node == r.entry),
        "the entry node coordinates every request itself"
    );

    let run = drive(&cluster.procs, out.path(), &["--update_mode", "rmw", "--duration", "3", "--concurrency", "4"]);
    run.assert_clean();
    let mut by_client: HashMap<u32, Vec<&Row>> = HashMap::new();
    for row in measured(&run.rows) {
        by_client.entry(row.client).or_default().push(row);
    }
    let mut updates = 0;
    for rows in by_client.values_mut() {
        rows.sort_by_key(|r| r.t_start_us);
        for pair in rows.windows(2).filter(|p| p[1].op == "update") {
            assert_eq!(
                (pair[0].op.as_str(), &pair[0].key),
                ("update_read", &pair[1].key),
                "an update follows its read"
            );
            updates += 1;
        }
    }
    // Every update of the run was checked, however many the machine managed.
    let sent = measured(&run.rows).filter(|r| r.op == "update").count();
    assert!(updates > 0 && updates == sent, "{updates} of {sent} updates checked");
}

#[test]
fn ctrl_c_heals_the_fault_and_keeps_what_was_recorded() {
    let cluster = TestCluster::up(64, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let driver = std::process::Command::new(common::BIN)
        .args(["experiment", "--cluster_procs"])
        .arg(&cluster.procs)
        .args(["--failure_mode", "slow", "--fault_layer", "app", "--warmup", "1", "--failure_duration", "20"])
        .args(["--duration", "30", "--out"])
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let slowed = |cluster: &TestCluster| {
        runtime.block_on(async {
            let mut slowed = Vec::new();
            for id in cluster.ids() {
                let mut client = cluster.client(&id);
                let answer = client.send(hyper::Method::GET, "/admin/fault", None, Default::default()).await;
                if answer.unwrap().json().unwrap()["slow_ms"] != 0 {
                    slowed.push(id);
                }
            }
            slowed
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while slowed(&cluster).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the fault was never applied");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(driver.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    // How long the driver then takes to heal, check and write depends on
    // the machine; only a hang takes two minutes.
    let (exited, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(driver.wait_with_output()));
    let Ok(output) = output.recv_timeout(std::time::Duration::from_secs(120)) else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("the driver did not exit within 120 s of Ctrl-C");
    };
    let output = output.unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("interrupted"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(slowed(&cluster).is_empty(), "the fault is healed");
    let journal = dynabed::faults::journal::in_force("t64").unwrap();
    assert!(journal.is_empty(), "nothing left in the heal journal");
    let summaries: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("summary_"))
        .collect();
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summaries[0]).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true, "the summary says the run was cut short");
    // The clients stop soon after Ctrl-C, which came a second or two into
    // the run: within the first half of its 30 s, in the run's own clock,
    // is far from running on, however busy the machine.
    let ran = summary["duration_s"].as_f64().unwrap();
    assert!(ran < 15.0, "the clients stopped soon after Ctrl-C, and the summary covers only what ran: {ran} s");
    let run = drive(&cluster.procs, out.path(), &["--duration", "1"]);
    run.assert_clean();
    let csvs = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("workload_"));
    assert_eq!(csvs.count(), 2, "the interrupted run's CSV is kept beside the next run's");
}

#[test]
fn on_anti_entropy_alone_the_workload_stops_at_the_heal_and_repair_rounds_heal_what_the_partition_left() {
    // Hints and read repair are off, and the workload stops when the heal
    // starts (--recovery auto), so no client write after the partition can
    // bring node3's replicas up to date: only the counted repair rounds can.
    let cluster = TestCluster::up(67, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let plan = plan_file(
        out.path(),
        r#"[{"at_s": 1, "duration_s": 3, "kind": "partition", "targets": ["node3"], "layer": "app"}]"#,
    );
    let flags = ["--plan", &plan, "--duration", "6", "--hint_delivery", "off", "--read_repair", "off", "--post_repair"];
    let run = drive(&cluster.procs, out.path(), &flags);
    run.assert_clean();
    assert!(run.stderr().contains("the workload stops at the heal, 4.0 s in"), "{}", run.stderr());
    assert_eq!(run.manifest["settings"]["recovery"], false);
    let heal_us = run.faults["events"][0]["heal_started_us"].as_i64().unwrap();
    let workload: Vec<&Row> = measured(&run.rows).collect();
    assert!(workload.len() > 100 && workload.iter().all(|r| r.phase != "recovery"), "no recovery phase");
    let late: Vec<_> = workload.iter().filter(|r| r.t_start_us >= heal_us).collect();
    assert!(late.is_empty(), "requests that started after the heal began ({heal_us} µs): {late:?}");
    assert!(run.summary["repair"]["hints_pending"].as_u64().unwrap() > 0, "hints were held back");
    let rounds = run.repair_results.as_ref().unwrap().as_object().unwrap();
    assert_eq!(rounds.len(), 1000);
    assert!(rounds.values().all(|r| r.is_u64()), "every key converges within 10 rounds");
    // N = 3 on 3 nodes: every key has a replica on node3, so every key
    // written while node3 was cut off was left diverged, for the rounds.
    let diverged: HashSet<&str> =
        workload.iter().filter(|r| r.op == "update" && r.ok && r.phase == "failure").map(|r| r.key.as_str()).collect();
    assert!(!diverged.is_empty(), "writes were acknowledged during the partition");
    let unrepaired: Vec<_> = diverged.iter().filter(|k| rounds[**k].as_u64() == Some(0)).collect();
    assert!(unrepaired.is_empty(), "keys written during the partition needing no round: {unrepaired:?}");
    assert!(run.stdout().contains("[REPAIR], KeysConvergedInRounds=1"), "{}", run.stdout());
}

#[test]
fn a_node_a_plan_leaves_down_is_not_a_leftover_and_an_open_loop_that_falls_behind_stops_on_time() {
    let cluster = TestCluster::up(68, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let plan = plan_file(
        out.path(),
        r#"[{"at_s": 1, "duration_s": 1, "kind": "crash", "targets": ["node3"], "params": {"no_restart": true}}]"#,
    );
    let run = drive(&cluster.procs, out.path(), &["--plan", &plan, "--duration", "3"]);
    run.assert_clean();
    // Restarting spawns the node and returns; the next run needs it serving
    // and seen alive by everyone, which takes longer on a busy machine.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        cluster.restart("node3").await;
        for id in cluster.ids() {
            cluster.wait_all_alive(&id).await;
        }
    });

    // Far more than two clients can send: the loop ends at --duration anyway,
    // and the throughput it reports is what was sent, not the target.
    let run = drive(&cluster.procs, out.path(), &["--target_rate", "1000000", "--duration", "2", "--concurrency", "2"]);
    run.assert_clean();
    // A client starts an operation only before the end, so only its last
    // one may end after it, however slow the machine: a loop that went on
    // through its overdue slots would end many. (An update's read is part
    // of its operation: the PUT after it ends later still.)
    let mut late: HashMap<u32, usize> = HashMap::new();
    for row in measured(&run.rows).filter(|r| r.t_end_us >= 2_000_000 && r.op != "update_read") {
        *late.entry(row.client).or_default() += 1;
    }
    assert!(late.values().all(|&n| n <= 1), "requests ending after the run's 2 s, per client: {late:?}");
    let throughput = run.summary["throughput_ops_s"].as_f64().unwrap();
    assert!(throughput < 100_000.0, "throughput is what was sent: {throughput}");
    assert_eq!(throughput, run.summary["requests"].as_f64().unwrap() / 2.0);
}

/// Each client's measured rows in the order it made them (a client waits
/// for each answer, so by their ends: an open loop that fell behind starts
/// a request at a slot earlier than the last request's send).
fn by_client(rows: &[Row]) -> HashMap<u32, Vec<&Row>> {
    let mut clients: HashMap<u32, Vec<&Row>> = HashMap::new();
    for row in measured(rows) {
        clients.entry(row.client).or_default().push(row);
    }
    clients.values_mut().for_each(|rows| rows.sort_by_key(|r| r.t_end_us));
    clients
}

/// Each update with the read made for it (the client's row before it).
fn updates_with_their_reads(rows: &[Row]) -> Vec<(&Row, &Row)> {
    let mut pairs = Vec::new();
    for rows in by_client(rows).into_values() {
        for pair in rows.windows(2).filter(|p| p[1].op == "update") {
            assert_eq!(
                (pair[0].op.as_str(), &pair[0].key),
                ("update_read", &pair[1].key),
                "an update follows its read"
            );
            pairs.push((pair[0], pair[1]));
        }
    }
    pairs
}

/// Acknowledged writes, and those whose answer said the key held siblings
/// after them, as the CSV has them; and the same pair from the summary.
fn conflicts(run: &common::experiment::Run) -> ((u64, u64), (u64, u64)) {
    let acked: Vec<&Row> = measured(&run.rows).filter(|r| r.op == "update" && r.ok).collect();
    assert!(acked.iter().all(|r| r.siblings_after_write.is_some_and(|n| n >= 1)), "every acknowledged write says");
    assert!(measured(&run.rows).filter(|r| r.op != "update").all(|r| r.siblings_after_write.is_none()));
    let csv = (acked.len() as u64, acked.iter().filter(|r| r.siblings_after_write > Some(1)).count() as u64);
    let overall = &run.summary["write_conflicts"]["overall"];
    let summary = (overall["acknowledged_writes"].as_u64().unwrap(), overall["writes_with_siblings"].as_u64().unwrap());
    (csv, summary)
}

#[test]
fn read_modify_write_keeps_conflicts_rare_and_its_reads_apart_from_the_workloads() {
    let cluster = TestCluster::up(140, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    // The control run of the matrix (A, uniform, 1000 keys, 10 clients, no
    // fault, default flags), repeated until it has made enough writes for
    // a rate. A write conflicts only when another client's write to the
    // same key lands between its read and its write: with 10 clients on
    // 1000 keys that is a few in a thousand (the old `context` default made
    // most writes conflict). Slowness stretches every request alike, so the
    // odds do not depend on the machine's speed.
    let (mut acked, mut with_siblings) = (0, 0);
    for seed in 1.. {
        if acked >= 2000 {
            break;
        }
        assert!(seed <= 10, "only {acked} acknowledged writes in {} runs", seed - 1);
        let seed = seed.to_string();
        let run = drive(&cluster.procs, out.path(), &["--duration", "4", "--seed", &seed]);
        run.assert_clean();
        assert_eq!(run.manifest["settings"]["update_mode"], "rmw", "rmw is the default");
        let (csv, summary) = conflicts(&run);
        assert_eq!(csv, summary, "the summary counts what the CSV holds");
        (acked, with_siblings) = (acked + csv.0, with_siblings + csv.1);

        // Update reads are requests of their own, outside the READ figures.
        let count = |op: &str| measured(&run.rows).filter(|r| r.op == op).count() as u64;
        let ops = &run.summary["operations"];
        assert_eq!(ops["read"]["count"].as_u64(), Some(count("read")));
        assert_eq!(ops["update"]["count"].as_u64(), Some(count("update")));
        assert_eq!(ops["update_read"]["count"].as_u64(), Some(count("update_read")));
        assert!(count("update_read") > 0 && updates_with_their_reads(&run.rows).len() as u64 == count("update"));
        let judged = |r: &&Row| r.op == "update_read" && r.ok;
        assert!(measured(&run.rows).filter(judged).all(|r| r.stale.is_some()), "an update's read is judged as a read");
        assert!(run.stdout().contains("[UPDATE_READ], Operations,"), "{}", run.stdout());
        assert!(run.stdout().contains("[WRITES], ConflictRate,"), "{}", run.stdout());
    }
    let rate = with_siblings as f64 / acked as f64;
    assert!(rate < 0.01, "{with_siblings} of {acked} writes left siblings ({:.2} %)", rate * 100.0);

    // An open loop: the update's read counts from the slot, its PUT from
    // when the PUT was sent, after the read's answer.
    let run = drive(&cluster.procs, out.path(), &["--target_rate", "200", "--duration", "2", "--concurrency", "2"]);
    run.assert_clean();
    let pairs = updates_with_their_reads(&run.rows);
    assert!(!pairs.is_empty());
    for (read, update) in pairs {
        assert!((read.t_start_us + 1) % 5000 <= 2, "the update's read starts at its slot: {read:?}");
        assert!(update.t_start_us >= read.t_end_us, "the PUT is measured from its send: {read:?} {update:?}");
        assert_eq!(update.latency_us, update.t_end_us - update.t_start_us);
    }
}

#[test]
fn two_clients_on_one_key_conflict_only_when_their_writes_overlap() {
    let cluster = TestCluster::up(141, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let run = drive(&cluster.procs, out.path(), &["--keyspace", "1", "--concurrency", "2", "--duration", "3"]);
    run.assert_clean();
    assert!(measured(&run.rows).all(|r| r.ok), "a healthy cluster answers everything");
    let (csv, summary) = conflicts(&run);
    assert_eq!(csv, summary);
    // Two clients reading and writing one key back to back race all the
    // time: some writes must find the other's write in the key.
    assert!(csv.1 > 0, "no conflict in {} writes", csv.0);
    // With R + W > N (N = 3 on 3 nodes: no sloppy quorum), a read sees
    // every write acknowledged before it began, and an update writes with
    // its read's context: each version besides its own that the key holds
    // after it is a write of the other client sent before it ended and not
    // acknowledged before its read began.
    let updates: Vec<&Row> = measured(&run.rows).filter(|r| r.op == "update").collect();
    for (read, write) in updates_with_their_reads(&run.rows) {
        let concurrent = updates
            .iter()
            .filter(|other| {
                other.client != write.client && other.t_start_us < write.t_end_us && other.t_end_us > read.t_start_us
            })
            .count() as u32;
        let others = write.siblings_after_write.unwrap() - 1;
        assert!(others <= concurrent, "{write:?} left {others} other versions, {concurrent} concurrent writes");
    }
}

#[test]
fn phases_follow_the_faults_record_and_stalls_and_the_onset_match_the_csv() {
    let cluster = TestCluster::up(142, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    // The pause outlasts its own apply and verify by more than the 1 s
    // timeout even on a loaded machine, so node3's requests in force fail.
    let plan = plan_file(out.path(), r#"[{"at_s": 1, "duration_s": 4, "kind": "pause", "targets": ["node3"]}]"#);
    let run = drive(
        &cluster.procs,
        out.path(),
        &["--plan", &plan, "--duration", "6", "--concurrency", "4", "--op_timeout_ms", "1000"],
    );
    run.assert_clean();
    let event = &run.faults["events"][0];
    let time = |name: &str| event[name].as_i64().unwrap_or_else(|| panic!("{name} in {event}"));
    let (apply, applied, heal, healed) =
        (time("apply_started_us"), time("applied_us"), time("heal_started_us"), time("healed_us"));
    assert!(apply <= applied && applied <= heal && heal <= healed, "{event}");

    // Each row's phase is the one in force when it started, on the faults
    // file's own clock (a µs of rounding either way at the edges).
    for row in measured(&run.rows) {
        let (from, to) = match row.phase.as_str() {
            "warmup" => (0, apply),
            "fault_apply" => (apply, applied),
            "failure" => (applied, heal),
            "fault_heal" => (heal, healed),
            "recovery" => (healed, i64::MAX),
            other => panic!("unknown phase {other}"),
        };
        assert!((from..=to).contains(&row.t_start_us), "{row:?} outside {from}..{to}");
    }
    assert!(measured(&run.rows).any(|r| r.phase == "failure"));

    // Stalls, recomputed from the CSV: the longest time without a
    // successful request ending, within the run and within apply..heal.
    let mut ends: Vec<i64> = measured(&run.rows).filter(|r| r.ok).map(|r| r.t_end_us).collect();
    ends.sort_unstable();
    let longest = |from: i64, to: i64| {
        let inside = ends.iter().copied().filter(|e| (from..=to).contains(e));
        let bounds: Vec<i64> = std::iter::once(from).chain(inside).chain(std::iter::once(to)).collect();
        let gap = bounds
            .windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .fold((0, from), |best, g| if g.0 > best.0 { g } else { best });
        serde_json::json!({"longest_us": gap.0, "started_us": gap.1})
    };
    let stalls = &run.summary["stalls"];
    assert_eq!(stalls["overall"], longest(0, 6_000_000));
    assert_eq!(stalls["failure"], longest(apply, heal));
    assert!(stalls["failure"]["longest_us"].as_i64().unwrap() > 0);

    // The effect's onset: the first request through node3 that started
    // after the apply began and failed, or outlasted the warmup's p99.9.
    let mut warmup: Vec<i64> =
        measured(&run.rows).filter(|r| r.phase == "warmup" && r.ok).map(|r| r.t_end_us - r.t_start_us).collect();
    warmup.sort_unstable();
    let slow = warmup[((0.999 * warmup.len() as f64).ceil() as usize).clamp(1, warmup.len()) - 1];
    let onset = measured(&run.rows)
        .filter(|r| (apply..heal).contains(&r.t_start_us) && (r.entry == "node3" || r.node == "node3"))
        .filter(|r| !r.ok || r.t_end_us - r.t_start_us > slow)
        .map(|r| r.t_start_us)
        .min();
    assert!(onset.is_some(), "a paused node's requests time out");
    assert_eq!(event["effect_onset_us"].as_i64(), onset);

    // Availability per entry node: node3's requests during the pause are
    // the ones that failed.
    let by_entry = &run.summary["availability"]["by_entry"];
    let in_failure = |node: &str| measured(&run.rows).filter(|r| r.phase == "failure" && r.entry == node).count();
    assert_eq!(by_entry["node3"]["failure_requests"].as_u64(), Some(in_failure("node3") as u64));
    assert!(by_entry["node3"]["failure"].as_f64().unwrap() < 1.0, "{by_entry}");
    assert!(run.stdout().contains("[AVAILABILITY], WorstEntryDuringFailure(node3)"), "{}", run.stdout());
}

/// The divergence samples of a run, as (t_us, divergent partitions, divergent keys).
fn divergence(run: &common::experiment::Run) -> Vec<(i64, u64, Option<u64>)> {
    let path = run.summary["files"]["divergence"].as_str().expect("the divergence file is listed");
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        ["t_us", "divergent_partitions", "divergent_keys", "hints_pending", "read_repairs", "ae_repairs"]
    );
    reader
        .deserialize::<(i64, u64, Option<u64>, u64, u64, u64)>()
        .map(|r| r.unwrap())
        .map(|r| (r.0, r.1, r.2))
        .collect()
}

#[test]
fn a_partitioned_node_shows_as_divergence_until_repair_and_without_hints_or_read_repair_the_rounds_heal_it() {
    let cluster = TestCluster::up(96, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let partition = ["--failure_mode", "partition", "--fault_layer", "app", "--warmup", "1", "--failure_duration", "3"];
    let common = ["--duration", "6", "--concurrency", "4", "--post_repair"];

    let run = drive(&cluster.procs, out.path(), &[&partition[..], &common[..]].concat());
    run.assert_clean();
    let (_, applied, heal_started) = run.fault_window();
    let samples = divergence(&run);
    let in_fault: Vec<_> = samples.iter().filter(|s| (applied..heal_started).contains(&s.0)).collect();
    assert!(in_fault.iter().any(|s| s.1 > 0), "the partition left replicas apart while in force: {samples:?}");
    assert!(in_fault.iter().any(|s| s.2 > Some(0)), "and the differing leaves were counted: {samples:?}");
    assert_eq!(samples.last().map(|s| (s.1, s.2)), Some((0, Some(0))), "converged at the end: {samples:?}");
    let summary = &run.summary["divergence"];
    assert!(summary["peak_partitions"].as_u64() > Some(0), "{summary}");
    assert!(run.stdout().contains("[DIVERGENCE], Partitions(peak/atHeal/atEnd)/HealToZero(ms), "), "{}", run.stdout());
    assert_eq!(run.manifest["settings"]["read_repair"], true);

    // The partition lasts to the end of the workload: every update after a
    // heal reads the key and rewrites it on all replicas, so recovery
    // traffic would leave the rounds more or less to do depending on how
    // fast this machine is.
    let off = ["--hint_delivery", "off", "--read_repair", "off"];
    let to_the_end =
        ["--failure_mode", "partition", "--fault_layer", "app", "--warmup", "1", "--failure_duration", "5"];
    let run = drive(&cluster.procs, out.path(), &[&to_the_end[..], &common[..], &off[..]].concat());
    run.assert_clean();
    assert_eq!(
        (&run.manifest["settings"]["read_repair"], &run.manifest["read_repair_during_run"]),
        (&false.into(), &false.into())
    );
    let rounds = run.repair_results.as_ref().unwrap().as_object().unwrap();
    assert!(rounds.values().all(|r| r.is_u64()), "every key converged within --max_repair_rounds");
    assert!(rounds.values().any(|r| r.as_u64() >= Some(1)), "anti-entropy alone had divergence to repair");
    let samples = divergence(&run);
    assert_eq!(samples.last().map(|s| s.1), Some(0), "converged at the end: {samples:?}");

    // The report plots the samples and tabulates the peak.
    let report = std::process::Command::new(common::BIN).arg("report").arg(out.path()).output().unwrap();
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let plots: Vec<std::path::PathBuf> = std::fs::read_dir(out.path().join("plots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("divergence.png").exists() && p.join("hints.png").exists())
        .collect();
    assert_eq!(plots.len(), 1, "one run's divergence and hints plots");
    let plotted = std::fs::read_to_string(plots[0].join("divergence.csv")).unwrap();
    assert_eq!(plotted.lines().count(), samples.len() + 1, "every sample plotted: {plotted}");
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(markdown.contains("| peak divergent partitions | heal to no divergence ms |"), "{markdown}");
}
