//! The driver's flags: the seed's, verbatim with their defaults, and the
//! test bed's own; and the checks that run before anything starts.

use std::path::PathBuf;

use anyhow::bail;
use serde::Serialize;

use crate::faults::fault::flag_name;
use crate::faults::plan::{FailureMode, SeedFlags};
use crate::workload::keys::KeyDistribution;
use crate::workload::ops::{Routing, UpdateMode, Workload};

#[derive(Debug, Clone, clap::Args)]
pub struct ExperimentArgs {
    /// The cluster file written by `cluster up` or by nodes started by hand.
    #[arg(long = "cluster_procs", visible_alias = "cluster-procs", default_value = "cluster_procs.json")]
    pub cluster_procs: PathBuf,
    /// YCSB workload: A (50 % reads, 50 % updates) or B (95 % / 5 %).
    #[arg(long, default_value = "A", ignore_case = true)]
    pub workload: Workload,
    /// Seconds of measured workload (warmup, failure and recovery).
    #[arg(long, default_value_t = 60.0, value_parser = crate::faults::plan::parse_seconds)]
    pub duration: f64,
    /// Parallel clients.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Key distribution: uniform, zipf (YCSB's scrambled zipfian, θ = 0.99) or zipf-exact.
    #[arg(long, default_value = "uniform")]
    pub dist: KeyDistribution,
    /// Keys used (`user0` … `user<keyspace-1>`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub keyspace: u32,
    /// Replication factor; must be the cluster's.
    #[arg(long = "N", default_value_t = 3)]
    pub n: usize,
    /// Read quorum [default: a majority of N].
    #[arg(long = "R")]
    pub r: Option<usize>,
    /// Write quorum [default: a majority of N].
    #[arg(long = "W")]
    pub w: Option<usize>,
    #[command(flatten)]
    pub failure: SeedFlags,
    /// A fault plan (JSON timeline) instead of the failure flags.
    #[arg(long, conflicts_with = "failure_mode")]
    pub plan: Option<PathBuf>,
    /// After the run, repair rounds until every key converges; writes repair_results.json.
    #[arg(long = "post_repair", visible_alias = "post-repair")]
    pub post_repair: bool,
    /// Most repair rounds to run.
    #[arg(long = "max_repair_rounds", visible_alias = "max-repair-rounds", default_value_t = 10)]
    pub max_repair_rounds: u32,
    /// Where the output files go.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Bytes per value.
    #[arg(long = "value_size", visible_alias = "value-size", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub value_size: u32,
    /// The context an update carries. rmw (default): read the key first (an
    /// `update_read` row, outside the READ statistics), then write with that
    /// context; when that read fails, with the newest context this client
    /// holds for the key, as an application caching its objects would (so
    /// writes go on where reads fail). context: this client's last answer
    /// for the key, often long stale. blind: none.
    #[arg(long = "update_mode", visible_alias = "update-mode", default_value = "rmw")]
    pub update_mode: UpdateMode,
    /// Entry node per request: random (seeded), fixed (client i → node i mod K) or coordinator.
    #[arg(long, default_value = "random")]
    pub routing: Routing,
    /// Open loop at this many requests per second, measured from each intended start.
    #[arg(long = "target_rate", visible_alias = "target-rate")]
    pub target_rate: Option<f64>,
    /// A request without an answer after this long counts as a timeout.
    #[arg(long = "op_timeout_ms", visible_alias = "op-timeout-ms", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub op_timeout_ms: u64,
    /// How long a client avoids a node it could not connect to.
    #[arg(long = "backoff_ms", visible_alias = "backoff-ms", default_value_t = 1000)]
    pub backoff_ms: u64,
    /// Background anti-entropy during the run (off: repair rounds measure what the failure left).
    #[arg(long = "anti_entropy", visible_alias = "anti-entropy", default_value = "off", value_parser = ["on", "off"])]
    pub anti_entropy: String,
    /// Hinted handoff during the run (off: hints wait, and repair rounds alone must heal the divergence).
    #[arg(long = "hint_delivery", visible_alias = "hint-delivery", default_value = "on", value_parser = ["on", "off"])]
    pub hint_delivery: String,
    /// Read repair during the run (off: a read leaves stale replicas stale, for the repair rounds to find).
    #[arg(long = "read_repair", visible_alias = "read-repair", default_value = "on", value_parser = ["on", "off"])]
    pub read_repair: String,
    /// After the last heal, the workload goes on until --duration (on) or
    /// stops when the heal starts (off), leaving the repair rounds exactly
    /// what the failure left. auto: off with --post_repair when hint
    /// delivery and read repair are both off (anti-entropy alone: a recovery
    /// phase's writes would repair every key they touch before the rounds
    /// could count it), on otherwise.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub recovery: String,
}

