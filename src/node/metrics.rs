//! The node's metrics: the event counters `/status` shows, latency
//! histograms of client requests and peer calls, gauges read at scrape
//! time and the process's own figures, all in one `prometheus-client`
//! registry, so that `/metrics` is OpenMetrics text any Prometheus scrapes
//! and `/status` and `/metrics` count from the same atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::process_metrics::ProcessCollector;
use super::storage::EngineMemory;

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        #[derive(Default)]
        pub struct Counters { $(pub $name: Counter,)* }

        impl Counters {
            /// Every counter with its help text, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name.get()),)*]
            }

            /// Registers every counter (sharing its value) as `<name>_total`.
            fn register(&self, registry: &mut Registry) {
                $(registry.register(stringify!($name), $help, self.$name.clone());)*
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
    pub fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    pub fn bump(counter: &Counter) {
        counter.inc();
    }
}

/// A client request, by what it asked and how it was answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `get`, `put`, `delete`, `status`, `metrics`, `admin` or `other`.
    op: &'static str,
    /// The HTTP status code of the answer.
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// A peer call, by the request it carried.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
    /// `ok`, or why no answer of the expected kind came.
    outcome: &'static str,
}

/// The figures a scrape reads from the node's state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    pub hints_pending: u64,
    pub members: u64,
    pub members_alive: u64,
    pub storage_ok: bool,
    pub storage_lost_records: bool,
    pub client_connections: u64,
    pub clock_entries_max: u64,
    pub engine: EngineMemory,
}

#[derive(Default)]
struct Gauges {
    hints_pending: Gauge,
    members: Gauge,
    members_alive: Gauge,
    storage_ok: Gauge,
    storage_lost_records: Gauge,
    client_connections: Gauge,
    clock_entries_max: Gauge,
    engine_write_buffer: Gauge,
    engine_cache: Gauge,
    engine_journals: Gauge,
}

impl Gauges {
    fn register(&self, registry: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 8] = [
            ("hints_pending", "hints waiting for their owner", &self.hints_pending),
            ("members", "members known", &self.members),
            ("members_alive", "members believed alive", &self.members_alive),
            ("storage_ok", "1 while the storage engine can make writes durable", &self.storage_ok),
            (
                "storage_lost_records",
                "1 if the engine was found to have lost records at start-up",
                &self.storage_lost_records,
            ),
            ("client_connections", "client connections open", &self.client_connections),
            ("clock_entries_max", "most version-vector entries an object stored here has had", &self.clock_entries_max),
            (
                "storage_journals",
                "journal files the engine keeps until its memtables are flushed",
                &self.engine_journals,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let bytes: [(&str, &str, &Gauge); 2] = [
            ("storage_write_buffer", "memtable bytes the engine holds, active and sealed", &self.engine_write_buffer),
            ("storage_cache", "table-block bytes in the engine's cache", &self.engine_cache),
        ];
        for (name, help, gauge) in bytes {
            registry.register_with_unit(name, help, Unit::Bytes, gauge.clone());
        }
    }

    fn set(&self, r: Readings) {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.hints_pending.set(as_i64(r.hints_pending));
        self.members.set(as_i64(r.members));
        self.members_alive.set(as_i64(r.members_alive));
        self.storage_ok.set(i64::from(r.storage_ok));
        self.storage_lost_records.set(i64::from(r.storage_lost_records));
        self.client_connections.set(as_i64(r.client_connections));
        self.clock_entries_max.set(as_i64(r.clock_entries_max));
        self.engine_write_buffer.set(as_i64(r.engine.write_buffer_bytes));
        self.engine_cache.set(as_i64(r.engine.cache_bytes));
        self.engine_journals.set(as_i64(r.engine.journals));
    }
}

/// Histogram buckets from 50 µs to about 6.5 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Everything `/metrics` exports.
pub struct Metrics {
    pub counters: std::sync::Arc<Counters>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<OpLabel, Histogram, fn() -> Histogram>,
    peer_call_seconds: Family<CallLabels, Histogram, fn() -> Histogram>,
    gauges: Gauges,
    registry: Registry,
}

impl Metrics {
    /// The registry of node `node` (a constant `node` label on every series
    /// but the process's).
    pub fn new(node: &str, counters: std::sync::Arc<Counters>) -> Metrics {
        let mut root = Registry::default();
        let registry =
            root.sub_registry_with_prefix("dynabed").sub_registry_with_label(("node".into(), node.to_owned().into()));
        counters.register(registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "client requests answered, by operation and HTTP status", requests.clone());
        let request_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "request_duration",
            "time from a client request's arrival to its answer",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let peer_call_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "peer_call_duration",
            "round trip of a request to a peer, dialling included, until its answer or its failure",
            Unit::Seconds,
            peer_call_seconds.clone(),
        );
        let gauges = Gauges::default();
        gauges.register(registry);
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build.get_or_create(&vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        registry.register("build_info", "1, labelled with the dynabed version running", build);
        root.register_collector(Box::new(ProcessCollector));
        Metrics { counters, requests, request_seconds, peer_call_seconds, gauges, registry: root }
    }

    /// A client request of kind `op` answered `status` after `seconds`.
    pub fn request(&self, op: &'static str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { op, status }).inc();
        self.request_seconds.get_or_create(&OpLabel { op }).observe(seconds);
    }

    /// A peer call carrying `call` ended with `outcome` after `seconds`.
    pub fn peer_call(&self, call: &'static str, outcome: &'static str, seconds: f64) {
        self.peer_call_seconds.get_or_create(&CallLabels { call, outcome }).observe(seconds);
    }

    /// The OpenMetrics text of everything, with the gauges read now.
    pub fn encode(&self, readings: Readings) -> String {
        self.gauges.set(readings);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing metrics into a String cannot fail");
        text
    }
}

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_gauge_and_histogram_is_exported_with_its_value() {
        let metrics = Metrics::new("node1", Default::default());
        Counters::add(&metrics.counters.hints_delivered, 7);
        metrics.request("get", 200, 0.003);
        metrics.peer_call("write", "ok", 0.0002);
        let text = metrics.encode(Readings { hints_pending: 3, storage_ok: true, ..Default::default() });
        assert!(text.contains("dynabed_hints_delivered_total{node=\"node1\"} 7"), "{text}");
        assert!(text.contains("dynabed_hints_pending{node=\"node1\"} 3"), "{text}");
        assert!(text.contains("dynabed_requests_total{node=\"node1\",op=\"get\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("dynabed_request_duration_seconds_count{node=\"node1\",op=\"get\"} 1"), "{text}");
        assert!(text.contains("dynabed_peer_call_duration_seconds_bucket{"), "{text}");
        assert!(text.contains("dynabed_build_info{node=\"node1\",version=\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        let counters = metrics.counters.snapshot().len();
        assert_eq!(text.matches("# TYPE dynabed_").count(), counters + 14, "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
