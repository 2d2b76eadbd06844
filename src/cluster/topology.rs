//! The namespaced network of one cluster, as Mininet would build it: a hub
//! namespace holding a bridge, one namespace per node and one for clients,
//! each joined to the bridge by a veth pair, all addressed from the
//! benchmarking range 198.18.0.0/15.
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
const BRIDGE: &str = "br0";
/// The interface inside a node or client namespace.
const INSIDE: &str = "eth0";

pub struct Topology {
    prefix: String,
    nodes: u16,
}

impl Topology {
    pub fn new(prefix: &str, nodes: u16) -> Self {
        Topology { prefix: prefix.to_owned(), nodes }
    }

    pub fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    pub fn client(&self) -> String {
        format!("{}-client", self.prefix)
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
        let hub = self.hub();
        add_namespace(state, &hub)?;
        link::create_bridge(&hub, BRIDGE)?;
        link::set_up(&hub, BRIDGE)?;
        link::set_up(&hub, "lo")?;
        let hosts = self.hosts();
        for host in &hosts {
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

    /// The client first, then the nodes.
    fn hosts(&self) -> Vec<Host> {
        let client =
            Host { namespace: self.client(), hub_link: self.client_hub_link(), addr: Self::client_addr(), mac: mac(0) };
        let nodes = (1..=self.nodes).map(|i| Host {
            namespace: self.node(i),
            hub_link: self.hub_link(i),
            addr: Self::node_addr(i),
            mac: mac(i),
        });
        std::iter::once(client).chain(nodes).collect()
    }

    fn attach(&self, state: &RunState, host: &Host) -> anyhow::Result<()> {
        let hub = self.hub();
        add_namespace(state, &host.namespace)?;
        link::create_veth(&hub, &host.hub_link, &host.namespace, INSIDE)?;
        link::set_master(&hub, &host.hub_link, BRIDGE)?;
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
    }
}
