//! Network faults on a cluster on hosts: an nftables `inet` table in the
//! network stack of each host that holds a target, with the same rules as
//! the hub's bridge table of a local cluster, written over SSH.
//!
//! A host has no hub that sees every packet, but each node binds its own
//! address and sends from it, so a rule on a node's host that matches its
//! address catches exactly its traffic, both ways (input and output hooks;
//! two nodes of one host talk over `lo`, which the same hooks see). The
//! table is named with the cluster's prefix and the fault's id: hosts are
//! shared, and only this fault's table is ever deleted.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use anyhow::Context;
use netns::firewall::{Direction, Family, Rule, Table};

use super::partition::Sides;
use super::{ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, Clients, CutDirection, Undo};
use crate::cluster::place::Place;
use crate::cluster::running::Node;
use crate::cluster::runstate::RunState;
use crate::cluster::ssh::Ssh;

/// The partition of a cluster on hosts: on the host of each node of the
/// target's side, its packets to and from the other side are dropped.
pub struct HostCut {
    pub with: Vec<String>,
    pub direction: CutDirection,
    pub clients: Clients,
}

impl Executor for HostCut {
    fn backend(&self) -> Backend {
        Backend::NftHost
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        delete_tables(target, &self.sides(target).ours().collect::<Vec<_>>())
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let sides = self.sides(target);
        let ours: Vec<&Node> = sides.ours().collect();
        let mut theirs: Vec<IpAddr> = sides.theirs().map(|n| n.addr.ip()).collect();
        refuse_shared(target, &ours)?;
        if self.clients == Clients::Isolate {
            theirs.push(control_addr(target.node)?);
        }
        let rules = ours.iter().map(|node| {
            let own = node.addr.ip();
            let cut = theirs.iter().map(move |&other| match self.direction {
                CutDirection::Both => Rule::DropBetween { a: own, b: other },
                CutDirection::In => Rule::DropOneWay { from: other, to: own },
                CutDirection::Out => Rule::DropOneWay { from: own, to: other },
            });
            (*node, cut.collect())
        });
        Ok(write_tables(target, rules.collect())?)
    }

    /// Every node of the other side, on its own host, no longer reaches
    /// the target's peer port; this machine (the clients) still reaches
    /// its client port, unless clients are cut too.
    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        let Some(other) = self.sides(target).theirs().next() else {
            return Ok("no other node to probe from".into());
        };
        let peer = target.node.peer_addr();
        let reaches = probe(&other.place, other.addr.ip(), peer)?;
        anyhow::ensure!(!reaches, "{} still connects to {peer}", other.id);
        let from_clients = std::net::TcpStream::connect_timeout(&target.node.addr, PROBE_TIMEOUT).is_ok();
        anyhow::ensure!(
            from_clients != (self.clients == Clients::Isolate),
            "clients reach {}: {from_clients}",
            target.node.addr
        );
        Ok(format!(
            "{} cannot connect to {peer}; clients {} {}",
            other.id,
            if from_clients { "reach" } else { "cannot reach" },
            target.node.addr
        ))
    }
}

impl HostCut {
    fn sides<'a>(&'a self, target: &'a Target<'a>) -> Sides<'a> {
        Sides { target, with: &self.with }
    }
}

/// Random loss on a cluster on hosts: on the target's host, `pct` % of its
/// packets dropped each way.
pub struct HostLoss {
    pub pct: u8,
}

impl Executor for HostLoss {
    fn backend(&self) -> Backend {
        Backend::NftHost
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        delete_tables(target, &[target.node])
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        refuse_shared(target, &[target.node])?;
        let addr = target.node.addr.ip();
        let rules = [Direction::From, Direction::To]
            .map(|direction| Rule::RandomLoss { addr, direction, percent: self.pct })
            .to_vec();
        Ok(write_tables(target, vec![(target.node, rules)])?)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        let (host, table) = (host_of(target.node)?, table_name(target));
        let listed = ssh_of(&target.node.place)?.run(&nft(&["list", "table", "inet", &table]), None)?;
        anyhow::ensure!(listed.contains("numgen random"), "table {table} on {host} holds no loss rule: {listed}");
        Ok(format!("table {table} on {host} drops {} % each way", self.pct))
    }
}

/// A fault's table on host `host` of the cluster `state` owns, as its
/// journal names it.
pub fn host_table(state: &RunState, host: &str, name: &str) -> anyhow::Result<Table> {
    let deployed = state.owned()?.hosts.context("the run state lists no hosts")?;
    Ok(Table::at(Ssh::of(&deployed, host)?.site(), Family::Inet, name))
}

/// How long a probe waits for a handshake: hosts are a LAN away, not a
/// local bridge, and a dropped SYN never answers.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The table of `target`'s fault on every host.
fn table_name(target: &Target) -> String {
    format!("dynabed_{}_fault{}", target.cluster.prefix(), target.id)
}

