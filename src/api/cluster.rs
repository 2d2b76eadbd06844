//! The cluster files — `cluster_procs.json` in the seed's format and
//! `cluster_procs.meta.json` beside it — and the processes a prefix's
//! run-state ledger records: read by every command that acts on a cluster,
//! written by `cluster up`, node registration and restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One node as the seed's consumers expect it, plus where to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub pid: u32,
    pub port: u16,
    pub host: String,
    pub peer_port: u16,
    pub netns: Option<String>,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Netns,
    Loopback,
}

/// Cluster-wide settings, and how to restart each node exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub n: u8,
    pub partitions: u32,
    pub mode: Mode,
    pub prefix: String,
    pub client_netns: Option<String>,
    pub admin_token: String,
    pub nodes: BTreeMap<String, NodeMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The full command line, program first.
    pub argv: Vec<String>,
    /// The process's start time (clock ticks after boot, from
    /// /proc/PID/stat), so that a recycled pid is never signalled.
    pub start_time: u64,
    pub log: Option<PathBuf>,
}

/// A process the cluster started, known by pid and start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedProcess {
    /// What it is, e.g. `node node3` or `delay-line`.
    pub role: String,
    pub pid: u32,
    pub start_time: u64,
}
