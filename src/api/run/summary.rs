//! `summary_<stamp>.json`: the run's figures — requests, latency
//! quantiles, availability per phase, staleness, siblings, clock sizes,
//! CPU, repair, failure detection, TCP and the lost-write check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::divergence::DivergenceSummary;
use super::files::Files;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Seconds measured: --duration, or less when interrupted.
    pub duration_s: f64,
    pub interrupted: bool,
    pub target_rate: Option<f64>,
    /// Reads whose clock header did not parse (a store bug if any).
    pub unreadable_clocks: u64,
    /// Requests of the measured phases.
    pub requests: u64,
    /// `null` when nothing was measured.
    pub throughput_ops_s: Option<f64>,
    pub requests_sent: u64,
    pub rows_written: u64,
    /// The preload, counted apart.
    pub load: Tally,
    pub operations: Operations,
    /// Failed requests by class (`503`, `timeout`, `connect`, …).
    pub errors: BTreeMap<String, u64>,
    /// By phase name: `warmup`, `fault_apply`, `failure`, `fault_heal`, `recovery`.
    pub phases: BTreeMap<String, Tally>,
    pub availability: Availability,
    /// The longest times without a successful request completing.
    #[serde(default)]
    pub stalls: Stalls,
    pub staleness: Staleness,
    pub siblings: Siblings,
    /// Acknowledged writes that left the key with siblings.
    #[serde(default)]
    pub write_conflicts: WriteConflicts,
    pub vclock_entries: ClockSize,
    #[serde(default)]
    pub clock_growth: ClockGrowth,
    pub cpu: CpuReport,
    pub repair: RepairSummary,
    /// How far the replicas drifted apart and how fast they healed; absent
    /// from runs made before it was sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<DivergenceSummary>,
    pub failure_detection: Vec<Detection>,
    pub tcp: Tcp,
    pub lost_writes: LostWrites,
    /// Faults, rules, processes or dead nodes the run left behind.
    pub leftovers: Vec<String>,
    /// Fault events that lapsed before their heal.
    pub lapsed_faults: Vec<String>,
    pub files: Files,
}

impl Summary {
    /// Finished, lost nothing, left nothing behind.
    pub fn clean(&self) -> bool {
        self.lost_writes.lost == 0 && !self.interrupted && self.leftovers.is_empty()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub requests: u64,
    pub ok: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operations {
    pub read: OpSummary,
    pub update: OpSummary,
    /// The reads of read-modify-write updates (`--update_mode rmw`), apart
    /// from the workload's reads.
    #[serde(default)]
    pub update_read: OpSummary,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    pub count: u64,
    pub ok: u64,
    /// Which requests `latency_ms` covers: [`OpSummary::LATENCY_OF`].
    pub latency_of: String,
    /// `null` when no request succeeded.
    pub latency_ms: Option<Quantiles>,
    /// The fastest of them, µs (YCSB's `MinLatency(us)`); absent when none
    /// succeeded and from summaries written before it was printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_min_us: Option<u64>,
}

impl OpSummary {
    pub const LATENCY_OF: &'static str = "successful requests";
}

/// A distribution's mean, p50, p95, p99, p99.9 and max.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Shares of successful requests; `null` for a phase without requests.
/// `failure` is the phase of that name (every fault verified in force, to
/// the start of a heal); `outside_failure` is warmup and recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Availability {
    pub failure: Option<f64>,
    pub outside_failure: Option<f64>,
    pub overall: Option<f64>,
    /// The same, per entry node (the node the client contacted).
    #[serde(default)]
    pub by_entry: BTreeMap<String, EntryAvailability>,
}

impl Availability {
    /// The entry node with the lowest availability during the failure, and that share.
    pub fn worst_entry_in_failure(&self) -> Option<(&str, f64)> {
        self.by_entry
            .iter()
            .filter_map(|(node, a)| Some((node.as_str(), a.failure?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EntryAvailability {
    pub failure: Option<f64>,
    pub failure_requests: u64,
    pub outside_failure: Option<f64>,
    pub outside_failure_requests: u64,
}

/// The longest intervals in which no request succeeded anywhere: whatever
/// availability says, a stall is the time the clients got nothing done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stalls {
    /// From t0 to the end of the workload.
    pub overall: Option<Stall>,
    /// From the start of a fault's apply to the start of its heal (the
    /// longest over the plan's events; the nominal window in a run without
    /// faults); `null` without such a window.
    pub failure: Option<Stall>,
}

/// No successful request completed from `started_us` for `longest_us`
/// (the window's edges count as bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    pub longest_us: i64,
    /// µs since t0.
    pub started_us: i64,
}

/// Write conflicts, measured at the write: the share of acknowledged
/// writes whose answer said the key held more than one version after it
/// (`X-Dynamo-Siblings` > 1), overall and by phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteConflicts {
    pub overall: ConflictRate,
    pub by_phase: BTreeMap<String, ConflictRate>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ConflictRate {
    pub acknowledged_writes: u64,
    pub writes_with_siblings: u64,
    pub rate: Option<f64>,
}

/// Clock size over the run: per whole second (by start), the p50 and max
/// of `vclock_entries` over successful requests of every kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClockGrowth {
    pub per_second: Vec<ClockSecond>,
    /// Clock entries the nodes pruned between t0 and the workload's end
    /// (their `prune_events` counters); `null` when a snapshot is missing.
    pub prune_events: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSecond {
    /// Seconds since t0.
    pub second: i64,
    pub requests: u64,
    pub p50: u16,
    pub max: u16,
}

/// Over the workload's reads. An update's own read (`update_read`) is
/// judged too, and its CSV row says whether it was stale, but it is not
/// counted here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Staleness {
    pub reads_judged: u64,
    pub stale_reads: u64,
    pub stale_rate: Option<f64>,
    /// How long the oldest missed write had been acknowledged, ms.
    pub stale_ms: Option<Quantiles>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Siblings {
    pub reads_with_siblings: u64,
    /// Over the workload's successful reads (an update's read is not one).
    pub rate: Option<f64>,
}

/// Entries of the clocks the workload's reads returned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClockSize {
    pub mean: Option<f64>,
    pub p99: u64,
    pub max: u64,
}

/// CPU time the nodes, the driver and the delay line used during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    pub wall_s: f64,
    pub cores: usize,
    /// The nodes on this machine; see `nodes_elsewhere`.
    pub nodes_s: f64,
    /// Nodes running on other hosts (a cluster on hosts), whose CPU
    /// `nodes_s` leaves out: this machine cannot see it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nodes_elsewhere: usize,
    pub driver_s: f64,
    pub delay_line_s: f64,
    /// Busy time of the whole machine over wall × cores (everything, not
    /// only this run's processes).
    pub machine_busy: Option<f64>,
    pub saturated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairSummary {
    /// Whether the run asked for repair figures (`--post_repair`).
    pub reported: bool,
    /// Hints the nodes held when the rounds began.
    pub hints_pending: u64,
    /// Rounds a key needed (`never`: not within the limit) → keys.
    pub keys_by_rounds: BTreeMap<String, usize>,
    pub rounds: Vec<RepairRound>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairRound {
    pub round: u32,
    pub duration_ms: u64,
    /// Keys converged after this round (cumulative).
    pub converged: usize,
    /// The nodes' statistics, summed (partitions, exchanges, keys, bytes, …).
    pub totals: BTreeMap<String, u64>,
    pub errors: Vec<String>,
}

/// For one fault event: when the other nodes noticed its target down, and
/// when they all saw it alive again after the heal (ms after apply / heal;
/// the latter only when someone had noticed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub event: usize,
    pub target: String,
    pub first_noticed_ms: Option<f64>,
    pub all_noticed_ms: Option<f64>,
    pub all_alive_after_heal_ms: Option<f64>,
}

/// TCP counters of the nodes' namespaces (empty on a loopback cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tcp {
    pub nodes: BTreeMap<String, TcpCounters>,
    pub active_opens: u64,
    pub retransmitted_segments: u64,
}

impl Tcp {
    /// The totals of per-node counters.
    pub fn of(nodes: BTreeMap<String, TcpCounters>) -> Tcp {
        Tcp {
            active_opens: nodes.values().map(|t| t.active_opens).sum(),
            retransmitted_segments: nodes.values().map(|t| t.retransmitted_segments).sum(),
            nodes,
        }
    }

