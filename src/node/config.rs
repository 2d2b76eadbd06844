//! Everything a node can be told at start-up, as command-line flags.
//!
//! The struct is the clap definition itself, so flag names, defaults and
//! help text live in one place. The seed's underscore spellings are the
//! names; kebab-case spellings are aliases.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::storage::{Durability, EngineKind, MemoryBudget};

#[derive(Debug, Clone, Args)]
pub struct NodeConfig {
    /// This node's name, unique in the cluster (e.g. node1).
    #[arg(long, value_parser = parse_node_id)]
    pub id: String,
    /// Client HTTP port.
    #[arg(long)]
    pub port: u16,
    /// Address to listen on and to advertise to peers.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Peer protocol port [default: port + 1000].
    #[arg(long = "peer_port", visible_alias = "peer-port")]
    pub peer_port: Option<u16>,
    /// Peers to join through, as host:peer_port, comma-separated. Without
    /// seeds the node registers itself in --cluster_procs and joins the nodes
    /// listed there.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<SocketAddr>,
    /// Cluster file to register in (without --seeds) and to read the admin
    /// token from.
    #[arg(long = "cluster_procs", visible_alias = "cluster-procs", default_value = "cluster_procs.json")]
    pub cluster_procs: PathBuf,
    /// Where the node keeps its data [default: data/<id>].
    #[arg(long = "data_dir", visible_alias = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Storage engine: fjall (persistent) or memory.
    #[arg(long, default_value = "fjall")]
    pub storage: EngineKind,
    /// `always` adds an fsync to every write (power-loss durability); the
    /// default hands every write to the kernel before acknowledging it.
    #[arg(long, default_value = "kernel")]
    pub sync: Durability,
    /// Replication factor, a cluster-wide property.
    #[arg(long = "N", visible_alias = "n", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub n: u8,
    /// Ring partitions (a power of two), a cluster-wide property.
    #[arg(long, default_value_t = 256, value_parser = parse_partitions)]
    pub partitions: u32,
    /// Shortest wait for a peer before a request moves on to another node
    /// (a replica read or write, or a forwarded write): the wait for each
    /// peer is derived from its recent round trips (mean + 4 deviations, as
    /// TCP does) and never shorter than this, so that scheduling noise on a
    /// shared machine is not taken for a failure: at 20 ms, a 2-core machine
    /// running two 5-node experiments failed 1–4 % of a control run's
    /// requests on timeouts; 100 ms keeps a cut-off node's clients waiting
    /// well under the 250 ms the store promises.
    #[arg(long = "timeout_floor_ms", visible_alias = "timeout-floor-ms", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_floor_ms: u64,
    /// Longest wait for a peer before a request moves on (at least the
    /// floor): a peer never measured is waited for this long, and a
    /// forwarded write gets this much more for the member to coordinate it.
    /// Gossip and hinted handoff wait this long too.
    #[arg(long = "timeout_cap_ms", visible_alias = "timeout-cap-ms", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_cap_ms: u64,
    /// Time to establish a peer connection.
    #[arg(long = "connect_timeout_ms", visible_alias = "connect-timeout-ms", default_value_t = 500)]
    pub connect_timeout_ms: u64,
    /// How long a coordinator waits, after answering a read, for late
    /// replies to repair.
    #[arg(long = "read_repair_wait_ms", visible_alias = "read-repair-wait-ms", default_value_t = 200)]
    pub read_repair_wait_ms: u64,
    /// Interval between gossip exchanges (each node swaps views with one
    /// random member per interval, so a heartbeat reaches every member of a
    /// small cluster within a few intervals). 100 ms costs each node ten
    /// small messages a second and lets a silence of a few hundred
    /// milliseconds stand out.
    #[arg(long = "gossip_ms", visible_alias = "gossip-ms", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub gossip_ms: u64,
    /// A member whose heartbeat has not advanced for this long is down,
    /// whatever φ says; φ decides from a quarter of it on. 600 ms (six
    /// gossip intervals) lets every node of a 5-node cluster notice a
    /// cut-off peer in 0.55-0.8 s, measured on a 2-core machine under a load
    /// average of 30-50, where idle clusters showed no live member down. A
    /// live node wrongly believed down is back at its next heartbeat, and
    /// sloppy quorum covers for it meanwhile.
    #[arg(long = "fail_after_ms", visible_alias = "fail-after-ms", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub fail_after_ms: u64,
    /// Phi-accrual suspicion at which a silent member is believed down
    /// (8, as in Cassandra and Akka: a silence that long has odds of 1 in
    /// 10^8 under the member's observed rhythm). With heartbeats seen about
    /// every gossip interval, φ reaches 8 after ~18 intervals, so by default
    /// --fail_after_ms decides; φ decides first only for members heard far
    /// more often.
    #[arg(long = "phi_threshold", visible_alias = "phi-threshold", default_value_t = 8.0)]
    pub phi_threshold: f64,
    /// Interval between hinted-handoff delivery attempts.
    #[arg(long = "handoff_ms", visible_alias = "handoff-ms", default_value_t = 500)]
    pub handoff_ms: u64,
    /// Time one anti-entropy step has to answer.
    #[arg(long = "sync_timeout_ms", visible_alias = "sync-timeout-ms", default_value_t = 5000)]
    pub sync_timeout_ms: u64,
    /// Background anti-entropy reconciles one partition per interval (the
    /// rate limit), while it is switched on.
    #[arg(long = "ae_interval_ms", visible_alias = "ae-interval-ms", default_value_t = 1000)]
    pub ae_interval_ms: u64,
    /// Whether background anti-entropy starts switched on.
    #[arg(long = "anti_entropy", visible_alias = "anti-entropy", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub anti_entropy: bool,
    /// Whether a read writes the merged version back to the replicas it
    /// found stale (switchable at run time like anti-entropy).
    #[arg(long = "read_repair", visible_alias = "read-repair", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub read_repair: bool,
    /// A tombstone held by every replica is reaped once it is this old.
    #[arg(long = "tombstone_grace_ms", visible_alias = "tombstone-grace-ms", default_value_t = 10_000)]
    pub tombstone_grace_ms: u64,
    /// Largest key, in bytes.
    #[arg(long = "max_key_bytes", visible_alias = "max-key-bytes", default_value_t = 1024)]
    pub max_key_bytes: usize,
    /// Largest value (request body), in bytes.
    #[arg(long = "max_value_bytes", visible_alias = "max-value-bytes", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,
    /// Version-vector entries a key keeps before old ones are pruned
    /// (Riak's small_vclock): beyond it, the stalest entries are pruned
    /// once older than --prune_young_ms.
    #[arg(long = "prune_limit", visible_alias = "prune-limit", default_value_t = 10)]
    pub prune_limit: usize,
    /// Entries beyond --prune_limit younger than this are kept (Riak's
    /// young_vclock): a recent writer's entry is what stops its writes from
    /// coming back as false siblings.
    #[arg(long = "prune_young_ms", visible_alias = "prune-young-ms", default_value_t = 20_000)]
    pub prune_young_ms: u64,
    /// Entries a key's clock may hold at most (Riak's big_vclock): beyond
    /// it the stalest are pruned whatever their age.
    #[arg(long = "prune_max", visible_alias = "prune-max", default_value_t = 50)]
    pub prune_max: usize,
    /// MiB each storage tree buffers in memory before flushing it to disk.
    #[arg(long = "memtable_mb", visible_alias = "memtable-mb", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub memtable_mb: u64,
    /// Seconds a write may stay in a storage tree's memory buffer before
    /// the buffer is flushed, however little it holds: keeps a slowly
    /// writing node's memory level and its journal short.
    #[arg(long = "memtable_age_s", visible_alias = "memtable-age-s", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub memtable_age_s: u64,
    /// MiB of storage blocks cached in memory.
    #[arg(long = "cache_mb", visible_alias = "cache-mb", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub cache_mb: u64,
    /// Concurrent values (siblings) a write may leave before it is refused.
    #[arg(long = "max_siblings", visible_alias = "max-siblings", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_siblings: u16,
    /// Client connections open at once; beyond it new ones are closed at
    /// once (with a log line), so that idle connections cannot exhaust the
    /// node's file descriptors.
    #[arg(long = "max_client_connections", visible_alias = "max-client-connections", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_client_connections: u32,
    /// Peer connections open at once (each member keeps one to every other).
    #[arg(long = "max_peer_connections", visible_alias = "max-peer-connections", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_peer_connections: u32,
    /// A client connection that has not sent a complete request head for
    /// this long — idle between requests, or trickling its header — is
    /// closed.
    #[arg(long = "http_idle_timeout_ms", visible_alias = "http-idle-timeout-ms", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub http_idle_timeout_ms: u64,
    /// Worker threads of the node's runtime (1 = a single-threaded runtime,
    /// best when many nodes share few cores).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
}

impl NodeConfig {
    pub fn peer_port(&self) -> u16 {
        self.peer_port.unwrap_or_else(|| self.port.wrapping_add(1000))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("data").join(&self.id))
    }

    pub fn memory_budget(&self) -> MemoryBudget {
        MemoryBudget { memtable_bytes: self.memtable_mb << 20, cache_bytes: self.cache_mb << 20 }
    }

    pub fn memtable_age(&self) -> Duration {
        Duration::from_secs(self.memtable_age_s)
    }

    pub fn timeout_floor(&self) -> Duration {
        Duration::from_millis(self.timeout_floor_ms)
    }

    pub fn timeout_cap(&self) -> Duration {
        Duration::from_millis(self.timeout_cap_ms)
    }

    pub fn sync_timeout(&self) -> Duration {
        Duration::from_millis(self.sync_timeout_ms)
    }
}

/// Node names become file names, actor names and header values: keep them plain.
pub fn parse_node_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("a node id is 1-32 characters of letters, digits, '-' and '_'".into())
    }
}

pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn parse_partitions(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(q) if q.is_power_of_two() && (8..=65536).contains(&q) => Ok(q),
        _ => Err("partitions must be a power of two between 8 and 65536".into()),
    }
}
