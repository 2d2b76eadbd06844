//! `manifest_<stamp>.json`: what a run was — its resolved settings, seeds,
//! plan, backends, cluster, machine and software — so that a result can be
//! traced back and the run repeated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::files::Files;
use crate::api::cluster::Mode;
use crate::api::fault::FaultEvent;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `dynabed experiment`.
    pub tool: String,
    pub version: String,
    pub git_revision: String,
    pub command_line: Vec<String>,
    pub stamp: String,
    /// t0 (the start of warmup) as RFC 3339 UTC, µs.
    pub t0_wall: String,
    /// What the times in the run's files count from.
    pub clock: String,
    pub settings: Settings,
    pub seeds: Seeds,
    /// The key distribution, in words.
    pub key_chooser: String,
    pub plan: Vec<FaultEvent>,
    pub plan_notes: Vec<String>,
    /// How the failure phase is delimited, in words.
    pub failure_phase: String,
    /// The backend of each fault applied.
    pub backends: Vec<crate::api::fault::Backend>,
    pub timeouts: Timeouts,
    pub quorum: Quorum,
    pub anti_entropy_during_run: bool,
    pub hint_delivery_during_run: bool,
    /// Runs made before the switch existed had read repair on.
    #[serde(default = "on")]
    pub read_repair_during_run: bool,
    pub cluster: ClusterRecord,
    pub machine: Machine,
    pub files: Files,
}

/// The experiment's settings once resolved (defaults filled in), as the
/// driver's flags name them; choices are recorded by their flag values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub cluster_procs: PathBuf,
    /// `A` or `B`.
    pub workload: String,
    pub duration_s: f64,
    pub concurrency: u32,
    /// `uniform`, `zipf` or `zipf-exact`.
    pub dist: String,
    pub keyspace: u32,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub failure_mode: String,
    pub warmup_s: f64,
    pub failure_duration_s: f64,
    pub slow_ms: u64,
    pub partition_ms: Option<u64>,
    pub partition_style: String,
    pub partition_clients: String,
    pub loss_pct: u8,
    /// `kernel` or `app`.
    pub fault_layer: String,
    pub target: Option<String>,
    pub no_restart: bool,
    pub plan: Option<PathBuf>,
    pub post_repair: bool,
    pub max_repair_rounds: u32,
    pub out: PathBuf,
    pub value_size: u32,
    /// `context`, `blind` or `rmw`.
    pub update_mode: String,
    /// `random`, `fixed` or `coordinator`.
    pub routing: String,
    pub target_rate: Option<f64>,
    pub op_timeout_ms: u64,
    pub backoff_ms: u64,
    pub anti_entropy: bool,
    pub hint_delivery: bool,
    #[serde(default = "on")]
    pub read_repair: bool,
    /// Whether the workload went on after the last heal (runs made before
    /// the switch existed did).
    #[serde(default = "on")]
    pub recovery: bool,
    pub seed: u64,
}

/// The seed, and how each random choice derives from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seeds {
    pub seed: u64,
    pub target: String,
    pub clients: String,
    pub repair_round: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    pub op_timeout_ms: u64,
    pub backoff_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quorum {
    pub n: usize,
    pub r: usize,
    pub w: usize,
}

/// The cluster the run ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub mode: Mode,
    pub prefix: String,
    pub partitions: u32,
    pub nodes: Vec<String>,
    pub client_netns: Option<String>,
    /// The storage engine, from the first node's `/status`.
    pub storage: Option<String>,
    pub node_command_lines: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_kib: Option<u64>,
    /// The kernel release.
    pub kernel: String,
}

/// serde's default for a switch that was always on before it was recorded.
fn on() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest the driver wrote before the manifest was typed.
    const WRITTEN: &str = include_str!("testdata/manifest.json");

    #[test]
    fn a_written_manifest_reads_back_and_writes_the_same_bytes() {
        let manifest: Manifest = serde_json::from_str(WRITTEN).unwrap();
        assert_eq!(serde_json::to_string_pretty(&manifest).unwrap() + "\n", WRITTEN);
        assert_eq!(manifest.settings.failure_mode, "slow");
        assert_eq!(manifest.settings.fault_layer, "app");
    }

    #[test]
    fn a_manifest_from_before_the_read_repair_and_recovery_switches_had_them_on() {
        let older =
            ["    \"read_repair\": true,\n", "  \"read_repair_during_run\": true,\n", "    \"recovery\": true,\n"]
                .iter()
                .fold(WRITTEN.to_owned(), |text, line| text.replace(line, ""));
        assert_eq!(older.len(), WRITTEN.len() - 81, "all three lines were there to remove");
        let manifest: Manifest = serde_json::from_str(&older).unwrap();
        assert!(manifest.settings.read_repair && manifest.read_repair_during_run && manifest.settings.recovery);
    }
}
