//! The node's counters, shown by `/status` (JSON) and `/metrics`
//! (Prometheus text) from one list, so the two can never disagree.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        #[derive(Default)]
        pub struct Counters { $(pub $name: AtomicU64,)* }

        impl Counters {
            /// Every counter with its help text, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    gets: "client reads coordinated by this node",
    puts: "client writes coordinated by this node",
    deletes: "client deletes coordinated by this node",
    forwarded: "client writes forwarded to a node of the key's preference list",
    sloppy_coordinated: "client writes coordinated here with this node's dot because no preference-list node answered",
    fail_fast: "client requests answered 503 at once because fewer than R or W replicas were reachable",
    quorum_failures: "client requests answered 503 for want of a quorum",
    bad_requests: "client requests rejected as malformed",
    replica_reads: "replica reads served to peers",
    replica_writes: "replica writes merged from peers",
    read_repairs: "stale replicas written back after a read",
    hints_stored: "hints this node stored for an unreachable replica",
    hints_delivered: "hints handed back to their owner",
    prune_events: "version-vector entries pruned (by age beyond --prune_limit, or beyond --prune_max)",
    tombstones_reaped: "tombstones removed after every replica held them",
    ae_keys_sent: "keys sent by background anti-entropy",
    ae_keys_received: "keys received by background anti-entropy",
    peer_errors: "peer requests that failed or timed out",
    gossip_answered: "gossip swaps this node started that were answered",
    gossip_unanswered: "gossip swaps this node started that got no answer",
    peer_auth_failures: "peer connections refused for failing the cluster-secret handshake",
    peer_connections_refused: "peer connections closed at once because the peer port was full",
    client_connections_refused: "client connections closed at once because the client port was full",
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    /// Prometheus exposition of the counters plus a few gauges.
    pub fn prometheus(&self, node: &str, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        for (name, help, value) in self.snapshot() {
            let _ = writeln!(out, "# HELP dynabed_{name}_total {help}\n# TYPE dynabed_{name}_total counter");
            let _ = writeln!(out, "dynabed_{name}_total{{node=\"{node}\"}} {value}");
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP dynabed_{name} {help}\n# TYPE dynabed_{name} gauge");
            let _ = writeln!(out, "dynabed_{name}{{node=\"{node}\"}} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lists_every_counter_with_its_value() {
        let c = Counters::default();
        Counters::add(&c.hints_delivered, 7);
        let text = c.prometheus("node1", &[("hints_pending", "hints waiting", 3)]);
        assert!(text.contains("dynabed_hints_delivered_total{node=\"node1\"} 7"));
        assert!(text.contains("dynabed_hints_pending{node=\"node1\"} 3"));
        assert_eq!(text.matches("# TYPE").count(), c.snapshot().len() + 1);
    }
}
