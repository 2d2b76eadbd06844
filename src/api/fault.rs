//! The fault journal: what was applied, how, and the steps that heal it —
//! read back by `fault list`, `cleanup` and the report.

use serde::{Deserialize, Serialize};

use super::cluster::OwnedProcess;

/// One applied fault, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub id: u32,
    pub kind: Kind,
    pub targets: Vec<String>,
    pub layer: Layer,
    /// Which mechanism ran.
    pub backend: Backend,
    pub applied_at_ms: u64,
    /// Exactly what was run, as argument vectors.
    pub commands: Vec<Vec<String>>,
    /// What the probe after applying saw.
    pub verified: Option<String>,
    /// Steps that heal it, in order.
    pub undo: Vec<Undo>,
    /// The process that keeps the fault in force, when the kernel alone
    /// does not (the delay-line daemon). Journaled before it is asked to.
    #[serde(default)]
    pub held_by: Option<OwnedProcess>,
}

impl FaultRecord {
    /// Why the fault is no longer in force although nobody healed it: the
    /// process holding it is gone (as `is_running` finds, where it lives),
    /// and its effect with it. `None` while it holds (or when no process
    /// holds it).
    pub fn lapse(&self, is_running: impl Fn(&OwnedProcess) -> bool) -> Option<String> {
        let holder = self.held_by.as_ref().filter(|p| !is_running(p))?;
        Some(format!(
            "its {} process (pid {}) exited, so {} no longer has this fault",
            holder.role,
            holder.pid,
            self.targets.join(",")
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Crash,
    Slow,
    Partition,
    Pause,
    Loss,
    Bandwidth,
    Cpu,
    Duplicate,
    Reorder,
    Corrupt,
    Skew,
}

impl Kind {
    /// The name on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Crash => "crash",
            Kind::Slow => "slow",
            Kind::Partition => "partition",
            Kind::Pause => "pause",
            Kind::Loss => "loss",
            Kind::Bandwidth => "bandwidth",
            Kind::Cpu => "cpu",
            Kind::Duplicate => "duplicate",
            Kind::Reorder => "reorder",
            Kind::Corrupt => "corrupt",
            Kind::Skew => "skew",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Kernel,
    App,
}

impl Layer {
    /// The name on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Kernel => "kernel",
            Layer::App => "app",
        }
    }
}

/// The mechanism that makes a fault, as the journal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Drop rules in an nftables bridge table in the hub.
    NftBridge,
    /// SIGKILL or SIGSTOP.
    Signal,
    /// The node's own `/admin/fault` hooks.
    AdminApi,
    /// A token-bucket qdisc on the node's link.
    Tbf,
    /// A netem qdisc on the node's link.
    Netem,
    /// The hub's NFQUEUE delay line (kernels without sch_netem).
    NfqueueDelayLine,
    /// A cgroup CPU quota.
    CgroupCpu,
    /// nftables `dup` rules on the egress hooks of both ends of the node's link.
    NftNetdevDup,
    /// Drop rules in an nftables inet table on the hosts of a cluster on hosts.
    NftHost,
}

