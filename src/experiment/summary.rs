//! The run's summary: `summary_<stamp>.json` (an [`api::run::Summary`]),
//! and the same figures on stdout in YCSB's `[SECTION], Metric, value`
//! style so they read like the numbers people already know.
//!
//! [`api::run::Summary`]: crate::api::run::Summary

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::repair::{Repair, RoundLog};
use crate::api::run::{
    Availability, ClockSize, CpuReport, Detection, DivergenceSummary, Files, LostWrites, OpSummary, Operations,
    Quantiles, RepairRound, RepairSummary, Siblings, Staleness, Summary, Tally, Tcp, TcpCounters,
};
use crate::api::run::{ClockGrowth, ClockSecond, ConflictRate, EntryAvailability, Stall, Stalls, WriteConflicts};
use crate::workload::history::{self, History};
use crate::workload::sample::Phase;
use crate::workload::stats::{self, Conflicts, OpStats, Stats};

/// The phases availability counts as outside the failure: with no fault
/// being applied, in force or healed.
const OUTSIDE_FAILURE: [Phase; 2] = [Phase::Warmup, Phase::Recovery];

pub struct Inputs<'a> {
    pub stats: &'a Stats,
    pub history: &'a History,
    /// The entry nodes' ids, by index.
    pub nodes: &'a [String],
    /// Each fault's window from the start of its apply to the start of its
    /// heal (µs since t0); the nominal window in a run without faults.
    pub fault_windows: Vec<(i64, i64)>,
    /// Clock entries the nodes pruned during the run.
    pub prune_events: Option<u64>,
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
    pub divergence: Option<DivergenceSummary>,
    pub verdict: &'a LostWrites,
    pub leftovers: &'a [String],
    /// Fault events that lapsed before their heal (see `PlanRunner::lapses`).
    pub lapses: &'a [String],
    pub detections: Vec<Detection>,
    pub tcp: &'a BTreeMap<String, TcpCounters>,
    pub files: Files,
}

pub fn build(inputs: Inputs) -> Summary {
    let s = inputs.stats;
    let measured = s.measured();
    let phase = |p: Phase| s.phases.get(&p).copied().unwrap_or_default();
    let failure = phase(Phase::Failure);
    let outside = OUTSIDE_FAILURE.map(phase);
    let (outside_ok, outside_all) = (outside.iter().map(|t| t.ok).sum(), outside.iter().map(|t| t.requests).sum());
    Summary {
        duration_s: inputs.duration_s,
        interrupted: inputs.interrupted,
        target_rate: inputs.target_rate,
        unreadable_clocks: inputs.unreadable_clocks,
        requests: measured.requests,
        throughput_ops_s: finite(measured.requests as f64 / inputs.duration_s),
        requests_sent: inputs.requests_sent,
        rows_written: inputs.rows_written,
        load: tally(s.load),
        operations: Operations {
            read: op_summary(&s.reads),
            update: op_summary(&s.updates),
            update_read: op_summary(&s.update_reads),
        },
        errors: s.errors.clone(),
        phases: s.phases.iter().map(|(p, t)| (p.as_str().to_owned(), tally(*t))).collect(),
        availability: Availability {
            failure: fraction(failure.ok, failure.requests),
            outside_failure: fraction(outside_ok, outside_all),
            overall: fraction(measured.ok, measured.requests),
            by_entry: by_entry(inputs.history, inputs.nodes),
        },
        stalls: stalls(inputs.history, inputs.duration_s, &inputs.fault_windows),
        staleness: Staleness {
            reads_judged: s.reads_judged,
            stale_reads: s.stale_reads,
            stale_rate: fraction(s.stale_reads, s.reads_judged),
            stale_ms: quantiles(&s.stale_age, 1000.0),
        },
        siblings: Siblings {
            reads_with_siblings: s.reads_with_siblings,
            rate: fraction(s.reads_with_siblings, s.reads.ok),
        },
        write_conflicts: WriteConflicts {
            overall: conflict_rate(s.all_conflicts()),
            by_phase: s.conflicts.iter().map(|(p, c)| (p.as_str().to_owned(), conflict_rate(*c))).collect(),
        },
        vclock_entries: ClockSize {
            mean: (!s.vclock_entries.is_empty()).then(|| s.vclock_entries.mean()),
            p99: s.vclock_entries.value_at_quantile(0.99),
            max: s.vclock_entries.max(),
        },
        clock_growth: ClockGrowth {
            per_second: inputs.history.clock_per_second().into_iter().map(clock_second).collect(),
            prune_events: inputs.prune_events,
        },
        cpu: inputs.cpu.clone(),
        repair: repair_summary(inputs.repair, inputs.post_repair),
        divergence: inputs.divergence,
        failure_detection: inputs.detections,
        tcp: Tcp::of(inputs.tcp.clone()),
        lost_writes: inputs.verdict.clone(),
        leftovers: inputs.leftovers.to_vec(),
        lapsed_faults: inputs.lapses.to_vec(),
        files: inputs.files,
    }
}

