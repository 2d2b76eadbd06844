//! Executors: one per mechanism that makes a fault, in the spirit of
//! Jepsen's nemeses. Each knows, for its fault on one target, the undo
//! steps (journaled before anything changes), how to make the change, and
//! a probe that it took effect. `super::apply` picks one per fault and
//! keeps the journal around it.

pub mod app;
pub mod check;
pub mod cpu;
pub mod delay;
pub mod duplicate;
pub mod host;
pub mod loss;
pub mod netem;
pub mod partition;
pub mod shape;
pub mod signal;
pub mod skew;

use anyhow::{bail, Context};
use netns::process::Spawned;

use crate::api::cluster::Mode;
use crate::api::fault::{Backend, PortSelector, Undo};
use crate::cluster::running::{Cluster, Node};
use crate::cluster::runstate::RunState;
use crate::cluster::topology::Topology;

/// The commands a change ran, as argument vectors.
pub type Commands = Vec<Vec<String>>;

/// How a change failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The kernel lacks the mechanism; nothing was changed, so another
    /// executor (the [`Executor::fallback`]) may take over.
    #[error("{backend} is not supported here")]
    Unsupported {
        backend: Backend,
        #[source]
        source: netns::qdisc::QdiscError,
    },
    #[error(transparent)]
    Firewall(#[from] netns::firewall::FirewallError),
    #[error(transparent)]
    Qdisc(#[from] netns::qdisc::QdiscError),
    #[error(transparent)]
    Cgroup(#[from] netns::cgroup::CgroupError),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// One way of making one fault.
pub trait Executor {
    fn backend(&self) -> Backend;
    /// The steps that heal the change, known before it is made.
    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>>;
    /// Makes the change; returns the commands run.
    fn apply(&self, target: &Target) -> Result<Commands, ChangeError>;
    /// A probe that the change took effect, as text for the record.
    fn verify(&self, target: &Target) -> anyhow::Result<String>;
    /// Whether this machine has the mechanism, asked before anything is
    /// journaled or changed; when not, the reason (as `dynabed doctor`
    /// gives it). Most mechanisms are checked by `cluster up` already.
    fn available(&self, _target: &Target) -> Result<(), String> {
        Ok(())
    }
    /// The executor to use when this one is [`ChangeError::Unsupported`].
    fn fallback(&self) -> Option<Box<dyn Executor>> {
        None
    }
}

/// The node a fault is applied to, with its cluster and run state.
pub struct Target<'a> {
    /// The fault's id in the journal.
    pub id: u32,
    pub state: &'a RunState,
    pub cluster: &'a Cluster,
    pub node: &'a Node,
    /// The node's process, when it runs.
    pub process: Option<Spawned>,
}

impl Target<'_> {
    /// The node's process; an error when it is not running.
    pub fn running(&self) -> anyhow::Result<Spawned> {
        self.process.with_context(|| format!("{} is not running", self.name()))
    }

    /// Kernel faults act on the namespaces of a namespaced cluster.
    pub fn namespaced(&self) -> anyhow::Result<()> {
        if self.cluster.mode() != Mode::Netns {
            bail!("kernel faults need a namespaced cluster; this one runs on loopback: use --fault_layer app");
        }
        Ok(())
    }

    /// The namespace whose bridge joins every node.
    pub fn hub(&self) -> String {
        Topology::new(self.cluster.prefix(), 0).hub()
    }

    /// The port number a fault's selector picks; `None` for all traffic.
    pub fn port(&self, selector: PortSelector) -> Option<u16> {
        match selector {
            PortSelector::All => None,
            PortSelector::Peer => Some(self.node.entry.peer_port),
            PortSelector::Client => Some(self.node.entry.port),
        }
    }

    /// The node's id, e.g. `node3`.
    pub fn name(&self) -> &str {
        &self.node.id
    }

    /// Both ends of the node's link: (namespace, device), shaped each its way.
    pub fn links(&self) -> anyhow::Result<Vec<(String, String)>> {
        let index: u16 = self
            .name()
            .strip_prefix("node")
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("{} is not a launched node", self.name()))?;
        let topology = Topology::new(self.cluster.prefix(), 0);
        Ok(vec![(topology.hub(), topology.hub_link(index)), (topology.node(index), "eth0".to_owned())])
    }

    /// Clearing the root qdisc of both ends of the node's link.
    pub fn clear_links(&self) -> anyhow::Result<Vec<Undo>> {
        self.namespaced()?;
        Ok(self.links()?.into_iter().map(|(namespace, device)| Undo::ClearQdisc { namespace, device }).collect())
    }

    /// The fault's nftables table in the hub.
    pub fn table_name(&self) -> String {
        format!("dynabed_fault{}", self.id)
    }

    /// Deleting the fault's table in the hub.
    pub fn delete_table(&self) -> anyhow::Result<Vec<Undo>> {
        self.namespaced()?;
        Ok(vec![Undo::DeleteBridgeTable { namespace: self.hub(), name: self.table_name() }])
    }
}
