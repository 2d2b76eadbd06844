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
    /// By phase name: `warmup`, `failure`, `recovery`.
    pub phases: BTreeMap<String, Tally>,
    pub availability: Availability,
    pub staleness: Staleness,
    pub siblings: Siblings,
    pub vclock_entries: ClockSize,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    pub count: u64,
    pub ok: u64,
    /// Which requests `latency_ms` covers: [`OpSummary::LATENCY_OF`].
    pub latency_of: String,
    /// `null` when no request succeeded.
    pub latency_ms: Option<Quantiles>,
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Availability {
    pub failure: Option<f64>,
    pub outside_failure: Option<f64>,
    pub overall: Option<f64>,
}

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
    /// Over successful reads.
    pub rate: Option<f64>,
}

/// Entries of the clocks reads returned.
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
    pub nodes_s: f64,
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
