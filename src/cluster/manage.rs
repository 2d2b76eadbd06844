//! `dynabed cluster status`, `down` and `restart`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::cleanup::{self, stop};
use super::files::Locked;
use super::launch::owned_process;
use super::reach::reach;
use super::ready::Started;
use super::running::{self, Cluster};
use super::runstate::RunState;
use crate::client::Client;
use netns::process::Spawned as ProcessRecord;

/// Prints one line per node: process, reachability, ring view, hints.
pub fn status(cluster_procs: &Path) -> anyhow::Result<()> {
    let cluster = Cluster::read(cluster_procs)?;
    let views = cluster.reach(|| async {
        let mut views = Vec::new();
        for node in cluster.nodes() {
            let mut client = Client::new(node.addr).with_timeout(Duration::from_secs(2));
            views.push(client.status().await.ok());
        }
        Ok(views)
    })?;
    let meta = cluster.meta();
    println!("cluster {} ({:?}, N={}, {} partitions)", meta.prefix, meta.mode, meta.n, meta.partitions);
    println!("{:<8} {:>8} {:<8} {:<10} {:>13} {:>6}", "node", "pid", "process", "reachable", "ring (alive)", "hints");
    let mut unhealthy = 0;
    for (node, view) in cluster.nodes().iter().zip(views) {
        let running = node.running().is_some();
        let (reachable, ring, hints) = match &view {
            Some(s) => {
                let alive = s.members.len() - s.down().count();
                ("yes", format!("{} ({alive})", s.members.len()), s.hints_pending.to_string())
            }
            None => ("no", "-".to_owned(), "-".to_owned()),
        };
        if !running || view.is_none() {
            unhealthy += 1;
        }
        let process = if running { "running" } else { "gone" };
        println!("{:<8} {:>8} {process:<8} {reachable:<10} {ring:>13} {hints:>6}", node.id, node.entry.pid);
    }
    if unhealthy > 0 {
        bail!("{unhealthy} node(s) not running or not reachable");
    }
    Ok(())
}

/// Stops every node the cluster files record (SIGTERM, then SIGKILL after a
/// grace period, only to processes whose pid and start time match), removes
/// everything the run state owns (namespaces, links, rules), and the
/// cluster files. Node data stays on disk.
pub fn down(cluster_procs: &Path) -> anyhow::Result<()> {
    let cluster = Cluster::read(cluster_procs)?;
    let records: Vec<ProcessRecord> = cluster.nodes().iter().filter_map(|n| n.process).collect();
    let stuck = stop(&records);
    if !stuck.is_empty() {
        bail!("these node processes would not stop: {stuck:?}; the cluster files are kept");
    }
    cleanup::cleanup(cluster.prefix())?;
    Locked::acquire(cluster_procs)?.remove()?;
    println!("stopped {} node(s) of cluster {}", cluster.nodes().len(), cluster.prefix());
    Ok(())
}

/// The recorded process of node `id`.
pub fn node_record(cluster_procs: &Path, id: &str) -> anyhow::Result<ProcessRecord> {
    let cluster = Cluster::read(cluster_procs)?;
    cluster.node(id)?.process.with_context(|| format!("the meta file records no process for {id}"))
}

/// How long a restarted node may take to serve (it may replay a journal).
const RESTART_LIMIT: Duration = Duration::from_secs(30);

/// Starts a stopped node again with its recorded command line, in its
/// namespace (so with its data directory and address), records its new
/// pid and start time in the cluster files and the run state, and waits
/// until that process serves. A node that exits instead is an error that
/// ends with its own last log lines.
pub fn restart(cluster_procs: &Path, id: &str) -> anyhow::Result<ProcessRecord> {
    let state = RunState::existing(Cluster::read(cluster_procs)?.prefix())?;
    restart_recorded(cluster_procs, id, state.as_ref())
}

/// [`restart`] for a caller that already holds the run state's lock.
pub fn restart_recorded(cluster_procs: &Path, id: &str, state: Option<&RunState>) -> anyhow::Result<ProcessRecord> {
    let locked = Locked::acquire(cluster_procs)?;
    let mut files = locked.read()?;
    let meta = files.meta.as_mut().with_context(|| format!("{} has no meta file", cluster_procs.display()))?;
    let client_netns = meta.client_netns.clone();
    let node = meta.nodes.get_mut(id).with_context(|| format!("no node {id:?} in the meta file"))?;
    let entry = files.procs.get_mut(id).with_context(|| format!("no node {id:?} in {}", cluster_procs.display()))?;
    let old = ProcessRecord { pid: entry.pid, start_time: node.start_time };
    if old.is_alive() {
        bail!("{id} is still running (pid {})", entry.pid);
    }
    let log = node.log.clone().unwrap_or_else(|| entry.data_dir.with_extension("log"));
    let record = netns::process::spawn_in(entry.netns.as_deref(), &node.argv, &log, &super::launch::node_env())?;
    if let Some(state) = state {
        state.update(|owned| {
            owned.processes.retain(|p| !(p.pid == old.pid && p.start_time == old.start_time));
            owned.processes.push(owned_process(id, record));
        })?;
    }
    entry.pid = record.pid;
    node.start_time = record.start_time;
    let addr = running::client_addr(entry)?;
    locked.write(&files)?;
    // A node started by hand registers itself under the files' lock.
    drop(locked);
    let started = Started { id, addr, process: record, log: Some(&log) };
    reach(client_netns.as_deref(), || started.wait_serving(RESTART_LIMIT))?;
    Ok(record)
}
