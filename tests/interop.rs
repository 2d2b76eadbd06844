//! What other tools read from a run (loopback, no privileges): YCSB's
//! summary lines, HdrHistogram interval logs, and the Jepsen-model history
//! that `dynabed check` judges without the cluster.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::experiment::{drive, Row};
use common::{TestCluster, BIN};
use dynabed::api::run::{Event, EventType, Function, Value};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

/// The newest `<kind>_<stamp>.<ext>` in `dir`.
fn file(dir: &Path, kind: &str, ext: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // The stamp starts with a digit: `latency_update_read_…` is not `latency_update`'s.
            let stamp = name.strip_prefix(&format!("{kind}_")).unwrap_or_default();
            stamp.starts_with(|c: char| c.is_ascii_digit()) && name.ends_with(&format!(".{ext}"))
        })
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("no {kind}_*.{ext} in {}", dir.display()))
}

fn measured_ok<'a>(rows: &'a [Row], op: &'a str) -> impl Iterator<Item = &'a Row> + 'a {
    rows.iter().filter(move |r| r.ok && r.phase != "load" && r.op == op)
}

/// Every `[SECTION], Name, number` line of YCSB's text exporter.
fn ycsb_lines(stdout: &str) -> HashMap<(String, String), f64> {
    let line = regex::Regex::new(r"(?m)^\[([A-Z_]+)\], ([^,\n]+), (-?[0-9]+(?:\.[0-9]+)?)$").unwrap();
    line.captures_iter(stdout).map(|c| ((c[1].to_owned(), c[2].to_owned()), c[3].parse().unwrap())).collect()
}

fn check(history: &Path) -> Output {
    Command::new(BIN).arg("check").arg(history).output().expect("running dynabed check")
}