/// Availability per entry node, during the failure and outside it.
fn by_entry(history: &History, nodes: &[String]) -> BTreeMap<String, EntryAvailability> {
    let (failure, outside) = (history.by_entry(&[Phase::Failure]), history.by_entry(&OUTSIDE_FAILURE));
    let entries: std::collections::BTreeSet<u16> = failure.keys().chain(outside.keys()).copied().collect();
    entries
        .into_iter()
        .map(|entry| {
            let (f, o) =
                (failure.get(&entry).copied().unwrap_or_default(), outside.get(&entry).copied().unwrap_or_default());
            let name = nodes.get(entry as usize).cloned().unwrap_or_else(|| format!("#{entry}"));
            let availability = EntryAvailability {
                failure: fraction(f.ok, f.requests),
                failure_requests: f.requests,
                outside_failure: fraction(o.ok, o.requests),
                outside_failure_requests: o.requests,
            };
            (name, availability)
        })
        .collect()
}

/// The longest stall over the whole run, and the longest inside a fault window.
fn stalls(history: &History, duration_s: f64, windows: &[(i64, i64)]) -> Stalls {
    let stall = |s: history::Stall| Stall { longest_us: s.longest_us, started_us: s.started_us };
    let failure = windows.iter().filter_map(|&(from, to)| history.longest_stall(from, to)).max_by_key(|s| s.longest_us);
    Stalls {
        overall: history.longest_stall(0, (duration_s * 1e6).round() as i64).map(stall),
        failure: failure.map(stall),
    }
}

fn conflict_rate(c: Conflicts) -> ConflictRate {
    ConflictRate {
        acknowledged_writes: c.acknowledged,
        writes_with_siblings: c.with_siblings,
        rate: fraction(c.with_siblings, c.acknowledged),
    }
}

fn clock_second(c: history::ClockSecond) -> ClockSecond {
    ClockSecond { second: c.second, requests: c.requests, p50: c.p50, max: c.max }
}

fn fraction(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// JSON has no NaN or infinity: such a figure is `null`.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn tally(t: stats::Tally) -> Tally {
    Tally { requests: t.requests, ok: t.ok }
}

fn op_summary(op: &OpStats) -> OpSummary {
    OpSummary {
        count: op.count,
        ok: op.ok,
        latency_of: OpSummary::LATENCY_OF.to_owned(),
        latency_ms: quantiles(&op.latency, 1000.0),
        latency_min_us: (!op.latency.is_empty()).then(|| op.latency.min()),
    }
}

/// mean, p50, p95, p99, p99.9 and max of a µs histogram, in `unit` µs.
fn quantiles(h: &Histogram<u64>, unit: f64) -> Option<Quantiles> {
    if h.is_empty() {
        return None;
    }
    let at = |q: f64| h.value_at_quantile(q) as f64 / unit;
    Some(Quantiles {
        mean: h.mean() / unit,
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
        max: h.max() as f64 / unit,
    })
}

fn repair_summary(repair: &Repair, reported: bool) -> RepairSummary {
    RepairSummary {
        reported,
        hints_pending: repair.hints_pending,
        keys_by_rounds: repair
            .distribution()
            .into_iter()
            .map(|(rounds, keys)| (rounds.map_or("never".to_owned(), |n| n.to_string()), keys))
            .collect(),
        rounds: repair.rounds.iter().map(repair_round).collect(),
    }
}

fn repair_round(r: &RoundLog) -> RepairRound {
    RepairRound {
        round: r.round,
        duration_ms: r.duration_ms,
        converged: r.converged,
        totals: r.totals.clone(),
        errors: r.errors.clone(),
    }
}

/// A figure as the text summary prints it: fractions to three decimals,
/// counts as they are, and `-` for a figure that does not exist.
trait Figure {
    fn text(&self) -> String;
}

impl Figure for f64 {
    fn text(&self) -> String {
        format!("{self:.3}")
    }
}

