//! `dynabed cluster status`, `down` and `restart`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::cleanup;
use super::files::Locked;
use super::launch::owned_process;
use super::place::{by_place, stop_everywhere};
use super::reach::reach;
use super::ready::Started;
use super::running::{self, Cluster};
use super::runstate::RunState;
use crate::client::Client;
use netns::process::Spawned as ProcessRecord;

/// One node as `cluster status` shows it.
#[derive(Debug, serde::Serialize)]
pub struct NodeState {
    pub id: String,
    pub pid: u32,
    /// The recorded process is still the one that was started.
    pub running: bool,
    /// It answered `/status`.
    pub reachable: bool,
    /// Members in its ring, and those it believes alive (when reachable).
    pub members: Option<usize>,
    pub alive: Option<usize>,
    pub hints_pending: Option<u64>,
}

/// The cluster as `cluster status --json` shows it.
#[derive(Debug, serde::Serialize)]
pub struct ClusterState {
    pub prefix: String,
    pub mode: String,
    pub n: u8,
    pub partitions: u32,
    pub nodes: Vec<NodeState>,
}

/// Prints each node's process, reachability, ring view and hints, as a
/// table or as JSON; fails when a node is not running or not reachable.
pub fn status(cluster_procs: &Path, json: bool) -> anyhow::Result<()> {
    let state = gather(cluster_procs)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print!("{}", render(&state));
    }
    let unhealthy = state.nodes.iter().filter(|n| !n.running || !n.reachable).count();
    if unhealthy > 0 {
        bail!("{unhealthy} node(s) not running or not reachable");
    }
    Ok(())
}

fn gather(cluster_procs: &Path) -> anyhow::Result<ClusterState> {
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
    let nodes = cluster
        .nodes()
        .iter()
        .zip(views)
        .map(|(node, view)| NodeState {
            id: node.id.clone(),
            pid: node.entry.pid,
            running: node.running().is_some(),
            reachable: view.is_some(),
            members: view.as_ref().map(|s| s.members.len()),
            alive: view.as_ref().map(|s| s.members.len() - s.down().count()),
            hints_pending: view.as_ref().map(|s| s.hints_pending),
        })
        .collect();
    Ok(ClusterState {
        prefix: meta.prefix.clone(),
        mode: format!("{:?}", meta.mode).to_lowercase(),
        n: meta.n,
        partitions: meta.partitions,
        nodes,
    })
}

fn render(state: &ClusterState) -> String {
    let mut out =
        format!("cluster {} ({}, N={}, {} partitions)\n", state.prefix, state.mode, state.n, state.partitions);
    out += &format!(
        "{:<8} {:>8} {:<8} {:<10} {:>13} {:>6}\n",
        "node", "pid", "process", "reachable", "ring (alive)", "hints"
    );
    for node in &state.nodes {
        let ring = match (node.members, node.alive) {
            (Some(members), Some(alive)) => format!("{members} ({alive})"),
            _ => "-".to_owned(),
        };
        let hints = node.hints_pending.map_or("-".to_owned(), |h| h.to_string());
        let process = if node.running { "running" } else { "gone" };
        let reachable = if node.reachable { "yes" } else { "no" };
        out += &format!("{:<8} {:>8} {process:<8} {reachable:<10} {ring:>13} {hints:>6}\n", node.id, node.pid);
    }
    out
}

/// Stops every node the cluster files record (SIGTERM, then SIGKILL after a
/// grace period, only to processes whose pid and start time match), removes
/// everything the run state owns (namespaces, links, rules), and the
/// cluster files. Node data stays on disk.
pub fn down(cluster_procs: &Path) -> anyhow::Result<()> {
    let cluster = Cluster::read(cluster_procs)?;
    let stuck = stop_nodes(cluster.nodes())?;
    if !stuck.is_empty() {
        bail!("these node processes would not stop: {stuck:?}; the cluster files are kept");
    }
    cleanup::cleanup(cluster.prefix())?;
    Locked::acquire(cluster_procs)?.remove()?;
    println!("stopped {} node(s) of cluster {}", cluster.nodes().len(), cluster.prefix());
    Ok(())
}

/// Stops the nodes' processes, every host (this machine being one) at
/// once; the pids that survived.
fn stop_nodes(nodes: &[running::Node]) -> anyhow::Result<Vec<u32>> {
    let groups = by_place(nodes.iter().filter_map(|n| Some((n.place.clone(), n.process?))));
    Ok(stop_everywhere(&groups, Duration::from_secs(5))?.1)
}

/// The recorded process of node `id`.
pub fn node_record(cluster_procs: &Path, id: &str) -> anyhow::Result<ProcessRecord> {
    let cluster = Cluster::read(cluster_procs)?;
    cluster.node(id)?.process.with_context(|| format!("the meta file records no process for {id}"))
}

/// Whether the recorded process of node `id` still runs, where it lives.
pub fn node_running(cluster_procs: &Path, id: &str) -> anyhow::Result<bool> {
    let cluster = Cluster::read(cluster_procs)?;
    Ok(cluster.node(id)?.running().is_some())
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
    let entry = files.procs.get_mut(id).with_context(|| format!("no node {id:?} in {}", cluster_procs.display()))?;
    let host = meta.nodes.get(id).and_then(|n| n.host.clone());
    let place = running::place_of(meta, host.as_deref(), entry)?;
    let node = meta.nodes.get_mut(id).with_context(|| format!("no node {id:?} in the meta file"))?;
    let old = ProcessRecord { pid: entry.pid, start_time: node.start_time };
    if place.is_alive(old) {
        bail!("{id} is still running (pid {})", entry.pid);
    }
    let log = node.log.clone().unwrap_or_else(|| entry.data_dir.with_extension("log"));
    let record = place.spawn(&node.argv, &log, &super::launch::node_env())?;
    if let Some(state) = state {
        state.update(|owned| {
            let host = place.host_name().map(str::to_owned);
            owned.processes.retain(|p| !(p.pid == old.pid && p.start_time == old.start_time && p.host == host));
            owned.processes.push(owned_process(id, record, host.as_deref()));
        })?;
    }
    entry.pid = record.pid;
    node.start_time = record.start_time;
    let addr = running::client_addr(entry)?;
    locked.write(&files)?;
    // A node started by hand registers itself under the files' lock.
    drop(locked);
    let started = Started { id, addr, process: record, log: Some(&log), place: &place };
    reach(client_netns.as_deref(), || started.wait_serving(RESTART_LIMIT))?;
    Ok(record)
}
