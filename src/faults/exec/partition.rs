//! Partitions: the target and the nodes `with` it on one side, the rest of
//! the cluster on the other; cut in the hub's bridge (kernel) or by the
//! nodes themselves (app).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;
use netns::firewall::{Family, Rule, Table};

use super::app::{amend_faults, reported_faults};
use super::{ChangeError, Commands, Executor, Target};
use crate::api::admin::Partition;
use crate::api::fault::{Backend, Undo};
use crate::api::fault::{Clients, CutDirection};
use crate::cluster::running::Node;
use crate::cluster::topology::Topology;

/// Drops, in the hub's bridge, the packets between the two sides (and the
/// clients, when isolated), both ways or one.
pub struct HubCut {
    pub with: Vec<String>,
    pub direction: CutDirection,
    pub clients: Clients,
}

impl Executor for HubCut {
    fn backend(&self) -> Backend {
        Backend::NftBridge
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.delete_table()
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let table = Table::new(&target.hub(), Family::Bridge, &target.table_name());
        let mut applied = table.create()?;
        let sides = Sides { target, with: &self.with };
        let ours: Vec<IpAddr> = sides.ours().map(|n| n.addr.ip()).collect();
        let mut theirs: Vec<IpAddr> = sides.theirs().map(|n| n.addr.ip()).collect();
        if self.clients == Clients::Isolate {
            theirs.push(IpAddr::V4(Topology::client_addr()));
        }
        for (&ours, &theirs) in ours.iter().flat_map(|s| theirs.iter().map(move |o| (s, o))) {
            let rule = match self.direction {
                CutDirection::Both => Rule::DropBetween { a: ours, b: theirs },
                CutDirection::In => Rule::DropOneWay { from: theirs, to: ours },
                CutDirection::Out => Rule::DropOneWay { from: ours, to: theirs },
            };
            applied.extend(table.add_rule(&rule)?);
        }
        Ok(applied.commands)
    }

    /// From another node's namespace the target's peer port no longer
    /// answers; from the client namespace its client port still does
    /// (unless clients are cut too).
    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        let (peer, client) = (target.node.peer_addr(), target.node.addr);
        let Some(other) = (Sides { target, with: &self.with }).theirs().next() else {
            return Ok("no other node to probe from".into());
        };
        let other_ns = other.entry.netns.clone().context("a namespaced node without a namespace")?;
        // On a local bridge a handshake takes microseconds; a dropped SYN
        // never answers, so a short timeout tells them apart.
        let probe = |addr: SocketAddr| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok();
        let from_peer = netns::namespace::run_in(&other_ns, || probe(peer))?;
        anyhow::ensure!(!from_peer, "{other_ns} still connects to {peer}");
        let client_ns = target.cluster.meta().client_netns.clone().context("no client namespace")?;
        let from_client = netns::namespace::run_in(&client_ns, || probe(client))?;
        anyhow::ensure!(from_client != (self.clients == Clients::Isolate), "clients reach {client}: {from_client}");
        Ok(format!(
            "{other_ns} cannot connect to {peer}; clients {} {client}",
            if from_client { "reach" } else { "cannot reach" }
        ))
    }
}

/// Each node of the target's side drops every message to and from the
/// other side (or from all peers, when the split is one node against the rest).
pub struct NodeCut {
    pub with: Vec<String>,
}

impl Executor for NodeCut {
    fn backend(&self) -> Backend {
        Backend::AdminApi
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.running()?;
        let side = std::iter::once(target.name()).chain(self.with.iter().map(String::as_str));
        Ok(side.map(|node| Undo::HealApp { node: node.to_owned() }).collect())
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let sides = Sides { target, with: &self.with };
        let partition = if self.with.is_empty() {
            Partition::All
        } else {
            Partition::Peers(sides.theirs().map(|n| n.id.clone()).collect())
        };
        let commands =
            sides.ours().map(|node| amend_faults(target, node, |faults| faults.partition = partition.clone()));
        Ok(commands.collect::<anyhow::Result<_>>()?)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        reported_faults(target)
    }
}

/// The two sides of a split.
pub(super) struct Sides<'a> {
    pub target: &'a Target<'a>,
    pub with: &'a [String],
}

impl<'a> Sides<'a> {
    /// The target and the nodes grouped with it.
    pub fn ours(&self) -> impl Iterator<Item = &'a Node> + use<'a, '_> {
        self.target.cluster.nodes().iter().filter(|n| self.is_ours(&n.id))
    }

    pub fn theirs(&self) -> impl Iterator<Item = &'a Node> + use<'a, '_> {
        self.target.cluster.nodes().iter().filter(|n| !self.is_ours(&n.id))
    }

    fn is_ours(&self, id: &str) -> bool {
        id == self.target.name() || self.with.iter().any(|w| w == id)
    }
}
