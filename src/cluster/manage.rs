//! `dynabed cluster status` and `dynabed cluster down`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::files::{self, Locked};
use super::launch::{client_addr, record_of, stop_all};
use crate::client::Client;
use netns::process::Spawned as ProcessRecord;

/// Prints one line per node: process, reachability, ring view, hints.
pub async fn status(cluster_procs: &Path) -> anyhow::Result<()> {
    let (procs, meta) = files::read_cluster(cluster_procs)?;
    let mut ids: Vec<&String> = procs.keys().collect();
    ids.sort_by_key(|id| files::natural_key(id));
    println!("cluster {} ({:?}, N={}, {} partitions)", meta.prefix, meta.mode, meta.n, meta.partitions);
    println!("{:<8} {:>8} {:<8} {:<10} {:>13} {:>6}", "node", "pid", "process", "reachable", "ring (alive)", "hints");
    let mut unhealthy = 0;
    for id in ids {
        let entry = &procs[id];
        let running = record_of(&meta, id, entry).is_some_and(|r| r.is_alive());
        let status = Client::new(client_addr(entry)?)
            .with_timeout(Duration::from_secs(2))
            .status()
            .await
            .ok()
            .and_then(|a| a.json().ok());
        let (reachable, ring, hints) = match &status {
            Some(s) => {
                let members = s["members"].as_array().map(Vec::as_slice).unwrap_or_default();
                let alive = members.iter().filter(|m| m["alive"] == true).count();
                ("yes", format!("{} ({alive})", members.len()), s["hints_pending"].to_string())
            }
            None => ("no", "-".to_owned(), "-".to_owned()),
        };
        if !running || status.is_none() {
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

/// Stops every recorded node (SIGTERM, then SIGKILL after a grace period,
/// only to processes whose pid and start time match) and removes the
/// cluster files. Node data stays on disk.
pub fn down(cluster_procs: &Path) -> anyhow::Result<()> {
    let locked = Locked::acquire(cluster_procs)?;
    let files = locked.read()?;
    let Some(meta) = files.meta else {
        bail!("no cluster described by {}: nothing to stop", cluster_procs.display());
    };
    let stuck = stop_all(&files.procs, &meta);
    if !stuck.is_empty() {
        bail!("these nodes would not stop: {stuck:?}; the cluster files are kept");
    }
    locked.remove()?;
    println!("stopped {} node(s) of cluster {}", files.procs.len(), meta.prefix);
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

/// Starts a stopped node again with its recorded command line (so with its
/// data directory and address), and records its new pid and start time.
pub fn restart(cluster_procs: &Path, id: &str) -> anyhow::Result<ProcessRecord> {
    let locked = Locked::acquire(cluster_procs)?;
    let mut files = locked.read()?;
    let meta = files.meta.as_mut().with_context(|| format!("{} has no meta file", cluster_procs.display()))?;
    let node = meta.nodes.get_mut(id).with_context(|| format!("no node {id:?} in the meta file"))?;
    let entry = files.procs.get_mut(id).with_context(|| format!("no node {id:?} in {}", cluster_procs.display()))?;
    if (ProcessRecord { pid: entry.pid, start_time: node.start_time }).is_alive() {
        bail!("{id} is still running (pid {})", entry.pid);
    }
    let log = node.log.clone().unwrap_or_else(|| entry.data_dir.with_extension("log"));
    let record = netns::process::spawn_in(None, &node.argv, &log, &[])?;
    entry.pid = record.pid;
    node.start_time = record.start_time;
    locked.write(&files)?;
    Ok(record)
}
