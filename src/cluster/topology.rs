//! The namespaced network of one cluster, as Mininet would build it: a hub
//! namespace holding a bridge, one namespace per node and one for clients,
//! each joined to the bridge by a veth pair, all addressed from the
//! benchmarking range 198.18.0.0/15.
//!
//! A Linux bridge takes at most 1,024 ports (BR_MAX_PORTS). A cluster with
//! more hosts gets several leaf bridges, each with up to ports − 1 hosts
//! and one trunk (a veth pair inside the hub) to a root bridge that holds
//! only trunks: one flat layer-2 network, every host one or three bridges
//! from any other.
//!
//! The host's own namespace gets no address and no route into it, so
//! nothing the test bed does can leak onto a real network; people reach the
//! cluster through the client namespace (`dynabed exec`, `dynabed get`).
//! Every namespace is recorded in the run state before it is created, so
//! cleanup finds it by ownership.

use std::net::Ipv4Addr;

use anyhow::Context;
use netns::{link, namespace};

use super::runstate::RunState;

/// 198.18.0.0/15: reserved for benchmarking (RFC 2544), never routed.
const NETWORK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const PREFIX_LEN: u8 = 15;
/// The only bridge of a small cluster; the root of a big one's.
const BRIDGE: &str = "br0";
/// The interface inside a node or client namespace.
pub const INSIDE: &str = "eth0";
/// Ports a Linux bridge takes (BR_MAX_PORTS in the kernel).
pub const BRIDGE_PORTS: u16 = 1024;

pub struct Topology {
    prefix: String,
    nodes: u16,
    bridge_ports: u16,
}

impl Topology {
    pub fn new(prefix: &str, nodes: u16) -> Self {
        Self::with_bridge_ports(prefix, nodes, BRIDGE_PORTS)
    }

    /// A topology whose bridges take at most `bridge_ports` ports (≥ 3):
    /// fewer than the kernel's limit only to test the multi-bridge layout.
    pub fn with_bridge_ports(prefix: &str, nodes: u16, bridge_ports: u16) -> Self {
        Topology { prefix: prefix.to_owned(), nodes, bridge_ports }
    }

    /// Hosts: the client and the nodes.
    fn host_count(&self) -> usize {
        usize::from(self.nodes) + 1
    }

    /// Leaf bridges, 0 when every host fits on the root bridge.
    pub fn leaf_bridges(&self) -> usize {
        let ports = usize::from(self.bridge_ports);
        if self.host_count() <= ports {
            0
        } else {
            self.host_count().div_ceil(ports - 1)
        }
    }

    /// The bridge host `h` (0 = the client, i = node i) is attached to.
    fn bridge_of(&self, h: usize) -> String {
        match self.leaf_bridges() {
            0 => BRIDGE.to_owned(),
            _ => format!("br{}", h / (usize::from(self.bridge_ports) - 1) + 1),
        }
    }

    pub fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    pub fn client(&self) -> String {
        format!("{}-client", self.prefix)
    }

    /// The client namespace's table that maps localhost ports to nodes.
    pub fn localhost_table(&self) -> String {
        format!("dynabed_{}_localhost", self.prefix)
    }

    /// Namespace of node `i` (1-based).
    pub fn node(&self, i: u16) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// The hub's end of node `i`'s veth pair; fits the 15-byte limit.
    pub fn hub_link(&self, i: u16) -> String {
        format!("{}-n{i}", self.prefix)
    }

    fn client_hub_link(&self) -> String {
        format!("{}-c", self.prefix)
    }

    pub fn client_addr() -> Ipv4Addr {
        offset(1)
    }

    /// Address of node `i` (1-based): node1 is 198.18.0.2.
    pub fn node_addr(i: u16) -> Ipv4Addr {
        offset(1 + u32::from(i))
    }

    /// Creates every namespace and link, recording each namespace first.
    pub fn build(&self, state: &RunState) -> anyhow::Result<()> {
        self.check_limits()?;
        let hub = self.hub();
        add_namespace(state, &hub)?;
        link::create_bridge(&hub, BRIDGE)?;
        link::set_up(&hub, BRIDGE)?;
        link::set_up(&hub, "lo")?;
        for leaf in 1..=self.leaf_bridges() {
            self.add_leaf(leaf).with_context(|| format!("adding leaf bridge {leaf}"))?;
        }
        let hosts = self.hosts();
        for host in &hosts {
            // A thousand namespaces take a while: a SIGINT or SIGTERM
            // stops between two (each recorded before it was made).
            anyhow::ensure!(!super::interrupt::requested(), "interrupted");
            self.attach(state, host).with_context(|| format!("wiring {}", host.namespace))?;
        }
        // Every host knows every other's MAC from the start: no ARP, and no
        // entry counted against the kernel's shared neighbour-table limit.
        let table: Vec<(Ipv4Addr, [u8; 6])> = hosts.iter().map(|h| (h.addr, h.mac)).collect();
        for host in &hosts {
            let others: Vec<_> = table.iter().copied().filter(|(addr, _)| *addr != host.addr).collect();
            link::add_neighbors(&host.namespace, INSIDE, &others)?;
        }
        Ok(())
    }

