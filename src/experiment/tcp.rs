//! TCP counters of each node's network namespace (netns clusters only):
//! connections opened (handshakes) and segments retransmitted. Faults made
//! in the kernel show up here; faults made inside the node mostly do not —
//! one of the places where the two layers differ.

use std::collections::BTreeMap;

use crate::api::cluster::NodeEntry;
use crate::api::run::TcpCounters;

/// Each namespaced node's counters; empty on a loopback cluster, whose
/// nodes share the host's counters with everything else.
pub fn snapshot(nodes: &[(String, NodeEntry)]) -> BTreeMap<String, TcpCounters> {
    nodes
        .iter()
        .filter_map(|(id, entry)| {
            let namespace = entry.netns.as_deref()?;
            // /proc/thread-self/net is the calling thread's namespace.
            let text = netns::namespace::run_in(namespace, || std::fs::read_to_string("/proc/thread-self/net/snmp"))
                .ok()?
                .ok()?;
            Some((id.clone(), parse(&text)?))
        })
        .collect()
}

/// `after − before` per node (counters belong to the namespace, so they
/// survive a node's restart; a namespace made anew counts in full).
pub fn delta(
    before: &BTreeMap<String, TcpCounters>,
    after: &BTreeMap<String, TcpCounters>,
) -> BTreeMap<String, TcpCounters> {
    after
        .iter()
        .map(|(id, now)| {
            let then = before.get(id).copied().unwrap_or_default();
            let since = |n: u64, t: u64| n.checked_sub(t).unwrap_or(n);
            let diff = TcpCounters {
                active_opens: since(now.active_opens, then.active_opens),
                passive_opens: since(now.passive_opens, then.passive_opens),
                retransmitted_segments: since(now.retransmitted_segments, then.retransmitted_segments),
            };
            (id.clone(), diff)
        })
        .collect()
}

/// The `Tcp:` header and value lines of /proc/net/snmp.
fn parse(snmp: &str) -> Option<TcpCounters> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let field = |name: &str| {
        let at = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(at)?.parse().ok()
    };
    Some(TcpCounters {
        active_opens: field("ActiveOpens")?,
        passive_opens: field("PassiveOpens")?,
        retransmitted_segments: field("RetransSegs")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tcp_lines_of_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin ActiveOpens PassiveOpens RetransSegs\nTcp: 1 200 7 5 3\n";
        assert_eq!(parse(snmp), Some(TcpCounters { active_opens: 7, passive_opens: 5, retransmitted_segments: 3 }));
        assert_eq!(parse("Ip: x\nIp: 1\n"), None);
    }
}
