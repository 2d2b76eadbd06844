//! Where a run's files went (`files` in the summary and the manifest), and
//! `repair_results.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The run's files, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Files {
    pub workload: PathBuf,
    pub faults: PathBuf,
    pub manifest: PathBuf,
    pub summary: PathBuf,
    /// The folder of the nodes' `/status` snapshots and logs.
    pub nodes: PathBuf,
    pub membership: PathBuf,
    /// `divergence_<stamp>.csv`; absent from runs made before it was sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<PathBuf>,
    /// `null` unless the run ran with `--post_repair`.
    pub repair_results: Option<PathBuf>,
    /// `history_<stamp>.jsonl`, Jepsen's operation model; absent from runs made before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<PathBuf>,
    /// `latency_<op>_<stamp>.hlog`: HdrHistogram interval logs per operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_logs: Vec<PathBuf>,
}

/// `repair_results.json` (the seed's name): key → repair rounds until its
/// live replicas agreed, `null` when they did not within the limit.
pub type RepairResults = BTreeMap<String, Option<u32>>;