fn host_of(node: &Node) -> anyhow::Result<&str> {
    node.place.host_name().with_context(|| format!("{} does not run on a host", node.id))
}

fn ssh_of(place: &Place) -> anyhow::Result<&Ssh> {
    match place {
        Place::Host(ssh) => Ok(ssh),
        Place::Local { .. } => anyhow::bail!("not a host"),
    }
}

/// A rule on an address catches every node bound to it: refuse when a
/// node outside `ours` shares an address with one of them.
fn refuse_shared(target: &Target, ours: &[&Node]) -> anyhow::Result<()> {
    for node in ours {
        let other =
            target.cluster.nodes().iter().find(|n| n.addr.ip() == node.addr.ip() && !ours.iter().any(|o| o.id == n.id));
        if let Some(other) = other {
            anyhow::bail!(
                "{} and {} share {} on host {}: a kernel fault on one would hit both; give the host an address per node (addrs in the hosts file) or use --fault_layer app",
                node.id,
                other.id,
                node.addr.ip(),
                host_of(node)?
            );
        }
    }
    Ok(())
}

/// One undo step per host holding one of `nodes`.
fn delete_tables(target: &Target, nodes: &[&Node]) -> anyhow::Result<Vec<Undo>> {
    let mut hosts: Vec<String> = nodes.iter().map(|n| host_of(n).map(str::to_owned)).collect::<anyhow::Result<_>>()?;
    hosts.sort();
    hosts.dedup();
    Ok(hosts.into_iter().map(|host| Undo::DeleteHostTable { host, name: table_name(target) }).collect())
}

/// Writes, on each node's host, one table holding the rules of all its
/// nodes, in one `nft -f` transaction per host (all of it or nothing).
fn write_tables(target: &Target, rules: Vec<(&Node, Vec<Rule>)>) -> anyhow::Result<Commands> {
    let mut by_host: BTreeMap<&str, (&Place, Vec<Rule>)> = BTreeMap::new();
    for (node, node_rules) in rules {
        by_host.entry(host_of(node)?).or_insert_with(|| (&node.place, Vec::new())).1.extend(node_rules);
    }
    let table = table_name(target);
    let mut commands = Vec::new();
    for (host, (place, rules)) in by_host {
        let script = script(&table, &rules)?;
        let ssh = ssh_of(place)?;
        let argv = nft(&["-f", "-"]);
        ssh.run(&argv, Some(&script)).with_context(|| format!("writing table {table} on host {host}"))?;
        commands.push(ssh.argv(&argv));
    }
    Ok(commands)
}

/// The nft script of one table: its rules in a `faults` chain that the
/// input and output hooks jump to.
fn script(table: &str, rules: &[Rule]) -> anyhow::Result<String> {
    let mut statements = Vec::new();
    for rule in rules {
        statements.extend(rule.statements()?.into_iter().map(|s| format!("    {}", s.join(" "))));
    }
    let hook = |name: &str| {
        format!("  chain {name} {{\n    type filter hook {name} priority 0; policy accept;\n    jump faults\n  }}\n")
    };
    Ok(format!(
        "table inet {table} {{\n  chain faults {{\n{}\n  }}\n{}{}}}\n",
        statements.join("\n"),
        hook("input"),
        hook("output")
    ))
}

fn nft(args: &[&str]) -> Vec<String> {
    std::iter::once("nft").chain(args.iter().copied()).map(str::to_owned).collect()
}

/// Whether `place` (a host) connects to `to` from its node address `from`.
fn probe(place: &Place, from: IpAddr, to: SocketAddr) -> anyhow::Result<bool> {
    place.connects(from, to, PROBE_TIMEOUT)
}

/// This machine's address towards `node`'s host: where clients come from.
fn control_addr(node: &Node) -> anyhow::Result<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
    socket.connect(node.addr).with_context(|| format!("finding the route to {}", node.addr))?;
    Ok(socket.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_table_drops_both_ways_from_its_own_chain_hooked_in_and_out() {
        let (a, b) = ("198.19.1.11".parse().unwrap(), "198.19.2.11".parse().unwrap());
        let script = script("dynabed_p_fault3", &[Rule::DropBetween { a, b }]).unwrap();
        assert!(script.starts_with("table inet dynabed_p_fault3 {"), "{script}");
        assert!(script.contains("ip saddr 198.19.1.11 ip daddr 198.19.2.11 drop"), "{script}");
        assert!(script.contains("ip saddr 198.19.2.11 ip daddr 198.19.1.11 drop"), "{script}");
        assert!(script.contains("type filter hook input priority 0; policy accept;"), "{script}");
        assert!(script.contains("type filter hook output priority 0; policy accept;"), "{script}");
        assert_eq!(script.matches("jump faults").count(), 2, "{script}");
    }
}
