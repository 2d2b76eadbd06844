//! The cluster files — `cluster_procs.json` in the seed's format and
//! `cluster_procs.meta.json` beside it — and the processes a prefix's
//! run-state ledger records: read by every command that acts on a cluster,
//! written by `cluster up`, node registration and restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::hosts::Deployed;

/// One node as the seed's consumers expect it, plus where to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub pid: u32,
    pub port: u16,
    pub host: String,
    pub peer_port: u16,
    pub netns: Option<String>,
    pub data_dir: PathBuf,
    /// The SSH destination of the host it runs on (a cluster on hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Netns,
    Loopback,
    /// Nodes on hosts reached over SSH ([`Deployed`]).
    Hosts,
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
    /// The hosts, for a cluster on hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Deployed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The full command line, program first.
    pub argv: Vec<String>,
    /// The process's start time (clock ticks after boot, from
    /// /proc/PID/stat), so that a recycled pid is never signalled.
    pub start_time: u64,
    pub log: Option<PathBuf>,
    /// The name of its host, for a cluster on hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A process the cluster started, known by pid and start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedProcess {
    /// What it is, e.g. `node node3` or `delay-line`.
    pub role: String,
    pub pid: u32,
    pub start_time: u64,
    /// The host it runs on, when not this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}