impl Figure for u64 {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Figure for usize {
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Figure for String {
    fn text(&self) -> String {
        self.clone()
    }
}

impl<T: Figure> Figure for Option<T> {
    fn text(&self) -> String {
        self.as_ref().map_or_else(|| "-".to_owned(), Figure::text)
    }
}

/// The summary as text: first YCSB's lines with its exact names and units
/// (its `hdrhistogram` measurement type with percentiles 50,95,99,99.9),
/// then this test bed's own sections in the same `[SECTION], Name, value` form.
pub fn text(summary: &Summary) -> String {
    let mut out = String::new();
    let mut line = |section: &str, metric: &str, value: &dyn Figure| {
        let _ = writeln!(out, "[{section}], {metric}, {}", value.text());
    };
    line("OVERALL", "RunTime(ms)", &((summary.duration_s * 1000.0).round() as u64));
    line("OVERALL", "Throughput(ops/sec)", &summary.throughput_ops_s);
    line("OVERALL", "Operations", &summary.requests);
    let ops = &summary.operations;
    for (o, name) in [(&ops.read, "READ"), (&ops.update, "UPDATE"), (&ops.update_read, "UPDATE_READ")] {
        if name == "UPDATE_READ" && o.count == 0 {
            continue; // not an rmw run
        }
        ycsb_operation(&mut line, name, o);
    }
    for (class, count) in &summary.errors {
        line("ERRORS", class, count);
    }
    let a = &summary.availability;
    line("AVAILABILITY", "DuringFailure", &a.failure);
    line("AVAILABILITY", "OutsideFailure", &a.outside_failure);
    if let Some((node, share)) = a.worst_entry_in_failure() {
        line("AVAILABILITY", &format!("WorstEntryDuringFailure({node})"), &share);
    }
    let ms = |stall: Option<Stall>| stall.map(|s| s.longest_us as f64 / 1000.0);
    let at_s = |stall: Option<Stall>| stall.map(|s| s.started_us as f64 / 1e6);
    line("STALL", "Longest(ms)", &ms(summary.stalls.overall));
    line("STALL", "LongestStartedAt(s)", &at_s(summary.stalls.overall));
    line("STALL", "LongestDuringFailure(ms)", &ms(summary.stalls.failure));
    line("STALL", "LongestDuringFailureStartedAt(s)", &at_s(summary.stalls.failure));
    let st = &summary.staleness;
    line("STALENESS", "StaleReads", &st.stale_reads);
    line("STALENESS", "StaleRate", &st.stale_rate);
    line("STALENESS", "StaleMs(p50)", &st.stale_ms.map(|q| q.p50));
    line("STALENESS", "StaleMs(p99)", &st.stale_ms.map(|q| q.p99));
    line("SIBLINGS", "ReadsWithSiblings", &summary.siblings.reads_with_siblings);
    line("SIBLINGS", "ReadRate", &summary.siblings.rate);
    let conflicts = &summary.write_conflicts;
    line("WRITES", "AcknowledgedWithSiblings", &conflicts.overall.writes_with_siblings);
    line("WRITES", "ConflictRate", &conflicts.overall.rate);
    for (phase, rate) in &conflicts.by_phase {
        line("WRITES", &format!("ConflictRate({phase})"), &rate.rate);
    }
    line("VCLOCK", "MeanEntries", &summary.vclock_entries.mean);
    line("VCLOCK", "MaxEntries", &summary.vclock_entries.max);
    let growth = &summary.clock_growth;
    line("VCLOCK", "MaxEntriesAnyRequest", &growth.per_second.iter().map(|s| s.max as u64).max());
    line("VCLOCK", "PruneEvents", &growth.prune_events);
    let cpu = &summary.cpu;
    line("CPU", "Nodes(s)", &cpu.nodes_s);
    if cpu.nodes_elsewhere > 0 {
        // Their CPU is on their hosts: Nodes(s) counts only this machine's.
        line("CPU", "NodesOnOtherHosts", &cpu.nodes_elsewhere);
    }
    line("CPU", "Driver(s)", &cpu.driver_s);
    line("CPU", "DelayLine(s)", &cpu.delay_line_s);
    line("CPU", "MachineBusy", &cpu.machine_busy);
    let repair = &summary.repair;
    if repair.reported {
        line("REPAIR", "HintsPendingAtStart", &repair.hints_pending);
        for (rounds, keys) in &repair.keys_by_rounds {
            line("REPAIR", &format!("KeysConvergedInRounds={rounds}"), keys);
        }
    }
    if let Some(d) = &summary.divergence {
        let figures = [d.peak_partitions.text(), d.at_heal.text(), d.at_workload_end.text(), d.heal_to_zero_ms.text()];
        line("DIVERGENCE", "Partitions(peak/atHeal/atEnd)/HealToZero(ms)", &figures.join("/"));
    }
    for detection in &summary.failure_detection {
        let target = &detection.target;
        line("DETECTOR", &format!("AllNoticed({target})(ms)"), &detection.all_noticed_ms);
        line("DETECTOR", &format!("AllAliveAfterHeal({target})(ms)"), &detection.all_alive_after_heal_ms);
    }
    if summary.tcp.measured() {
        line("TCP", "ConnectionsOpened", &summary.tcp.active_opens);
        line("TCP", "RetransmittedSegments", &summary.tcp.retransmitted_segments);
    }
    let lost = &summary.lost_writes;
    line("CHECKER", "AcknowledgedWrites", &lost.acknowledged);
    line("CHECKER", "LostWrites", &lost.lost);
    line("CHECKER", "UnverifiedWrites", &lost.unverified);
    for lapse in &summary.lapsed_faults {
        let _ = writeln!(out, "ERROR: {lapse}");
    }
    if summary.interrupted {
        out.push_str("WARNING: the run was interrupted; the figures cover only what ran\n");
    }
    if cpu.saturated {
        out.push_str(
            "WARNING: the machine was saturated (CPU > 90 %): latencies measure the machine as much as the system\n",
        );
    }
    out
}

/// One operation as YCSB's `OneMeasurementHdrHistogram` prints it: the
/// histogram (of successful requests, as YCSB measures them) in whole µs
/// but the mean, then the count of each return code that occurred.
fn ycsb_operation(line: &mut impl FnMut(&str, &str, &dyn Figure), name: &str, o: &OpSummary) {
    let q = o.latency_ms.as_ref();
    let us = |pick: fn(&Quantiles) -> f64| q.map(|q| (pick(q) * 1000.0).round() as u64);
    line(name, "Operations", &o.ok);
    line(name, "AverageLatency(us)", &q.map(|q| q.mean * 1000.0));
    line(name, "MinLatency(us)", &o.latency_min_us);
    line(name, "MaxLatency(us)", &us(|q| q.max));
    line(name, "50thPercentileLatency(us)", &us(|q| q.p50));
    line(name, "95thPercentileLatency(us)", &us(|q| q.p95));
    line(name, "99thPercentileLatency(us)", &us(|q| q.p99));
    line(name, "99.9PercentileLatency(us)", &us(|q| q.p999));
    line(name, "Return=OK", &o.ok);
    if o.count > o.ok {
        line(name, "Return=ERROR", &(o.count - o.ok));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The key paths of the summary as written before it was typed (from a
    /// real run), in file order; the contents of maps keyed by data (error
    /// classes, phases, rounds, nodes) and of arrays are left out.
    const PREVIOUS_KEYS: &str = include_str!("testdata/summary_keys.txt");
    const KEYED_BY_DATA: [&str; 6] =
        ["errors", "phases", "repair.keys_by_rounds", "tcp.nodes", "availability.by_entry", "write_conflicts.by_phase"];

    fn key_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
        let Value::Object(map) = value else { return };
        if KEYED_BY_DATA.contains(&prefix) {
            return;
        }
        for (key, child) in map {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            out.push(path.clone());
            key_paths(child, &path, out);
        }
    }

    fn files() -> Files {
        let path = |name: &str| std::path::PathBuf::from(format!("/runs/{name}"));
        Files {
            workload: path("workload.csv"),
            faults: path("faults.json"),
            manifest: path("manifest.json"),
            summary: path("summary.json"),
            nodes: path("nodes"),
            membership: path("membership.csv"),
            divergence: None,
            repair_results: None,
            history: None,
            latency_logs: Vec::new(),
        }
    }

    #[test]
    fn a_built_summary_has_the_keys_of_the_previous_literal_in_its_order() {
        let mut stats = Stats::default();
        let histograms = [
            &mut stats.reads.latency,
            &mut stats.updates.latency,
            &mut stats.update_reads.latency,
            &mut stats.stale_age,
            &mut stats.vclock_entries,
        ];
        for h in histograms {
            h.record(3).unwrap();
        }
        let cpu = CpuReport {
            wall_s: 1.0,
            cores: 2,
            nodes_s: 0.5,
            nodes_elsewhere: 0,
            driver_s: 0.25,
            delay_line_s: 0.0,
            machine_busy: Some(0.5),
            saturated: false,
        };
        let repair = Repair { hints_pending: 0, rounds: Vec::new(), keys: BTreeMap::from([(1, Some(0))]) };
        let summary = build(Inputs {
            stats: &stats,
            history: &History::default(),
            nodes: &[],
            fault_windows: Vec::new(),
            prune_events: None,
            duration_s: 1.0,
            target_rate: None,
            interrupted: false,
            unreadable_clocks: 0,
            requests_sent: 0,
            rows_written: 0,
            cpu: &cpu,
            repair: &repair,
            post_repair: true,
            divergence: None,
            verdict: &LostWrites::default(),
            leftovers: &[],
            lapses: &[],
            detections: Vec::new(),
            tcp: &BTreeMap::new(),
            files: files(),
        });
        let mut paths = Vec::new();
        key_paths(&serde_json::to_value(&summary).unwrap(), "", &mut paths);
        assert_eq!(paths, PREVIOUS_KEYS.lines().collect::<Vec<_>>());
        assert!(text(&summary).contains("[REPAIR], KeysConvergedInRounds=0, 1\n"));
    }
}
