//! The driver's view of a running cluster: its nodes, how to reach them,
//! and the admin calls it makes on all of them at once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::admin::SwitchChange;
use crate::api::cluster::{Meta, NodeEntry};
use crate::api::ring::Ring;
use crate::api::status::{Status, Switches};
use crate::client::{Client, ClientError};
use crate::cluster::running::Cluster;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ClusterView {
    cluster: Cluster,
    /// Node ids in natural order (node2 before node10); indices everywhere
    /// else refer to this order.
    pub ids: Vec<String>,
    pub addrs: Vec<SocketAddr>,
}

impl ClusterView {
    /// Reads the cluster files and checks that `n` is the cluster's N.
    pub fn open(procs_path: &Path, n: usize) -> anyhow::Result<ClusterView> {
        let cluster = Cluster::read(procs_path)?;
        let meta = cluster.meta();
        if meta.n as usize != n {
            bail!(
                "--N {n} does not match the cluster's N = {} (set by `cluster up --N`): pass --N {} or start a cluster with --N {n}",
                meta.n,
                meta.n
            );
        }
        let ids = cluster.ids();
        let addrs = cluster.nodes().iter().map(|node| node.addr).collect();
        Ok(ClusterView { cluster, ids, addrs })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn meta(&self) -> &Meta {
        self.cluster.meta()
    }

    pub fn procs_path(&self) -> &Path {
        self.cluster.procs_path()
    }

    /// The current node entries (pids change when a crashed node restarts).
    pub fn entries(&self) -> anyhow::Result<Vec<(String, NodeEntry)>> {
        let now = Cluster::read(self.procs_path())?;
        Ok(now.nodes().iter().filter(|n| self.ids.contains(&n.id)).map(|n| (n.id.clone(), n.entry.clone())).collect())
    }

    /// Runs client code where the nodes can be reached.
    pub fn reach<T: Send, F>(&self, make: impl FnOnce() -> F + Send) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        self.cluster.reach(make)
    }

    pub fn admin(&self, index: usize) -> Client {
        self.cluster.admin(&self.cluster.nodes()[index], ADMIN_TIMEOUT)
    }

    /// `GET /status` of every node, in order.
    pub async fn statuses(&self) -> Vec<anyhow::Result<Status>> {
        let calls = (0..self.ids.len()).map(|i| async move {
            let mut client = self.admin(i).with_timeout(Duration::from_secs(3));
            client.status().await.with_context(|| format!("{} does not answer", self.ids[i]))
        });
        futures::future::join_all(calls).await
    }

    /// Every node's status; an error naming the nodes that do not answer.
    pub async fn all_answer(&self) -> anyhow::Result<Vec<Status>> {
        let mut answered = Vec::new();
        let mut silent = Vec::new();
        for (id, status) in self.ids.iter().zip(self.statuses().await) {
            match status {
                Ok(status) => answered.push(status),
                Err(_) => silent.push(id.as_str()),
            }
        }
        if !silent.is_empty() {
            bail!(
                "{} of {} nodes do not answer ({}): see `dynabed cluster status --cluster_procs {}`; restart a node with `dynabed cluster restart NODE`",
                silent.len(),
                self.ids.len(),
                silent.join(", "),
                self.procs_path().display()
            );
        }
        Ok(answered)
    }

    /// One admin call (`what`, for errors) on each of the nodes `on`, in parallel.
    pub async fn admin_on<T, F>(&self, on: &[usize], what: &str, call: impl Fn(Client) -> F) -> Vec<anyhow::Result<T>>
    where
        F: std::future::Future<Output = Result<T, ClientError>>,
    {
        let calls = on.iter().map(|&i| {
            let answer = call(self.admin(i));
            async move { answer.await.with_context(|| format!("{}: {what}", self.ids[i])) }
        });
        futures::future::join_all(calls).await
    }

    /// Sets hint delivery and background anti-entropy on the nodes `on`.
    pub async fn switch(&self, on: &[usize], to: Switches) -> anyhow::Result<()> {
        let change = SwitchChange::from(to);
        let set = self.admin_on(on, "config", |mut client| async move { client.set_switches(change).await }).await;
        set.into_iter().collect::<anyhow::Result<Vec<_>>>().map(drop)
    }

    /// The ring the nodes agree on, from one node's status.
    pub fn ring(status: &Status) -> anyhow::Result<Ring> {
        Ok(Ring::new(status.ring.members.iter().cloned(), status.ring.partitions)?)
    }
}
