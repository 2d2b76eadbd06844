//! The run's summary: `summary_<stamp>.json`, and the same figures on
//! stdout in YCSB's `[SECTION], Metric, value` style so they read like the
//! numbers people already know.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::checker::Verdict;
use super::cpu::CpuReport;
use super::repair::Repair;
use super::tcp::TcpCounters;
use super::watch::Detection;
use crate::workload::sample::Phase;
use crate::workload::stats::{OpStats, Stats};

pub struct Inputs<'a> {
    pub stats: &'a Stats,
    /// Seconds measured: --duration, or less when interrupted.
    pub duration_s: f64,
    pub target_rate: Option<f64>,
    pub interrupted: bool,
    /// Reads whose clock header did not parse (a store bug if any).
    pub unreadable_clocks: u64,
    pub requests_sent: u64,
    pub rows_written: u64,
    pub cpu: &'a CpuReport,
    pub repair: &'a Repair,
    pub post_repair: bool,
    pub verdict: &'a Verdict,
    pub leftovers: &'a [String],
    /// Fault events that lapsed before their heal (see `Timeline::lapses`).
    pub lapses: &'a [String],
    pub detections: &'a [Detection],
    pub tcp: &'a BTreeMap<String, TcpCounters>,
    pub files: Value,
}

pub fn json(inputs: &Inputs) -> Value {
    let s = inputs.stats;
    let measured = s.measured();
    let fraction = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    let phase = |p: Phase| s.phases.get(&p).copied().unwrap_or_default();
    let failure = phase(Phase::Failure);
    let outside = [Phase::Warmup, Phase::Recovery].map(phase);
    let (outside_ok, outside_all) = (outside.iter().map(|t| t.ok).sum(), outside.iter().map(|t| t.requests).sum());
    json!({
        "duration_s": inputs.duration_s,
        "interrupted": inputs.interrupted,
        "target_rate": inputs.target_rate,
        "unreadable_clocks": inputs.unreadable_clocks,
        "requests": measured.requests,
        "throughput_ops_s": measured.requests as f64 / inputs.duration_s,
        "requests_sent": inputs.requests_sent,
        "rows_written": inputs.rows_written,
        "load": s.load,
        "operations": { "read": op_json(&s.reads), "update": op_json(&s.updates) },
        "errors": s.errors,
        "phases": s.phases.iter().map(|(p, t)| (p.as_str(), *t)).collect::<std::collections::BTreeMap<_, _>>(),
        "availability": {
            "failure": fraction(failure.ok, failure.requests),
            "outside_failure": fraction(outside_ok, outside_all),
            "overall": fraction(measured.ok, measured.requests),
        },
        "staleness": {
            "reads_judged": s.reads_judged,
            "stale_reads": s.stale_reads,
            "stale_rate": fraction(s.stale_reads, s.reads_judged),
            "stale_ms": quantiles(&s.stale_age, 1000.0),
        },
        "siblings": {
            "reads_with_siblings": s.reads_with_siblings,
            "rate": fraction(s.reads_with_siblings, s.reads.ok),
        },
        "vclock_entries": {
            "mean": (!s.vclock_entries.is_empty()).then(|| s.vclock_entries.mean()),
            "p99": s.vclock_entries.value_at_quantile(0.99),
            "max": s.vclock_entries.max(),
        },
        "cpu": inputs.cpu,
        "repair": {
            "reported": inputs.post_repair,
            "hints_pending": inputs.repair.hints_pending,
            "keys_by_rounds": inputs.repair.distribution().into_iter()
                .map(|(rounds, keys)| (rounds.map_or("never".to_owned(), |n| n.to_string()), keys))
                .collect::<std::collections::BTreeMap<_, _>>(),
            "rounds": inputs.repair.rounds,
        },
        "failure_detection": inputs.detections,
        "tcp": {
            "nodes": inputs.tcp,
            "active_opens": inputs.tcp.values().map(|t| t.active_opens).sum::<u64>(),
            "retransmitted_segments": inputs.tcp.values().map(|t| t.retransmitted_segments).sum::<u64>(),
        },
        "lost_writes": inputs.verdict,
        "leftovers": inputs.leftovers,
        "lapsed_faults": inputs.lapses,
        "files": inputs.files,
    })
}

fn op_json(op: &OpStats) -> Value {
    json!({ "count": op.count, "ok": op.ok, "latency_of": "successful requests", "latency_ms": quantiles(&op.latency, 1000.0) })
}