fn events(history: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(history).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The figure after `label` in `dynabed check`'s output, e.g. "lost writes: 3".
fn figure(text: &str, label: &str) -> u64 {
    let at = text.find(label).unwrap_or_else(|| panic!("no {label:?} in\n{text}")) + label.len();
    text[at..].split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_run_speaks_ycsb_and_hdrhistogram_and_its_history_checks_as_the_run_did() {
    let cluster = TestCluster::up(170, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let run = drive(&cluster.procs, out.path(), &["--failure_mode", "none", "--duration", "4", "--concurrency", "4"]);
    run.assert_clean();
    let stdout = run.stdout();

    // YCSB's names and units, read as a YCSB parser would.
    let ycsb = ycsb_lines(&stdout);
    let value = |section: &str, name: &str| -> f64 {
        *ycsb
            .get(&(section.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no [{section}], {name} in\n{stdout}"))
    };
    let duration_ms = run.summary["duration_s"].as_f64().unwrap() * 1000.0;
    assert_eq!(value("OVERALL", "RunTime(ms)"), duration_ms.round(), "RunTime in ms");
    value("OVERALL", "Throughput(ops/sec)");
    for (section, op) in [("READ", "read"), ("UPDATE", "update")] {
        let rows: Vec<&Row> = measured_ok(&run.rows, op).collect();
        let ok = rows.len() as f64;
        assert_eq!(value(section, "Operations"), ok, "YCSB counts the requests its histogram holds");
        assert_eq!(value(section, "Return=OK"), ok);
        let mean_us = rows.iter().map(|r| r.latency_us as f64).sum::<f64>() / ok;
        let average = value(section, "AverageLatency(us)");
        // HdrHistogram keeps three significant digits: within 0.1 %.
        assert!((average - mean_us).abs() <= mean_us * 0.002 + 1.0, "{section} average {average} µs, CSV {mean_us} µs");
        let min = rows.iter().map(|r| r.latency_us).min().unwrap() as f64;
        assert!((value(section, "MinLatency(us)") - min).abs() <= min * 0.002 + 1.0, "{section} min, CSV {min}");
        let percentiles = ["MinLatency(us)", "50thPercentileLatency(us)", "95thPercentileLatency(us)"]
            .into_iter()
            .chain(["99thPercentileLatency(us)", "99.9PercentileLatency(us)", "MaxLatency(us)"])
            .map(|name| value(section, name))
            .collect::<Vec<_>>();
        assert!(percentiles.windows(2).all(|w| w[0] <= w[1]), "{section}: {percentiles:?}");
    }
    assert!(stdout.contains("[CHECKER], LostWrites, 0\n"), "this test bed's sections follow, in the same form");

    // One interval log per operation; read back with HdrHistogram's own
    // reader, its intervals hold exactly the CSV's requests of each second.
    for op in ["read", "update", "update_read"] {
        let log = std::fs::read(file(out.path(), &format!("latency_{op}"), "hlog")).unwrap();
        let text = String::from_utf8_lossy(&log);
        assert!(
            text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")
        );
        assert!(text.contains("#[BaseTime: "), "{text}");
        let mut by_second: BTreeMap<u64, u64> = BTreeMap::new();
        for entry in IntervalLogIterator::new(&log) {
            let LogEntry::Interval(interval) = entry.expect("a well-formed log") else { continue };
            let bytes = base64_decode(interval.encoded_histogram());
            let histogram: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice()).unwrap();
            // Three decimals in the file: 2.000 may read back as 1.999999999.
            let second = interval.start_timestamp().as_secs_f64().round() as u64;
            *by_second.entry(second).or_default() += histogram.len();
        }
        let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
        for row in measured_ok(&run.rows, op) {
            *expected.entry(row.t_end_us as u64 / 1_000_000).or_default() += 1;
        }
        assert_eq!(by_second, expected, "{op}: requests per second in the log and in the CSV");
    }

    // The history: Jepsen's model, in time order, one operation per CSV row
    // plus one final read per key written.
    let history = file(out.path(), "history", "jsonl");
    let events = events(&history);
    let mut open: HashMap<u64, &Event> = HashMap::new();
    let mut written: HashSet<&str> = HashSet::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.index, i as u64);
        assert!(i == 0 || events[i - 1].time <= event.time, "time order at {i}");
        if event.kind == EventType::Invoke {
            assert!(open.insert(event.process, event).is_none(), "process {} invokes twice", event.process);
            if let Some(Value::Written(id)) = &event.value {
                assert!(written.insert(id), "value id {id} written twice");
            }
            continue;
        }
        let invoke = open.remove(&event.process).expect("a completion after its invoke");
        assert_eq!((invoke.f, &invoke.key, invoke.client), (event.f, &event.key, event.client));
        if let (EventType::Ok, Some(Value::Read(ids))) = (event.kind, &event.value) {
            assert!(
                ids.iter().all(|id| written.contains(id.as_str())),
                "a read returns only values written before it: {ids:?}"
            );
        }
        if event.kind == EventType::Ok && event.f == Function::Write {
            assert!(event.dot.is_some() && event.clock.is_some(), "an acknowledged write has its dot and clock");
        }
    }
    assert!(open.is_empty(), "every operation completed");
    let invokes = |f: Function| events.iter().filter(|e| e.kind == EventType::Invoke && e.f == f).count();
    assert_eq!(invokes(Function::Read) + invokes(Function::Write), run.rows.len(), "one operation per CSV row");
    let keys_written: HashSet<&str> =
        run.rows.iter().filter(|r| r.op == "update" && r.ok).map(|r| r.key.as_str()).collect();
    assert_eq!(invokes(Function::FinalRead), keys_written.len(), "a final read per key written");

    // dynabed check, from the file alone, finds what the run found.
    let checked = check(&history);
    let report = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert_eq!(checked.status.code(), Some(0), "{report}{}", String::from_utf8_lossy(&checked.stderr));
    let summary = &run.summary;
    assert_eq!(figure(&report, "lost writes:"), summary["lost_writes"]["lost"].as_u64().unwrap());
    assert_eq!(figure(&report, "of"), summary["lost_writes"]["acknowledged"].as_u64().unwrap(), "{report}");
    let stale = figure(&report, "not a violation):");
    assert_eq!(stale, summary["staleness"]["stale_reads"].as_u64().unwrap(), "{report}");
    let judged = figure(&report, &format!("not a violation): {stale} of"));
    assert_eq!(judged, summary["staleness"]["reads_judged"].as_u64().unwrap(), "{report}");

    // A store that dropped a key's writes: its final read, edited to hold
    // nothing, makes every acknowledged write to it lost — a violation.
    let victim = events.iter().rev().find(|e| e.f == Function::FinalRead && e.kind == EventType::Ok).unwrap();
    let acked_to_victim =
        events.iter().filter(|e| e.f == Function::Write && e.kind == EventType::Ok && e.key == victim.key).count();
    let edited: String = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(|line| {
            let mut event: Event = serde_json::from_str(line).unwrap();
            if event.index == victim.index {
                for replica in event.replicas.iter_mut().flatten() {
                    (replica.versions, replica.clock, replica.values) = (Vec::new(), String::new(), Vec::new());
                }
                event.value = Some(Value::Read(Vec::new()));
            }
            serde_json::to_string(&event).unwrap() + "\n"
        })
        .collect();
    let dropped = out.path().join("dropped.jsonl");
    std::fs::write(&dropped, edited).unwrap();
    let checked = check(&dropped);
    let report = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert_eq!(checked.status.code(), Some(3), "a lost write is a violation: {report}");
    assert_eq!(figure(&report, "lost writes:"), acked_to_victim as u64, "{report}");
    assert!(report.contains(&format!("{} ", victim.key)), "the lost write is named: {report}");

    // A history that cannot be read is an error, not a verdict.
    let broken = out.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"type\": \"ok\"\n").unwrap();
    let checked = check(&broken);
    assert_eq!(
        checked.status.code(),
        Some(1),
        "an unreadable history is an error: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stderr).contains("broken.jsonl line 1"));
}

#[test]
fn check_finds_the_writes_the_run_lost_when_every_replica_was_wiped() {
    // Memory storage: crashing all three replicas at once loses every write
    // acknowledged before (as in the experiment tests' checker test).
    let cluster = TestCluster::up(171, 3, "memory", &[]);
    let out = tempfile::tempdir().unwrap();
    let plan = common::experiment::plan_file(
        out.path(),
        r#"[{"at_s": 2, "duration_s": 1, "kind": "crash", "targets": ["node1", "node2", "node3"]}]"#,
    );
    let run = drive(&cluster.procs, out.path(), &["--plan", &plan, "--duration", "5", "--concurrency", "4"]);
    assert_eq!(run.output.status.code(), Some(3), "a lost write is a violation, not a tool error");
    let lost = run.summary["lost_writes"]["lost"].as_u64().unwrap();
    assert!(lost >= 1000, "at least the preload's writes are gone: {lost}");
    let checked = check(&file(out.path(), "history", "jsonl"));
    let report = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert_eq!(checked.status.code(), Some(3), "{report}");
    assert_eq!(figure(&report, "lost writes:"), lost, "{report}");
    assert_eq!(figure(&report, "of"), run.summary["lost_writes"]["acknowledged"].as_u64().unwrap(), "{report}");
    let stale = figure(&report, "not a violation):");
    assert_eq!(stale, run.summary["staleness"]["stale_reads"].as_u64().unwrap(), "{report}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}
