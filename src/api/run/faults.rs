//! `faults_<stamp>.json`: the fault plan as it went, event by event, on the
//! run's clock — when each apply and heal started and ended, what ran, and
//! any lapse. `nodes_<stamp>/*.json`: each node's `/status` at a moment of
//! the run, or why it had none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::fault::{FaultRecord, Kind, Layer};
use crate::api::status::Status;

/// The faults file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultsFile {
    /// What the times count from.
    pub clock: String,
    pub events: Vec<EventLog>,
}

impl FaultsFile {
    pub fn new(events: Vec<EventLog>) -> Self {
        FaultsFile { clock: "µs since t0, the start of warmup".into(), events }
    }
}

/// One event of the plan as it went, on the run's clock (µs since t0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLog {
    pub event: usize,
    pub kind: Kind,
    pub targets: Vec<String>,
    pub layer: Layer,
    pub planned_at_s: f64,
    pub planned_duration_s: f64,
    pub apply_started_us: Option<i64>,
    pub applied_us: Option<i64>,
    pub heal_started_us: Option<i64>,
    pub healed_us: Option<i64>,
    /// When the fault was first seen no longer in force, unhealed.
    pub lapsed_us: Option<i64>,
    /// Why it lapsed.
    pub lapse: Option<String>,
    /// When the driver's own requests first met the effect: the start of
    /// the first workload request touching a target (as entry node or
    /// coordinator) after the apply began that failed or was slower than
    /// every warmup request but one in a thousand (the warmup's p99.9).
    /// `null` when none did, or for a run that recorded none.
    #[serde(default)]
    pub effect_onset_us: Option<i64>,
    /// What was applied, with the exact commands, backend and verification.
    pub faults: Vec<FaultRecord>,
    pub error: Option<String>,
}

/// Each node's status by id, at one moment of a run.
pub type NodeSnapshots = BTreeMap<String, NodeSnapshot>;

/// One node's status, or why it had none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeSnapshot {
    Status(Box<Status>),
    Unreachable { error: String },
}
