//! The ports of a launched cluster, as the seed numbers them: node i
//! listens on `base + i − 1` for clients and 1000 above for peers, in every
//! mode, so that a tool written for the seed's `cluster_procs.json` (a pid
//! and a port per node, on localhost) finds each node by its port. Past
//! 1000 nodes the client ports would run into the peer ports, so the peer
//! ports move up by a further 1000 per thousand nodes (2000 above for up to
//! 2000 nodes): no port is ever two nodes'.
//!
//! Those ports lie inside Linux's default ephemeral range (32768–60999):
//! an outgoing connection could take a node's port before the node binds
//! it. `net.ipv4.ip_local_reserved_ports` is per namespace, so every
//! namespace a netns cluster creates reserves the cluster's ports; on
//! loopback the host's setting is the user's, and is only reported.

use std::ops::RangeInclusive;

use anyhow::{bail, Context};

/// The peer port's distance from the client port, as the seed has it.
const PEER_OFFSET: u16 = 1000;

const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
const EPHEMERAL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Client and peer ports of `nodes` nodes numbered from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    base: u16,
    nodes: u16,
    peer_offset: u16,
}

impl Ports {
    /// Refuses, in one line, a plan whose ports would pass 65535.
    pub fn new(base: u16, nodes: u16) -> anyhow::Result<Self> {
        let peer_offset = u32::from(PEER_OFFSET) * u32::from(nodes.max(1)).div_ceil(u32::from(PEER_OFFSET));
        let last = u32::from(base) + peer_offset + u32::from(nodes) - 1;
        if last > u32::from(u16::MAX) {
            bail!("--base_port {base}: {nodes} nodes need peer ports up to {last}, past 65535 (lower --base_port)");
        }
        Ok(Ports { base, nodes, peer_offset: peer_offset as u16 })
    }

    /// Node `i`'s (1-based) client port.
    pub fn client(&self, i: u16) -> u16 {
        self.base + i - 1
    }

    /// Node `i`'s (1-based) peer port.
    pub fn peer(&self, i: u16) -> u16 {
        self.client(i) + self.peer_offset
    }

    fn ranges(&self) -> [RangeInclusive<u16>; 2] {
        [self.client(1)..=self.client(self.nodes), self.peer(1)..=self.peer(self.nodes)]
    }

    /// The ranges as `ip_local_reserved_ports` takes them: `60000-60004,61000-61004`.
    pub fn reservation(&self) -> String {
        self.ranges().iter().map(|r| format!("{}-{}", r.start(), r.end())).collect::<Vec<_>>().join(",")
    }

    /// Reserves the cluster's ports against ephemeral use inside `namespace`
    /// (a fresh one of ours, whose list is empty).
    pub fn reserve_in(&self, namespace: &str) -> anyhow::Result<()> {
        let list = self.reservation();
        netns::namespace::run_in(namespace, || std::fs::write(RESERVED, &list))?
            .with_context(|| format!("reserving ports {list} in namespace {namespace}"))
    }

    /// On loopback, what the host's own settings leave open: a note when
    /// some of the cluster's ports are ephemeral and not reserved.
    pub fn host_note(&self) -> anyhow::Result<Option<String>> {
        let ephemeral = read_ranges(EPHEMERAL, char::is_whitespace)?;
        let reserved = read_ranges(RESERVED, |c| c == ',')?;
        let exposed: Vec<u16> = self
            .ranges()
            .into_iter()
            .flatten()
            .filter(|p| ephemeral.iter().any(|r| r.contains(p)) && !reserved.iter().any(|r| r.contains(p)))
            .collect();
        Ok((!exposed.is_empty()).then(|| {
            // The setting replaces the list: the suggestion keeps what it holds.
            let mut wanted: Vec<u16> = reserved.into_iter().flatten().chain(exposed.iter().copied()).collect();
            wanted.sort_unstable();
            wanted.dedup();
            format!(
                "note: ports {} of this cluster lie in the host's ephemeral range and are not reserved: an outgoing connection may take one before its node binds it (the node then fails with `Address already in use` naming the port); dynabed leaves the host's sysctls alone: reserve them with `sysctl -w net.ipv4.ip_local_reserved_ports={}`",
                as_list(&exposed),
                as_list(&wanted)
            )
        }))
    }
}

