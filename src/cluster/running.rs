//! A running cluster, read once from its files: its nodes by id in natural
//! order (node2 before node10), where to reach each, which process each is,
//! and how to run client code where they can be reached.
//!
//! Every part of the test bed that acts on a cluster — the fault injector,
//! the driver, the people's client — starts from this one view instead of
//! unpacking the cluster files itself.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use netns::process::Spawned as ProcessRecord;

use super::files;
use super::place::Place;
use crate::api::cluster::{Meta, Mode, NodeEntry};
use crate::client::Client;

/// The cluster described by one `cluster_procs.json` and its meta file.
#[derive(Debug, Clone)]
pub struct Cluster {
    procs_path: PathBuf,
    meta: Meta,
    nodes: Vec<Node>,
}

/// One node of a running cluster.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub entry: NodeEntry,
    /// Its client (HTTP) address.
    pub addr: SocketAddr,
    /// The very process started for it (pid and start time), when the meta
    /// file knows it.
    pub process: Option<ProcessRecord>,
    /// Where that process lives.
    pub place: Place,
}

impl Node {
    /// Its peer-protocol address.
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.entry.peer_port)
    }

    /// The process, if it still runs.
    pub fn running(&self) -> Option<ProcessRecord> {
        self.process.filter(|&p| self.place.is_alive(p))
    }
}

impl Cluster {
    /// Reads the cluster files, or says how to start a cluster.
    pub fn read(procs_path: &Path) -> anyhow::Result<Cluster> {
        Self::read_if_any(procs_path)?.with_context(|| {
            format!(
                "no cluster described by {}: start one with `dynabed cluster up --nodes 3` or pass --cluster_procs",
                procs_path.display()
            )
        })
    }

    /// The cluster the files describe; `None` when they describe none.
    pub fn read_if_any(procs_path: &Path) -> anyhow::Result<Option<Cluster>> {
        let read = files::read_unlocked(procs_path)?;
        let meta = match read.meta {
            Some(meta) if !read.procs.is_empty() => meta,
            _ => return Ok(None),
        };
        let mut nodes = read
            .procs
            .into_iter()
            .map(|(id, entry)| {
                let addr = client_addr(&entry)?;
                let node_meta = meta.nodes.get(&id);
                let process = node_meta.map(|m| ProcessRecord { pid: entry.pid, start_time: m.start_time });
                let place = place_of(&meta, node_meta.and_then(|m| m.host.as_deref()), &entry)?;
                Ok(Node { id, entry, addr, process, place })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        nodes.sort_by_key(|n| files::natural_key(&n.id));
        Ok(Some(Cluster { procs_path: procs_path.to_owned(), meta, nodes }))
    }

    pub fn procs_path(&self) -> &Path {
        &self.procs_path
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn prefix(&self) -> &str {
        &self.meta.prefix
    }

    pub fn mode(&self) -> Mode {
        self.meta.mode
    }

    /// The namespace clients run in; `None` on loopback.
    pub fn client_netns(&self) -> Option<&str> {
        self.meta.client_netns.as_deref()
    }

    /// The nodes in natural order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The node `id`, or an error naming the nodes there are.
    pub fn node(&self, id: &str) -> anyhow::Result<&Node> {
        self.nodes.iter().find(|n| n.id == id).with_context(|| {
            let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
            format!("no node {id:?} in {} (nodes: {})", self.procs_path.display(), ids.join(", "))
        })
    }

    /// A client of `node` that may call the admin API.
    pub fn admin(&self, node: &Node, timeout: Duration) -> Client {
        Client::new(node.addr).with_token(Some(self.meta.admin_token.clone())).with_timeout(timeout)
    }

    /// Runs client code where the nodes can be reached (see [`super::reach`]).
    pub fn reach<T: Send, F>(&self, make: impl FnOnce() -> F + Send) -> anyhow::Result<T>
    where
        F: Future<Output = anyhow::Result<T>>,
    {
        super::reach::reach(self.client_netns(), make)
    }
}

/// Where a node's process lives: on its host, or here in its namespace.
pub fn place_of(meta: &Meta, host: Option<&str>, entry: &NodeEntry) -> anyhow::Result<Place> {
    match (host, &meta.hosts) {
        (Some(name), Some(deployed)) => Place::host(deployed, name),
        (Some(name), None) => anyhow::bail!("the meta file puts a node on host {name} but lists no hosts"),
        (None, _) => Ok(Place::Local { netns: entry.netns.clone() }),
    }
}

/// A node entry's client address.
pub fn client_addr(entry: &NodeEntry) -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::new(
        entry.host.parse().with_context(|| format!("bad host {:?} in the cluster file", entry.host))?,
        entry.port,
    ))
}