/// mean, p50, p95, p99, p99.9 and max of a µs histogram, in `unit` µs.
fn quantiles(h: &Histogram<u64>, unit: f64) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let at = |q: f64| h.value_at_quantile(q) as f64 / unit;
    json!({
        "mean": h.mean() / unit, "p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "p999": at(0.999),
        "max": h.max() as f64 / unit,
    })
}

/// The summary as text, YCSB style.
pub fn text(summary: &Value) -> String {
    let mut out = String::new();
    let mut line = |section: &str, metric: &str, value: &Value| {
        let value = match value {
            Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or_default()),
            Value::Null => "-".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = writeln!(out, "[{section}], {metric}, {value}");
    };
    line("OVERALL", "RunTime(s)", &summary["duration_s"]);
    line("OVERALL", "Operations", &summary["requests"]);
    line("OVERALL", "Throughput(ops/sec)", &summary["throughput_ops_s"]);
    for (op, name) in [("read", "READ"), ("update", "UPDATE")] {
        let o = &summary["operations"][op];
        line(name, "Operations", &o["count"]);
        line(name, "Ok", &o["ok"]);
        for (q, metric) in [
            ("mean", "AverageLatency(ms)"),
            ("p50", "50thPercentileLatency(ms)"),
            ("p95", "95thPercentileLatency(ms)"),
            ("p99", "99thPercentileLatency(ms)"),
            ("p999", "99.9PercentileLatency(ms)"),
            ("max", "MaxLatency(ms)"),
        ] {
            line(name, metric, &o["latency_ms"][q]);
        }
    }
    for (class, count) in summary["errors"].as_object().into_iter().flatten() {
        line("ERRORS", class, count);
    }
    let a = &summary["availability"];
    line("AVAILABILITY", "DuringFailure", &a["failure"]);
    line("AVAILABILITY", "OutsideFailure", &a["outside_failure"]);
    let st = &summary["staleness"];
    line("STALENESS", "StaleReads", &st["stale_reads"]);
    line("STALENESS", "StaleRate", &st["stale_rate"]);
    line("STALENESS", "StaleMs(p50)", &st["stale_ms"]["p50"]);
    line("STALENESS", "StaleMs(p99)", &st["stale_ms"]["p99"]);
    line("SIBLINGS", "ReadsWithSiblings", &summary["siblings"]["reads_with_siblings"]);
    line("SIBLINGS", "Rate", &summary["siblings"]["rate"]);
    line("VCLOCK", "MeanEntries", &summary["vclock_entries"]["mean"]);
    line("VCLOCK", "MaxEntries", &summary["vclock_entries"]["max"]);
    let cpu = &summary["cpu"];
    line("CPU", "Nodes(s)", &cpu["nodes_s"]);
    line("CPU", "Driver(s)", &cpu["driver_s"]);
    line("CPU", "DelayLine(s)", &cpu["delay_line_s"]);
    line("CPU", "MachineBusy", &cpu["machine_busy"]);
    if let Some(repair) = summary["repair"].as_object().filter(|r| r["reported"] == true) {
        line("REPAIR", "HintsPendingAtStart", &repair["hints_pending"]);
        for (rounds, keys) in repair["keys_by_rounds"].as_object().into_iter().flatten() {
            line("REPAIR", &format!("KeysConvergedInRounds={rounds}"), keys);
        }
    }
    for detection in summary["failure_detection"].as_array().into_iter().flatten() {
        let target = detection["target"].as_str().unwrap_or("?");
        line("DETECTOR", &format!("AllNoticed({target})(ms)"), &detection["all_noticed_ms"]);
        line("DETECTOR", &format!("AllAliveAfterHeal({target})(ms)"), &detection["all_alive_after_heal_ms"]);
    }
    if summary["tcp"]["nodes"].as_object().is_some_and(|n| !n.is_empty()) {
        line("TCP", "ConnectionsOpened", &summary["tcp"]["active_opens"]);
        line("TCP", "RetransmittedSegments", &summary["tcp"]["retransmitted_segments"]);
    }
    let lost = &summary["lost_writes"];
    line("CHECKER", "AcknowledgedWrites", &lost["acknowledged"]);
    line("CHECKER", "LostWrites", &lost["lost"]);
    line("CHECKER", "UnverifiedWrites", &lost["unverified"]);
    for lapse in summary["lapsed_faults"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "ERROR: {}", lapse.as_str().unwrap_or_default());
    }
    if summary["interrupted"] == true {
        out.push_str("WARNING: the run was interrupted; the figures cover only what ran\n");
    }
    if cpu["saturated"] == true {
        out.push_str(
            "WARNING: the machine was saturated (CPU > 90 %): latencies measure the machine as much as the system\n",
        );
    }
    out
}