    /// Whether any node had its own counters.
    pub fn measured(&self) -> bool {
        !self.nodes.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCounters {
    pub active_opens: u64,
    pub passive_opens: u64,
    pub retransmitted_segments: u64,
}

/// The lost-write check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LostWrites {
    pub acknowledged: u64,
    /// Writes that no live replica holds or supersedes.
    pub lost: u64,
    /// Writes no answering replica holds while some replica could not be read.
    pub unverified: u64,
    /// Writes present on some live replicas but missing from others.
    pub missing_somewhere: u64,
    /// The first few lost writes, as `key dot`.
    pub examples: Vec<String>,
    /// Hints not delivered when the check ran (for a node left down).
    pub hints_left: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A summary the driver wrote before the summary was typed (a real run,
    /// with the empty parts filled in by hand).
    const WRITTEN: &str = include_str!("testdata/summary.json");

    fn pretty(summary: &Summary) -> String {
        serde_json::to_string_pretty(summary).unwrap() + "\n"
    }

    #[test]
    fn a_written_summary_reads_back_and_writes_the_same_bytes() {
        let summary: Summary = serde_json::from_str(WRITTEN).unwrap();
        assert_eq!(pretty(&summary), WRITTEN);
    }

    #[test]
    fn a_summary_round_trips() {
        let summary: Summary = serde_json::from_str(WRITTEN).unwrap();
        let again: Summary = serde_json::from_str(&pretty(&summary)).unwrap();
        assert_eq!(again, summary);
    }

    /// Runs written before the write-conflict, stall, per-entry and clock
    /// growth figures still open in the report.
    #[test]
    fn a_summary_without_the_newer_figures_reads_with_them_empty() {
        let mut json: serde_json::Value = serde_json::from_str(WRITTEN).unwrap();
        let object = json.as_object_mut().unwrap();
        for newer in ["stalls", "write_conflicts", "clock_growth"] {
            object.remove(newer).unwrap();
        }
        object["operations"].as_object_mut().unwrap().remove("update_read").unwrap();
        object["availability"].as_object_mut().unwrap().remove("by_entry").unwrap();
        let summary: Summary = serde_json::from_value(json).unwrap();
        assert_eq!((summary.stalls.overall, summary.write_conflicts.overall.rate), (None, None));
        assert!(summary.clock_growth.per_second.is_empty() && summary.availability.by_entry.is_empty());
    }

    #[test]
    fn figures_that_do_not_exist_are_null() {
        let mut summary: Summary = serde_json::from_str(WRITTEN).unwrap();
        summary.throughput_ops_s = None;
        summary.operations.read.latency_ms = None;
        let json = serde_json::to_value(&summary).unwrap();
        assert!(json["throughput_ops_s"].is_null());
        assert!(json["operations"]["read"]["latency_ms"].is_null());
        assert_eq!(serde_json::from_value::<Summary>(json).unwrap(), summary);
    }
}
