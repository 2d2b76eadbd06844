//! Kernel-level against application-level faults: the same cell run on
//! both layers, side by side — what the clients saw, what the cluster did —
//! so a reader sees where application-level injection agrees with the
//! kernel and where it misleads.

use super::figures::quantile;
use super::run::RunData;
use super::Entry;

/// One measure of a run, with how to read it.
pub struct Measure {
    pub name: &'static str,
    pub side: &'static str,
    pub value: fn(&RunData) -> Option<f64>,
}

/// Latency quantile `q` of successful requests (of every kind) that
/// started while the fault was in force (the `failure` phase).
fn failure_latency(run: &RunData, q: f64) -> Option<f64> {
    let mut latencies: Vec<f64> = run.requests.iter().filter(|r| r.ok && r.in_failure).map(|r| r.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    (!latencies.is_empty()).then(|| quantile(&latencies, q))
}

fn failed_in_failure(run: &RunData) -> Option<f64> {
    Some(run.requests.iter().filter(|r| !r.ok && r.in_failure).count() as f64)
}

/// The longest time without a successful request, from a fault's apply to its heal, ms.
pub fn stall_in_failure_ms(run: &RunData) -> Option<f64> {
    run.summary.stalls.failure.map(|s| s.longest_us as f64 / 1000.0)
}

/// The lowest availability of any entry node while the fault was in force.
pub fn worst_entry_in_failure(run: &RunData) -> Option<f64> {
    run.summary.availability.worst_entry_in_failure().map(|(_, a)| a)
}

/// The share of acknowledged writes that left siblings while the fault was in force.
pub fn conflicts_in_failure(run: &RunData) -> Option<f64> {
    run.summary.write_conflicts.by_phase.get("failure")?.rate
}

fn keys_repaired(run: &RunData) -> Option<f64> {
    let by_rounds = &run.summary.repair.keys_by_rounds;
    // A fold from +0.0: an empty f64 sum is -0.0.
    Some(by_rounds.iter().filter(|(rounds, _)| rounds.as_str() != "0").fold(0.0, |a, (_, n)| a + *n as f64))
}

/// The most rounds a key needed; infinite when some key never converged.
fn most_rounds(run: &RunData) -> Option<f64> {
    run.summary.repair.keys_by_rounds.keys().map(|r| r.parse::<f64>().unwrap_or(f64::INFINITY)).reduce(f64::max)
}

pub const MEASURES: &[Measure] = &[
    Measure { name: "throughput (ops/s)", side: "client", value: |r| r.summary.throughput_ops_s },
    Measure { name: "p50 during failure (ms)", side: "client", value: |r| failure_latency(r, 0.5) },
    Measure { name: "p99 during failure (ms)", side: "client", value: |r| failure_latency(r, 0.99) },
    Measure { name: "failed requests during failure", side: "client", value: failed_in_failure },
    Measure {
        name: "availability during failure (%)",
        side: "client",
        value: |r| r.summary.availability.failure.map(|a| a * 100.0),
    },
    Measure { name: "longest stall during failure (ms)", side: "client", value: stall_in_failure_ms },
    Measure {
        name: "worst entry node's availability during failure (%)",
        side: "client",
        value: |r| worst_entry_in_failure(r).map(|a| a * 100.0),
    },
    Measure {
        name: "write conflicts during failure (%)",
        side: "client",
        value: |r| conflicts_in_failure(r).map(|c| c * 100.0),
    },
    Measure {
        name: "all nodes noticed the fault (ms)",
        side: "cluster",
        value: |r| r.summary.failure_detection.first()?.all_noticed_ms,
    },
    Measure {
        name: "all saw the node alive after heal (ms)",
        side: "cluster",
        value: |r| r.summary.failure_detection.first()?.all_alive_after_heal_ms,
    },
    Measure { name: "hints stored", side: "cluster", value: |r| Some(r.counter("hints_stored") as f64) },
    Measure { name: "hints delivered", side: "cluster", value: |r| Some(r.counter("hints_delivered") as f64) },
    Measure { name: "read repairs", side: "cluster", value: |r| Some(r.counter("read_repairs") as f64) },
    Measure { name: "requests forwarded", side: "cluster", value: |r| Some(r.counter("forwarded") as f64) },
    Measure { name: "quorum failures (503)", side: "cluster", value: |r| Some(r.counter("quorum_failures") as f64) },
    Measure { name: "failed peer requests", side: "cluster", value: |r| Some(r.counter("peer_errors") as f64) },
    Measure {
        name: "gossip swaps unanswered",
        side: "cluster",
        value: |r| Some(r.counter("gossip_unanswered") as f64),
    },
    Measure {
        name: "peak divergent partitions",
        side: "cluster",
        value: |r| Some(r.summary.divergence.as_ref()?.peak_partitions as f64),
    },
    Measure {
        name: "heal to no divergence (ms)",
        side: "cluster",
        value: |r| r.summary.divergence.as_ref()?.heal_to_zero_ms,
    },
    Measure { name: "keys that needed repair", side: "cluster", value: keys_repaired },
    Measure { name: "most repair rounds", side: "cluster", value: most_rounds },
    Measure {
        name: "TCP connections opened",
        side: "kernel",
        value: |r| r.summary.tcp.measured().then_some(r.summary.tcp.active_opens as f64),
    },
    Measure {
        name: "TCP segments retransmitted",
        side: "kernel",
        value: |r| r.summary.tcp.measured().then_some(r.summary.tcp.retransmitted_segments as f64),
    },
];

/// A cell run on both layers (both runs read).
pub struct Pair<'a> {
    pub cell: String,
    pub kernel: &'a Entry,
    pub app: &'a Entry,
}

impl Pair<'_> {
    /// A measure on both layers, as text.
    pub fn values(&self, measure: &Measure) -> [String; 2] {
        [self.kernel, self.app]
            .map(|e| e.run.as_ref().and_then(measure.value).map_or("-".into(), |v: f64| format!("{v:.2}")))
    }
}

/// Every cell that ran on both layers, by the name it has without its layer.
pub fn pairs(entries: &[Entry]) -> Vec<Pair<'_>> {
    let on = |layer: &'static str| entries.iter().filter(move |e| e.layer_label() == layer && e.run.is_some());
    on("kernel")
        .filter_map(|kernel| {
            let app = on("app").find(|app| app.base_name() == kernel.base_name())?;
            Some(Pair { cell: kernel.base_name(), kernel, app })
        })
        .collect()
}