/// Ascending ports as `ip_local_reserved_ports` writes them: `60000-60002,60005`.
fn as_list(ports: &[u16]) -> String {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &port in ports {
        match runs.last_mut() {
            Some((_, last)) if u32::from(*last) + 1 == u32::from(port) => *last = port,
            _ => runs.push((port, port)),
        }
    }
    let run = |&(first, last): &(u16, u16)| if first == last { first.to_string() } else { format!("{first}-{last}") };
    runs.iter().map(run).collect::<Vec<_>>().join(",")
}

/// Port ranges in a /proc file: `32768 60999` (one range, blank-separated)
/// or `60000-60004,61000` (a list).
fn read_ranges(path: &str, separator: fn(char) -> bool) -> anyhow::Result<Vec<RangeInclusive<u16>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_ranges(&text, separator).with_context(|| format!("{path} holds {text:?}"))
}

fn parse_ranges(text: &str, separator: fn(char) -> bool) -> anyhow::Result<Vec<RangeInclusive<u16>>> {
    let numbers = |s: &str| -> anyhow::Result<RangeInclusive<u16>> {
        let (low, high) = s.split_once('-').unwrap_or((s, s));
        Ok(low.trim().parse()?..=high.trim().parse()?)
    };
    if separator(' ') {
        let bounds: Vec<&str> = text.split_whitespace().collect();
        let [low, high] = bounds[..] else { bail!("not two port numbers") };
        return numbers(&format!("{low}-{high}")).map(|r| vec![r]);
    }
    text.split(separator).map(str::trim).filter(|s| !s.is_empty()).map(numbers).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_i_gets_the_seeds_ports() {
        let ports = Ports::new(60000, 5).unwrap();
        assert_eq!((ports.client(1), ports.peer(1)), (60000, 61000));
        assert_eq!((ports.client(5), ports.peer(5)), (60004, 61004));
        assert_eq!(ports.reservation(), "60000-60004,61000-61004");
    }

    #[test]
    fn past_1000_nodes_peer_ports_move_up_so_no_port_is_two_nodes() {
        let thousand = Ports::new(60000, 1000).unwrap();
        assert_eq!((thousand.client(1000), thousand.peer(1)), (60999, 61000));
        let more = Ports::new(40000, 1001).unwrap();
        assert_eq!((more.client(1001), more.peer(1), more.peer(1001)), (41000, 42000, 43000));
    }

    #[test]
    fn plans_past_65535_are_refused_in_one_line() {
        assert!(Ports::new(64535, 1).is_ok(), "peer port 65535 is the last one");
        let past = Ports::new(64535, 2).unwrap_err().to_string();
        assert!(past.contains("up to 65536, past 65535") && !past.contains('\n'), "{past}");
        assert_eq!(Ports::new(60000, 2000).unwrap().peer(2000), 63999, "the default base takes 2000 nodes");
    }

    #[test]
    fn ports_list_as_runs() {
        assert_eq!(as_list(&[60000, 60001, 60002, 60005, 61000, 61001]), "60000-60002,60005,61000-61001");
        assert_eq!(as_list(&[]), "");
    }

    #[test]
    fn proc_port_lists_parse() {
        assert_eq!(parse_ranges("32768\t60999\n", char::is_whitespace).unwrap(), vec![32768..=60999]);
        let list = parse_ranges("60000-60004,61000\n", |c| c == ',').unwrap();
        assert_eq!(list, vec![60000..=60004, 61000..=61000]);
        assert!(parse_ranges("\n", |c| c == ',').unwrap().is_empty());
    }
}
