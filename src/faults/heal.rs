//! Healing from the journal: each record's undo steps, in order, then the
//! record goes. Every step is harmless when its change never happened, so
//! a heal is right after any crash of the applier, at any point.

use std::path::Path;

use anyhow::Context;

use super::admin::{app_fault, AppFaultCall};
use super::delay_daemon::{self, LineSite};
use super::exec::duplicate;
use super::exec::host::host_table;
use super::journal;
use crate::api::fault::{FaultRecord, Undo};
use crate::cluster::manage;
use crate::cluster::running::Cluster;
use crate::cluster::runstate::RunState;

/// Whom a heal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealFor {
    /// The cluster goes on: crashed nodes restart, nodes drop their app faults.
    Service,
    /// The cluster is about to be removed: steps pointless then (restarting
    /// or un-faulting nodes that will be stopped) are skipped.
    Teardown,
}

/// Heals every fault in the journal (or only `only`), removing each healed
/// record; returns the records healed.
pub fn heal(state: &RunState, only: Option<u32>, heal_for: HealFor) -> anyhow::Result<Vec<FaultRecord>> {
    let cluster_procs = state.owned()?.cluster_procs;
    let cluster = cluster_procs.as_deref().and_then(|p| Cluster::read(p).ok());
    let undoer = Undoer { state, cluster_procs: cluster_procs.as_deref(), cluster: cluster.as_ref(), heal_for };
    let mut healed = Vec::new();
    for record in journal::records(state)?.into_iter().filter(|r| only.is_none_or(|id| r.id == id)) {
        for step in &record.undo {
            undoer
                .run(step)
                .with_context(|| format!("healing fault {} ({:?} on {:?})", record.id, record.kind, record.targets))?;
        }
        journal::forget(state, record.id)?;
        healed.push(record);
    }
    Ok(healed)
}

struct Undoer<'a> {
    state: &'a RunState,
    cluster_procs: Option<&'a Path>,
    cluster: Option<&'a Cluster>,
    heal_for: HealFor,
}

impl Undoer<'_> {
    fn run(&self, step: &Undo) -> anyhow::Result<()> {
        let teardown = self.heal_for == HealFor::Teardown;
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
            Undo::DelayClear { addr, fault } => {
                // No daemon: the delay was never set, or it died with it.
                let site = LineSite::here(self.state, None)?;
                if let Some(daemon) = delay_daemon::running(self.state, &site)? {
                    delay_daemon::clear(self.state, &daemon, *fault, *addr)?;
                }
            }
            Undo::UndelayOnSites { sites, chain, addr, fault } => {
                delay_daemon::undelay(self.state, sites, chain, *addr, *fault)?;
            }
            Undo::DeleteNetdevTable { namespace, name } => {
                if netns::namespace::exists(namespace) {
                    duplicate::delete_table(namespace, name)?;
                }
            }
            Undo::StopIdleDelayLine => delay_daemon::stop_idle(self.state)?,
            Undo::DeleteHostTable { host, name } => {
                host_table(self.state, host, name)?.delete()?;
            }
            Undo::RemoveCgroup { name, host } => {
                self.state.owned()?.place(host.as_deref())?.release_cpu(name)?;
            }
            Undo::Continue { pid, start_time, host } => {
                let process = netns::process::Spawned { pid: *pid, start_time: *start_time };
                self.state.owned()?.place(host.as_deref())?.signal(process, netns::process::Signal::SIGCONT)?;
            }
            Undo::Restart { node } if !teardown => {
                let path = self.cluster_procs.context("the journal does not say which cluster file to restart from")?;
                // Restarting waits until it serves: a healed crash is a node that serves again.
                if !manage::node_running(path, node)? {
                    manage::restart_recorded(path, node, Some(self.state))?;
                }
            }
            Undo::HealApp { node } if !teardown => {
                let cluster = self.cluster.context("the cluster files are gone")?;
                app_fault(cluster, cluster.node(node)?, AppFaultCall::Lift)?;
            }
            Undo::Restart { .. } | Undo::HealApp { .. } => {}
        }
        Ok(())
    }
}
