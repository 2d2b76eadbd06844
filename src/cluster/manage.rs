//! `dynabed cluster status`, `down` and `restart`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::cleanup::{self, stop};
use super::files::{self, Locked};
use super::launch::{client_addr, owned_process, record_of};
use super::reach::reach;
use super::ready::Started;
use super::runstate::RunState;
use crate::client::Client;
use netns::process::Spawned as ProcessRecord;

/// Prints one line per node: process, reachability, ring view, hints.
pub fn status(cluster_procs: &Path) -> anyhow::Result<()> {
    let (procs, meta) = files::read_cluster(cluster_procs)?;
    let mut ids: Vec<&String> = procs.keys().collect();
    ids.sort_by_key(|id| files::natural_key(id));
    let views = reach(meta.client_netns.as_deref(), || async {
        let mut views = Vec::new();
        for id in &ids {
            let mut client = Client::new(client_addr(&procs[*id])?).with_timeout(Duration::from_secs(2));
            views.push(client.status().await.ok());
        }
        Ok(views)
    })?;
    println!("cluster {} ({:?}, N={}, {} partitions)", meta.prefix, meta.mode, meta.n, meta.partitions);
    println!("{:<8} {:>8} {:<8} {:<10} {:>13} {:>6}", "node", "pid", "process", "reachable", "ring (alive)", "hints");
    let mut unhealthy = 0;
    for (id, view) in ids.iter().zip(views) {
        let entry = &procs[*id];
        let running = record_of(&meta, id, entry).is_some_and(|r| r.is_alive());
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
        println!("{id:<8} {:>8} {process:<8} {reachable:<10} {ring:>13} {hints:>6}", entry.pid);
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
    let (procs, meta) = files::read_cluster(cluster_procs)?;
    let records: Vec<ProcessRecord> = procs.iter().filter_map(|(id, e)| record_of(&meta, id, e)).collect();
    let stuck = stop(&records);
    if !stuck.is_empty() {
        bail!("these node processes would not stop: {stuck:?}; the cluster files are kept");
    }
    cleanup::cleanup(&meta.prefix)?;
    Locked::acquire(cluster_procs)?.remove()?;
    println!("stopped {} node(s) of cluster {}", procs.len(), meta.prefix);
    Ok(())
}

/// The recorded process of node `id`.
pub fn node_record(cluster_procs: &Path, id: &str) -> anyhow::Result<ProcessRecord> {
    let (procs, meta) = files::read_cluster(cluster_procs)?;
    procs
        .get(id)
        .and_then(|entry| record_of(&meta, id, entry))
        .with_context(|| format!("no node {id:?} in {}", cluster_procs.display()))
}

/// How long a restarted node may take to serve (it may replay a journal).
const RESTART_LIMIT: Duration = Duration::from_secs(30);

/// Starts a stopped node again with its recorded command line, in its
/// namespace (so with its data directory and address), records its new
/// pid and start time in the cluster files and the run state, and waits
/// until that process serves. A node that exits instead is an error that
/// ends with its own last log lines.
pub fn restart(cluster_procs: &Path, id: &str) -> anyhow::Result<ProcessRecord> {
    let prefix = files::read_cluster(cluster_procs)?.1.prefix;
    let state = RunState::existing(&prefix)?;
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
    let record = netns::process::spawn_in(entry.netns.as_deref(), &node.argv, &log, &[])?;
    if let Some(state) = state {
        state.update(|owned| {
            owned.processes.retain(|p| !(p.pid == old.pid && p.start_time == old.start_time));
            owned.processes.push(owned_process(id, record));
        })?;
    }
    entry.pid = record.pid;
    node.start_time = record.start_time;
    let addr = client_addr(entry)?;
    locked.write(&files)?;
    // A node started by hand registers itself under the files' lock.
    drop(locked);
    let started = Started { id, addr, process: record, log: Some(&log) };
    reach(client_netns.as_deref(), || started.wait_serving(RESTART_LIMIT))?;
    Ok(record)
}