    /// Leaf bridge `brN` and its trunk to the root: a veth pair inside the
    /// hub, `trN` on the root and `tlN` on the leaf.
    fn add_leaf(&self, leaf: usize) -> anyhow::Result<()> {
        let hub = self.hub();
        let (bridge, root_end, leaf_end) = (format!("br{leaf}"), format!("tr{leaf}"), format!("tl{leaf}"));
        link::create_bridge(&hub, &bridge)?;
        link::create_veth(&hub, &root_end, &hub, &leaf_end)?;
        link::set_master(&hub, &root_end, BRIDGE)?;
        link::set_master(&hub, &leaf_end, &bridge)?;
        for name in [&bridge, &root_end, &leaf_end] {
            link::set_up(&hub, name)?;
        }
        Ok(())
    }

    /// Refuses, before anything is made, a cluster the kernel's limits
    /// would stop half-way: too many leaf bridges for the root's ports, or
    /// more namespaces than the mount table takes (`ip netns` bind-mounts
    /// each one under /run/netns).
    fn check_limits(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.bridge_ports >= 3, "a bridge needs at least 3 ports (two hosts and a trunk)");
        let leaves = self.leaf_bridges();
        anyhow::ensure!(
            leaves <= usize::from(self.bridge_ports),
            "{} hosts need {leaves} leaf bridges, more than the root bridge's {} ports",
            self.host_count(),
            self.bridge_ports
        );
        let max: usize = read_number("/proc/sys/fs/mount-max")?;
        let mounted =
            std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?.lines().count();
        let wanted = self.host_count() + 1;
        anyhow::ensure!(
            mounted + wanted <= max,
            "{wanted} namespaces need as many mounts: {mounted} of fs.mount-max = {max} are in use (raise it with sysctl)"
        );
        Ok(())
    }

    /// The client first, then the nodes.
    fn hosts(&self) -> Vec<Host> {
        let client = Host {
            namespace: self.client(),
            hub_link: self.client_hub_link(),
            bridge: self.bridge_of(0),
            addr: Self::client_addr(),
            mac: mac(0),
        };
        let nodes = (1..=self.nodes).map(|i| Host {
            namespace: self.node(i),
            hub_link: self.hub_link(i),
            bridge: self.bridge_of(usize::from(i)),
            addr: Self::node_addr(i),
            mac: mac(i),
        });
        std::iter::once(client).chain(nodes).collect()
    }

    fn attach(&self, state: &RunState, host: &Host) -> anyhow::Result<()> {
        let hub = self.hub();
        add_namespace(state, &host.namespace)?;
        link::create_veth(&hub, &host.hub_link, &host.namespace, INSIDE)?;
        link::set_master(&hub, &host.hub_link, &host.bridge)?;
        link::set_up(&hub, &host.hub_link)?;
        link::set_mac(&host.namespace, INSIDE, host.mac)?;
        link::add_ipv4(&host.namespace, INSIDE, host.addr, PREFIX_LEN)?;
        link::set_up(&host.namespace, INSIDE)?;
        link::set_up(&host.namespace, "lo")?;
        Ok(())
    }
}

/// One namespace on the bridge: the client or a node.
struct Host {
    namespace: String,
    hub_link: String,
    bridge: String,
    addr: Ipv4Addr,
    mac: [u8; 6],
}

/// A locally administered unicast MAC for host `i` (0 = the client);
/// unique on its bridge, and each cluster has a bridge of its own.
fn mac(i: u16) -> [u8; 6] {
    let [hi, lo] = i.to_be_bytes();
    [0x02, 0x64, 0x79, 0x00, hi, lo]
}

fn add_namespace(state: &RunState, name: &str) -> anyhow::Result<()> {
    state.update(|owned| owned.namespaces.push(name.to_owned()))?;
    namespace::create(name).with_context(|| format!("creating namespace {name}"))
}

fn read_number(path: &str) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.trim().parse().with_context(|| format!("{path} holds {text:?}, not a number"))
}

fn offset(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(NETWORK) + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_addresses_stay_in_the_benchmarking_range() {
        let t = Topology::new("abcdef", 250);
        assert!(t.hub_link(250).len() <= 15);
        assert_eq!(Topology::node_addr(1), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(Topology::node_addr(250), Ipv4Addr::new(198, 18, 0, 251));
        assert_eq!(Topology::client_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert!(Topology::new("abcdef", 2000).hub_link(2000).len() <= 15);
    }

    #[test]
    fn hosts_spread_over_leaf_bridges_past_the_port_limit() {
        assert_eq!(Topology::new("g", 1023).leaf_bridges(), 0, "1,024 hosts fit on one bridge");
        let big = Topology::new("g", 1000);
        assert_eq!(big.leaf_bridges(), 0);
        let bigger = Topology::new("g", 1024);
        assert_eq!(bigger.leaf_bridges(), 2);
        assert_eq!(bigger.bridge_of(1022), "br1");
        assert_eq!(bigger.bridge_of(1023), "br2");
        let small = Topology::with_bridge_ports("g", 12, 6);
        assert_eq!(small.leaf_bridges(), 3);
        let per_bridge = |b: &str| small.hosts().iter().filter(|h| h.bridge == b).count();
        assert_eq!([per_bridge("br1"), per_bridge("br2"), per_bridge("br3")], [5, 5, 3]);
    }
}
