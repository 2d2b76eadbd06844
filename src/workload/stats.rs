//! The recorder's running tally of a run: what the summary reports.
//!
//! Kept beside the CSV rather than recomputed from it, so the summary costs
//! nothing at the end of a long run. Latencies are HdrHistograms (µs, three
//! significant digits); load-phase requests are counted apart, since the
//! preload is not the measured workload.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::ops::Op;
use super::sample::Phase;

/// One finished request, as the CSV has it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row<'a> {
    pub t_start_us: i64,
    pub t_end_us: i64,
    pub latency_us: i64,
    pub client: u32,
    pub op: &'static str,
    pub key: String,
    pub entry: &'a str,
    pub node: &'a str,
    pub ok: bool,
    pub status: String,
    pub siblings: u32,
    /// An acknowledged update's `X-Dynamo-Siblings`: the versions the key
    /// held after it (more than one: the write conflicted). Empty for reads.
    pub siblings_after_write: Option<u32>,
    pub vclock_entries: u32,
    /// Empty for updates and failed reads: staleness is a property of answers.
    pub stale: Option<bool>,
    pub stale_versions: Option<u32>,
    pub stale_ms: Option<f64>,
    pub phase: &'static str,
}

/// Values up to an hour in µs, three significant digits. (Fixed bounds:
/// `saturating_record` clamps rather than resizes, so an auto-resizing
/// histogram would clamp at its first bound.)
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

#[derive(Debug)]
pub struct OpStats {
    pub count: u64,
    pub ok: u64,
    /// Latency of successful requests, µs.
    pub latency: Histogram<u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats { count: 0, ok: 0, latency: histogram() }
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Tally {
    pub requests: u64,
    pub ok: u64,
}

/// Acknowledged writes that said how many versions the key held after
/// them, and those that left more than one.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Conflicts {
    pub acknowledged: u64,
    pub with_siblings: u64,
}

#[derive(Debug)]
pub struct Stats {
    pub load: Tally,
    pub reads: OpStats,
    pub updates: OpStats,
    /// The reads of read-modify-write updates: apart from `reads`, and
    /// from the staleness and sibling figures below, which are the workload's reads'.
    pub update_reads: OpStats,
    /// Write conflicts by phase.
    pub conflicts: BTreeMap<Phase, Conflicts>,
    pub phases: BTreeMap<Phase, Tally>,
    /// Failed requests by class (`503`, `timeout`, `connect`, …), measured phases only.
    pub errors: BTreeMap<String, u64>,
    /// Successful reads whose staleness was judged, and the stale ones.
    pub reads_judged: u64,
    pub stale_reads: u64,
    /// How long the oldest missed write had been acknowledged, µs.
    pub stale_age: Histogram<u64>,
    pub reads_with_siblings: u64,
    pub vclock_entries: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            load: Tally::default(),
            reads: OpStats::default(),
            updates: OpStats::default(),
            update_reads: OpStats::default(),
            conflicts: BTreeMap::new(),
            phases: BTreeMap::new(),
            errors: BTreeMap::new(),
            reads_judged: 0,
            stale_reads: 0,
            stale_age: histogram(),
            reads_with_siblings: 0,
            vclock_entries: histogram(),
        }
    }
}

impl Stats {
    pub fn observe(&mut self, row: &Row, op: Op, phase: Phase) {
        let count = |t: &mut Tally| {
            t.requests += 1;
            t.ok += row.ok as u64;
        };
        if phase == Phase::Load {
            count(&mut self.load);
            return;
        }
        count(self.phases.entry(phase).or_default());
        let per_op = match op {
            Op::Read => &mut self.reads,
            Op::Update => &mut self.updates,
            Op::UpdateRead => &mut self.update_reads,
        };
        per_op.count += 1;
        if !row.ok {
            *self.errors.entry(row.status.clone()).or_default() += 1;
            return;
        }
        per_op.ok += 1;
        per_op.latency.saturating_record(row.latency_us.max(0) as u64);
        if let Some(after) = row.siblings_after_write {
            let conflicts = self.conflicts.entry(phase).or_default();
            conflicts.acknowledged += 1;
            conflicts.with_siblings += (after > 1) as u64;
        }
        if op == Op::Read {
            self.reads_with_siblings += (row.siblings > 1) as u64;
            self.vclock_entries.saturating_record(row.vclock_entries as u64);
            if let Some(stale) = row.stale {
                self.reads_judged += 1;
                if stale {
                    self.stale_reads += 1;
                    self.stale_age.saturating_record((row.stale_ms.unwrap_or(0.0) * 1000.0) as u64);
                }
            }
        }
    }

    /// Write conflicts over every measured phase.
    pub fn all_conflicts(&self) -> Conflicts {
        self.conflicts.values().fold(Conflicts::default(), |a, c| Conflicts {
            acknowledged: a.acknowledged + c.acknowledged,
            with_siblings: a.with_siblings + c.with_siblings,
        })
    }

    pub fn measured(&self) -> Tally {
        self.phases.values().fold(Tally::default(), |a, t| Tally { requests: a.requests + t.requests, ok: a.ok + t.ok })
    }
}