impl Backend {
    /// The name in the journal and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::NftBridge => "nft-bridge",
            Backend::Signal => "signal",
            Backend::AdminApi => "admin-api",
            Backend::Tbf => "tbf",
            Backend::Netem => "netem",
            Backend::NfqueueDelayLine => "nfqueue-delay-line",
            Backend::CgroupCpu => "cgroup-cpu",
            Backend::NftNetdevDup => "nft-netdev-dup",
            Backend::NftHost => "nft-host",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step that heals (part of) a fault; each is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Undo {
    /// Delete an nftables table in a namespace (the bridge family: rules in the hub).
    DeleteBridgeTable { namespace: String, name: String },
    /// SIGCONT a paused node, if it is still that process (on its host, if any).
    Continue {
        pid: u32,
        start_time: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Restart a crashed node from its recorded command line.
    Restart { node: String },
    /// `DELETE /admin/fault` on a node.
    HealApp { node: String },
    /// Remove the root qdisc of a link.
    ClearQdisc { namespace: String, device: String },
    /// Move a cgroup's processes back to its parent and remove it.
    RemoveCgroup {
        name: String,
        /// The host it is on, for a cluster on hosts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Remove an iptables chain (and its jump from FORWARD) in a namespace.
    RemoveForwardChain { namespace: String, name: String },
    /// Stop impairing an address on the delay line: only this fault's entry,
    /// or (journals written before entries were per fault) all of them.
    DelayClear {
        addr: std::net::Ipv4Addr,
        #[serde(default)]
        fault: Option<u32>,
    },
    /// Stop delaying a node of a cluster on hosts: at each site (a host,
    /// or `None`, this machine) remove the INPUT chain and the delay
    /// line's entry, every site at once.
    UndelayOnSites { sites: Vec<Option<String>>, chain: String, addr: std::net::Ipv4Addr, fault: u32 },
    /// Delete an nftables netdev-family table in a namespace.
    DeleteNetdevTable { namespace: String, name: String },
    /// Stop the delay line once it delays nothing (it releases held packets first).
    StopIdleDelayLine,
    /// Delete an nftables inet table on a host of a cluster on hosts.
    DeleteHostTable { host: String, name: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_keep_their_journal_names() {
        for backend in [
            Backend::NftBridge,
            Backend::Signal,
            Backend::AdminApi,
            Backend::Tbf,
            Backend::Netem,
            Backend::NfqueueDelayLine,
            Backend::CgroupCpu,
            Backend::NftNetdevDup,
            Backend::NftHost,
        ] {
            assert_eq!(serde_json::to_value(backend).unwrap(), backend.as_str());
        }
    }
}

/// One event of a fault plan, as plan files and the run's manifest hold it:
/// `{at_s, duration_s, kind, targets, layer, params}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEvent {
    pub at_s: f64,
    pub duration_s: f64,
    pub kind: Kind,
    pub targets: Vec<String>,
    #[serde(default = "kernel")]
    pub layer: Layer,
    #[serde(default)]
    pub params: Params,
}

fn kernel() -> Layer {
    Layer::Kernel
}

/// Per-kind settings as flags and plan files give them; each missing one
/// takes its default from `faults::fault::defaults`. The settings of the
/// network kinds added later are left out of files when unset, so that the
/// files of runs without them read back and write the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub slow_ms: Option<u64>,
    pub loss_pct: Option<u8>,
    pub rate_kbit: Option<u64>,
    pub cpu_pct: Option<u32>,
    pub partition_clients: Option<Clients>,
    pub no_restart: Option<bool>,
    /// Partitions: all targets form one side of the split; `in`, `out` or `both`.
    pub direction: Option<CutDirection>,
    /// `slow`: the standard deviation of the added round-trip delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// `slow` with jitter: the shape of the delay's spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_dist: Option<JitterDist>,
    /// `loss`: the chance in % that a packet is lost when the one before it
    /// (same direction) was — Gilbert's two-state model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_correlation_pct: Option<u8>,
    /// `duplicate`: the share of packets sent twice, each direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_pct: Option<u8>,
    /// `reorder`: the share of packets sent at once while the rest wait `slow_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder_pct: Option<u8>,
    /// `corrupt`: the share of packets damaged, each direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_pct: Option<u8>,
    /// Kernel network faults: only the node's peer port, only its client port, or all traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// `skew`: milliseconds added to the node's clock at once (negative: set back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
    /// `skew`: how much faster (negative: slower) the node's clock runs from
    /// then on, in millionths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_ppm: Option<i64>,
}

/// How a jittered delay is spread around its mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum JitterDist {
    #[default]
    Normal,
    // Heavy right tail: most packets a little early, a few very late.
    Pareto,
}

/// Which of a node's traffic a kernel network fault touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PortSelector {
    // Everything from and to the node.
    #[default]
    All,
    // Packets from or to its peer-protocol port (replication, gossip, its own calls to peers' ports).
    Peer,
    // Packets from or to its client HTTP port.
    Client,
}

/// Which way a partition drops packets, seen from the target's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CutDirection {
    /// Nothing crosses the split.
    #[default]
    Both,
    /// The target's side receives nothing from the other side.
    In,
    /// The target's side sends nothing to the other side.
    Out,
}

/// Whether a partition cuts the target's side from the clients too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Clients {
    // (Plain comments: doc comments would change the flag's --help.)
    // Clients still reach every node.
    #[default]
    Keep,
    // Clients are on the other side of the split.
    Isolate,
}
