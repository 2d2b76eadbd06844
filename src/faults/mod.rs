//! Faults as data, with a heal that always happens.
//!
//! Applying a fault first writes its record — what it is, and the list of
//! undo steps that heal it — to the cluster's run state, then changes the
//! kernel or the processes, then records the exact commands and the result
//! of a verification probe. Healing runs the undo steps. Because the record
//! precedes the change, `dynabed cleanup` can heal from the journal even
//! after the applying process was SIGKILLed halfway (each undo step is
//! harmless when its change never happened).

pub mod apply;
pub mod delay_daemon;
pub mod delay_line;
pub mod leftovers;
pub mod plan;

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::cluster::files::{self, Meta, NodeEntry};
use crate::cluster::launch::client_addr;
use crate::cluster::manage;
use crate::cluster::reach::reach;
use crate::cluster::runstate::{OwnedProcess, RunState};

/// One applied fault, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub id: u32,
    pub kind: Kind,
    pub targets: Vec<String>,
    pub layer: Layer,
    /// Which mechanism ran: `nft-bridge`, `signal`, `admin-api`, ...
    pub backend: String,
    pub applied_at_ms: u64,
    /// Exactly what was run, as argument vectors.
    pub commands: Vec<Vec<String>>,
    /// What the probe after applying saw.
    pub verified: Option<String>,
    /// Steps that heal it, in order.
    pub undo: Vec<Undo>,
    /// The process that keeps the fault in force, when the kernel alone
    /// does not (the delay-line daemon). Journaled before it is asked to.
    #[serde(default)]
    pub held_by: Option<OwnedProcess>,
}

impl FaultRecord {
    /// Why the fault is no longer in force although nobody healed it: the
    /// process holding it is gone, and its effect with it. `None` while it
    /// holds (or when no process holds it).
    pub fn lapse(&self) -> Option<String> {
        let holder = self.held_by.as_ref().filter(|p| !p.record().is_alive())?;
        Some(format!(
            "its {} process (pid {}) exited, so {} no longer has this fault",
            holder.role,
            holder.pid,
            self.targets.join(",")
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Crash,
    Slow,
    Partition,
    Pause,
    Loss,
    Bandwidth,
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Kernel,
    App,
}

impl Layer {
    /// The name on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Kernel => "kernel",
            Layer::App => "app",
        }
    }
}

/// One step that heals (part of) a fault; each is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Undo {
    /// Delete an nftables table in a namespace (the bridge family: rules in the hub).
    DeleteBridgeTable { namespace: String, name: String },
    /// SIGCONT a paused node, if it is still that process.
    Continue { pid: u32, start_time: u64 },
    /// Restart a crashed node from its recorded command line.
    Restart { node: String },
    /// `DELETE /admin/fault` on a node.
    HealApp { node: String },
    /// Remove the root qdisc of a link.
    ClearQdisc { namespace: String, device: String },
    /// Move a cgroup's processes back to its parent and remove it.
    RemoveCgroup { name: String },
    /// Remove an iptables chain (and its jump from FORWARD) in a namespace.
    RemoveForwardChain { namespace: String, name: String },
    /// Stop delaying an address on the delay line.
    DelayClear { addr: std::net::Ipv4Addr },
    /// Stop the delay line once it delays nothing (it releases held packets first).
    StopIdleDelayLine,
}

/// Heals every fault in the journal (or only `only`), removing each healed
/// record. `for_cleanup` skips steps pointless for a cluster about to be
/// removed (restarting or un-faulting nodes that will be stopped).
pub fn heal(state: &RunState, only: Option<u32>, for_cleanup: bool) -> anyhow::Result<Vec<FaultRecord>> {
    let owned = state.owned()?;
    let cluster = owned.cluster_procs.as_deref().and_then(|p| files::read_cluster(p).ok());
    let mut healed = Vec::new();
    for record in owned.faults.iter().filter(|r| only.is_none_or(|id| r.id == id)) {
        for step in &record.undo {
            run_undo(step, record, state, cluster.as_ref(), owned.cluster_procs.as_deref(), for_cleanup)
                .with_context(|| format!("healing fault {} ({:?} on {:?})", record.id, record.kind, record.targets))?;
        }
        state.update(|o| o.faults.retain(|r| r.id != record.id))?;
        healed.push(record.clone());
    }
    Ok(healed)
}

type Cluster = (std::collections::BTreeMap<String, NodeEntry>, Meta);

fn run_undo(
    step: &Undo,
    record: &FaultRecord,
    state: &RunState,
    cluster: Option<&Cluster>,
    cluster_procs: Option<&std::path::Path>,
    for_cleanup: bool,
) -> anyhow::Result<()> {
    match step {
        Undo::DeleteBridgeTable { namespace, name } => {
            if netns::namespace::exists(namespace) {
                netns::firewall::Table::new(namespace, netns::firewall::Family::Bridge, name).delete()?;
            }
        }
        Undo::ClearQdisc { namespace, device } => {
            if netns::namespace::exists(namespace) {
                netns::qdisc::clear(namespace, device)?;
            }
        }
        Undo::RemoveForwardChain { namespace, name } => {
            if netns::namespace::exists(namespace) {
                netns::firewall::Chain::forward(namespace, name)?.remove()?;
            }
        }
        Undo::DelayClear { addr } => {
            // No holder journaled: the delay was never set.
            if let Some(daemon) = &record.held_by {
                delay_daemon::clear(state, daemon, *addr)?;
            }
        }
        Undo::StopIdleDelayLine => delay_daemon::stop_if_idle(state)?,
        Undo::RemoveCgroup { name } => {
            netns::cgroup::CpuGroup::open(name)?.remove()?;
        }
        Undo::Continue { pid, start_time } => {
            netns::process::Spawned { pid: *pid, start_time: *start_time }.signal(netns::process::Signal::SIGCONT);
        }
        Undo::Restart { node } if !for_cleanup => {
            let path = cluster_procs.context("the journal does not say which cluster file to restart from")?;
            // Restarting waits until it serves: a healed crash is a node that serves again.
            if !manage::node_record(path, node)?.is_alive() {
                manage::restart_recorded(path, node, Some(state))?;
            }
        }
        Undo::HealApp { node } if !for_cleanup => {
            let (procs, meta) = cluster.context("the cluster files are gone")?;
            let entry = procs.get(node).with_context(|| format!("no node {node}"))?;
            admin(meta, entry, hyper::Method::DELETE, "fault", None)?;
        }
        Undo::Restart { .. } | Undo::HealApp { .. } => {}
    }
    Ok(())
}

/// An admin request to one node, from where the cluster is reachable.
fn admin(
    meta: &Meta,
    entry: &NodeEntry,
    method: hyper::Method,
    route: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let addr = client_addr(entry)?;
    let token = meta.admin_token.clone();
    let path = format!("/admin/{route}");
    reach(meta.client_netns.as_deref(), || async move {
        let mut client = Client::new(addr).with_token(Some(token)).with_timeout(Duration::from_secs(5));
        let body = body.map(|b| bytes::Bytes::from(b.to_string())).unwrap_or_default();
        let answer = client.send(method, &path, None, body).await?;
        anyhow::ensure!(answer.status.is_success(), "{path} on {addr}: {} {}", answer.status, answer.reason());
        answer.json().map_err(anyhow::Error::msg)
    })
}