/// The resolved settings, as the manifest records them.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub cluster_procs: PathBuf,
    pub workload: Workload,
    pub duration_s: f64,
    pub concurrency: u32,
    pub dist: KeyDistribution,
    pub keyspace: u32,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub failure_mode: String,
    pub warmup_s: f64,
    pub failure_duration_s: f64,
    pub slow_ms: u64,
    pub partition_ms: Option<u64>,
    pub partition_style: String,
    pub partition_clients: String,
    pub loss_pct: u8,
    pub fault_layer: crate::api::fault::Layer,
    pub target: Option<String>,
    pub no_restart: bool,
    pub plan: Option<PathBuf>,
    pub post_repair: bool,
    pub max_repair_rounds: u32,
    pub out: PathBuf,
    pub value_size: u32,
    pub update_mode: UpdateMode,
    pub routing: Routing,
    pub target_rate: Option<f64>,
    pub op_timeout_ms: u64,
    pub backoff_ms: u64,
    pub anti_entropy: bool,
    pub hint_delivery: bool,
    pub read_repair: bool,
    pub recovery: bool,
    pub seed: u64,
}

impl ExperimentArgs {
    /// Checks what can be checked without the cluster; R and W default to a
    /// majority of N.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let f = &self.failure;
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!("--duration must be a number of seconds > 0, not {}", self.duration);
        }
        if !(f.warmup.is_finite() && f.warmup >= 0.0 && f.failure_duration.is_finite() && f.failure_duration > 0.0) {
            bail!("--warmup must be ≥ 0 and --failure_duration > 0 seconds");
        }
        if self.plan.is_none() && f.failure_mode != FailureMode::None && f.warmup + f.failure_duration > self.duration {
            bail!(
                "--warmup {} + --failure_duration {} = {} s is longer than --duration {} s: the failure would outlast the workload",
                f.warmup,
                f.failure_duration,
                f.warmup + f.failure_duration,
                self.duration
            );
        }
        if self.n == 0 {
            bail!("--N must be at least 1");
        }
        let majority = self.n / 2 + 1;
        let (r, w) = (self.r.unwrap_or(majority), self.w.unwrap_or(majority));
        for (name, q) in [("--R", r), ("--W", w)] {
            if q == 0 || q > self.n {
                bail!("{name} {q} must be between 1 and --N {}", self.n);
            }
        }
        if let Some(rate) = self.target_rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
            bail!("--target_rate must be > 0 requests per second, not {rate}");
        }
        Ok(Resolved {
            cluster_procs: self.cluster_procs.clone(),
            workload: self.workload,
            duration_s: self.duration,
            concurrency: self.concurrency,
            dist: self.dist,
            keyspace: self.keyspace,
            n: self.n,
            r,
            w,
            failure_mode: if self.plan.is_some() { "plan".into() } else { flag_name(&f.failure_mode) },
            warmup_s: f.warmup,
            failure_duration_s: f.failure_duration,
            slow_ms: f.slow_ms,
            partition_ms: f.partition_ms,
            partition_style: flag_name(&f.partition_style),
            partition_clients: flag_name(&f.partition_clients),
            loss_pct: f.loss_pct,
            fault_layer: f.fault_layer,
            target: f.target.clone(),
            no_restart: f.no_restart,
            plan: self.plan.clone(),
            post_repair: self.post_repair,
            max_repair_rounds: self.max_repair_rounds,
            out: self.out.clone(),
            value_size: self.value_size,
            update_mode: self.update_mode,
            routing: self.routing,
            target_rate: self.target_rate,
            op_timeout_ms: self.op_timeout_ms,
            backoff_ms: self.backoff_ms,
            anti_entropy: self.anti_entropy == "on",
            hint_delivery: self.hint_delivery == "on",
            read_repair: self.read_repair == "on",
            recovery: match self.recovery.as_str() {
                "on" => true,
                "off" => false,
                _ => !(self.post_repair && self.hint_delivery == "off" && self.read_repair == "off"),
            },
            seed: f.seed,
        })
    }
}

/// The flags of `line` (a command line without the program name), as
/// `dynabed experiment` would parse them.
#[cfg(test)]
pub(crate) fn parse(line: &[&str]) -> ExperimentArgs {
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: ExperimentArgs,
    }
    Command::parse_from(std::iter::once("dynabed").chain(line.iter().copied())).args
}

#[cfg(test)]
mod tests {
    fn recovery(flags: &[&str]) -> bool {
        super::parse(flags).resolve().unwrap().recovery
    }

    #[test]
    fn only_repair_rounds_on_anti_entropy_alone_go_without_a_recovery_phase_unless_asked() {
        let alone = ["--post_repair", "--hint_delivery", "off", "--read_repair", "off"];
        assert!(!recovery(&alone));
        assert!(recovery(&alone[..3]), "read repair on");
        assert!(recovery(&alone[1..]), "no repair rounds");
        assert!(recovery(&[&alone[..], &["--recovery", "on"]].concat()));
        assert!(!recovery(&["--recovery", "off"]));
        assert!(recovery(&[]));
    }
}
