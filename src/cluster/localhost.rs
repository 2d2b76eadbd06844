//! `localhost:<port>` inside a netns cluster's client namespace reaches the
//! node with that port, so that a tool written for the seed's
//! `cluster_procs.json` (a pid and a port per node, nodes on localhost)
//! works unchanged under `dynabed exec`.
//!
//! One nftables table in the client namespace does it: a map from client
//! port to node address, used by one DNAT rule on locally sent packets to
//! 127.0.0.1 (one rule and a map scale to a thousand nodes where a rule per
//! node would not), and a masquerade so that those packets leave with the
//! client's own address instead of 127.0.0.1. The kernel routes a packet
//! with a loopback source out of a real interface, and accepts the replies,
//! only with `route_localnet` on that interface, set here in the client
//! namespace alone. The table and the setting live and die with the client
//! namespace, which the run state owns: cleanup removes them with it. A
//! node restarted keeps its address and port, so the map never changes.

use std::net::Ipv4Addr;

use anyhow::Context;
use netns::command::{argv, in_netns, run_with_stdin};

/// Maps `127.0.0.1:<port>` to `<addr>:<port>` for each `(port, addr)`,
/// leaving through `interface`, inside `namespace`.
pub fn map_to_nodes(namespace: &str, interface: &str, table: &str, nodes: &[(u16, Ipv4Addr)]) -> anyhow::Result<()> {
    let setting = format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet");
    netns::namespace::run_in(namespace, || std::fs::write(&setting, "1"))?
        .with_context(|| format!("setting {setting} in namespace {namespace}"))?;
    let script = ruleset(interface, table, nodes);
    run_with_stdin(&in_netns(namespace, argv(&["nft", "-f", "-"])), Some(&script))
        .with_context(|| format!("mapping localhost ports to the nodes in namespace {namespace}"))?;
    Ok(())
}

/// The nftables script: one table holding the port map and both rules.
fn ruleset(interface: &str, table: &str, nodes: &[(u16, Ipv4Addr)]) -> String {
    let elements: Vec<String> = nodes.iter().map(|(port, addr)| format!("{port} : {addr}")).collect();
    format!(
        "table ip {table} {{
  map node_at_port {{
    type inet_service : ipv4_addr
    elements = {{ {} }}
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr 127.0.0.1 dnat to tcp dport map @node_at_port
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr 127.0.0.0/8 oifname \"{interface}\" masquerade
  }}
}}
",
        elements.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_map_entry_per_node_and_one_rule_for_all() {
        let nodes = [(60000, Ipv4Addr::new(198, 18, 0, 2)), (60001, Ipv4Addr::new(198, 18, 0, 3))];
        let script = ruleset("eth0", "dynabed_t_localhost", &nodes);
        assert!(script.starts_with("table ip dynabed_t_localhost {"), "{script}");
        assert!(script.contains("elements = { 60000 : 198.18.0.2, 60001 : 198.18.0.3 }"), "{script}");
        assert_eq!(script.matches("dnat").count(), 1, "{script}");
        assert!(script.contains("oifname \"eth0\" masquerade"), "{script}");
    }
}
