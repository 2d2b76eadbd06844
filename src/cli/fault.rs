//! `dynabed fault KIND ...`, `fault list`, `fault heal`: faults by hand.
//!
//! Without `--duration` a fault is applied, journaled and left in force
//! until `fault heal` (or `cleanup`). With `--duration` the command holds
//! it, counts down, and heals — also on Ctrl-C or SIGTERM.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::api::fault::FaultEvent;
use crate::api::fault::{Clients, CutDirection, JitterDist, Params, PortSelector};
use crate::api::fault::{FaultRecord, Kind, Layer};
use crate::api::run::EventLog;
use crate::cluster::running::Cluster;
use crate::cluster::runstate::RunState;
use crate::faults::apply::apply;
use crate::faults::fault::{default_layer, FaultRequest};
use crate::faults::heal::{heal, HealFor};
use crate::faults::journal;
use crate::faults::plan::{self, SeedFlags};
use crate::faults::runner::{Hooks, PlanRunner};

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// SIGKILL a node; healing restarts it with its data and command line.
    #[command(
        after_help = "Examples:\n  dynabed fault crash --node node1\n  dynabed fault crash --node node1 --no_restart --duration 20"
    )]
    Crash(FaultArgs),
    /// Delay every message to and from a node by --slow_ms per round trip.
    #[command(
        after_help = "Examples:\n  dynabed fault slow --node node3 --slow_ms 200\n  dynabed fault slow --node node3 --slow_ms 50 --jitter_ms 20 --jitter_dist pareto\n  dynabed fault slow --node node3 --slow_ms 200 --fault_layer app --duration 30"
    )]
    Slow(FaultArgs),
    /// Cut a node off from the other nodes (clients still reach it).
    #[command(
        after_help = "Examples:\n  dynabed fault partition --node node2\n  dynabed fault partition --node node2 --partition_clients isolate --duration 20\n  dynabed fault partition --node node1 --with node2 --direction in"
    )]
    Partition(FaultArgs),
    /// SIGSTOP a node; healing sends SIGCONT.
    #[command(after_help = "Examples:\n  dynabed fault pause --node node2 --duration 10")]
    Pause(FaultArgs),
    /// Drop --loss_pct % of the packets from and to a node (each direction).
    #[command(
        after_help = "Examples:\n  dynabed fault loss --node node2 --loss_pct 20\n  dynabed fault loss --node node2 --loss_pct 20 --loss_correlation_pct 60 --port peer"
    )]
    Loss(FaultArgs),
    /// Limit a node's link to --rate_kbit each way (tbf).
    #[command(after_help = "Examples:\n  dynabed fault bandwidth --node node1 --rate_kbit 1000")]
    Bandwidth(FaultArgs),
    /// Limit a node to --cpu_pct % of one core (cgroup CPU quota).
    #[command(after_help = "Examples:\n  dynabed fault cpu --node node1 --cpu_pct 10")]
    Cpu(FaultArgs),
    /// Send --duplicate_pct % of the packets from and to a node twice (each direction).
    #[command(after_help = "Examples:\n  dynabed fault duplicate --node node2 --duplicate_pct 30 --port client")]
    Duplicate(FaultArgs),
    /// Send --reorder_pct % of a node's packets at once while the rest wait --slow_ms per round trip.
    #[command(after_help = "Examples:\n  dynabed fault reorder --node node2 --reorder_pct 25 --slow_ms 20")]
    Reorder(FaultArgs),
    /// Damage --corrupt_pct % of the packets from and to a node (each direction).
    #[command(after_help = "Examples:\n  dynabed fault corrupt --node node2 --corrupt_pct 10")]
    Corrupt(FaultArgs),
    /// Skew a node's own clock by --offset_ms, drifting --drift_ppm from then on (app layer only).
    #[command(
        after_help = "Examples:\n  dynabed fault skew --node node2 --offset_ms -30000\n  dynabed fault skew --node node2 --offset_ms 5000 --drift_ppm 100000 --duration 60"
    )]
    Skew(FaultArgs),
    /// Run a fault plan — a JSON timeline, or the seed's failure flags as a
    /// one-event plan — applying and healing each fault on time.
    #[command(
        after_help = "Examples:\n  dynabed fault run --plan plan.json\n  dynabed fault run --failure_mode slow --warmup 10 --failure_duration 20 --slow_ms 500 --seed 7"
    )]
    Run {
        /// `[{"at_s": 10, "duration_s": 20, "kind": "slow", "targets": ["node3"], "layer": "kernel", "params": {"slow_ms": 200}}, ...]`
        #[arg(long, conflicts_with = "failure_mode")]
        plan: Option<PathBuf>,
        #[command(flatten)]
        seed_flags: SeedFlags,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// The faults in force.
    #[command(
        after_help = "Examples:\n  dynabed fault list\n  dynabed fault list --json | jq '.[] | select(.lapse != null)'"
    )]
    List {
        /// Print JSON (the journal's records, each with its lapse or null).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Heal every fault in force, or one.
    #[command(after_help = "Examples:\n  dynabed fault heal\n  dynabed fault heal --id 3")]
    Heal {
        /// Only this fault (see `fault list`).
        #[arg(long)]
        id: Option<u32>,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

#[derive(Debug, Args)]
pub struct ClusterArg {
    #[arg(long = "cluster_procs", visible_alias = "cluster-procs", default_value = "cluster_procs.json")]
    pub cluster_procs: PathBuf,
}

#[derive(Debug, Args)]
pub struct FaultArgs {
    /// The node to break, e.g. node3.
    #[arg(long)]
    pub node: String,
    /// Where the fault is made: in the kernel, or by the node's own hooks [default: kernel; app for skew].
    #[arg(long = "fault_layer", visible_alias = "fault-layer")]
    pub layer: Option<Layer>,
    /// Added round-trip delay: for `slow` [default: 200], and for the packets
    /// `reorder` holds back [default: 20].
    #[arg(long = "slow_ms", visible_alias = "slow-ms")]
    pub slow_ms: Option<u64>,
    /// `slow`: spread the delay with this standard deviation per round trip.
    #[arg(long = "jitter_ms", visible_alias = "jitter-ms")]
    pub jitter_ms: Option<u64>,
    /// `slow --jitter_ms`: the spread's shape [default: normal].
    #[arg(long = "jitter_dist", visible_alias = "jitter-dist")]
    pub jitter_dist: Option<JitterDist>,
    /// `loss`: chance (0-99) of losing a packet after a lost one, so losses come in bursts
    /// [default: independent losses].
    #[arg(long = "loss_correlation_pct", visible_alias = "loss-correlation-pct")]
    pub loss_correlation_pct: Option<u8>,
    /// `duplicate`: share of packets sent twice, per direction [default: 10].
    #[arg(long = "duplicate_pct", visible_alias = "duplicate-pct", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub duplicate_pct: Option<u8>,
    /// `reorder`: share of packets sent at once, overtaking the held ones [default: 25].
    #[arg(long = "reorder_pct", visible_alias = "reorder-pct", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub reorder_pct: Option<u8>,
    /// `corrupt`: share of packets damaged, per direction [default: 5].
    #[arg(long = "corrupt_pct", visible_alias = "corrupt-pct", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub corrupt_pct: Option<u8>,
    /// Kernel network faults: only the node's peer port, only its client port [default: all].
    #[arg(long)]
    pub port: Option<PortSelector>,
    /// `isolate` cuts the node from clients too [default: keep].
    #[arg(long = "partition_clients", visible_alias = "partition-clients")]
    pub partition_clients: Option<Clients>,
    /// Chance of dropping each packet, per direction, for `loss` [default: 20].
    #[arg(long = "loss_pct", visible_alias = "loss-pct", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub loss_pct: Option<u8>,
    /// Link rate for `bandwidth` [default: 1000].
    #[arg(long = "rate_kbit", visible_alias = "rate-kbit")]
    pub rate_kbit: Option<u64>,
    /// CPU share for `cpu`, in % of one core [default: 10].
    #[arg(long = "cpu_pct", visible_alias = "cpu-pct", value_parser = clap::value_parser!(u32).range(1..=400))]
    pub cpu_pct: Option<u32>,
    /// Partitions: more nodes on the target's side of the split.
    #[arg(long, value_delimiter = ',')]
    pub with: Vec<String>,
    /// Partitions: drop both ways, or only into (`in`) or out of (`out`) the target's side [default: both].
    #[arg(long)]
    pub direction: Option<CutDirection>,
    /// `skew`: milliseconds the node's clock is put ahead (negative: behind) [default: 0].
    #[arg(long = "offset_ms", visible_alias = "offset-ms", allow_negative_numbers = true)]
    pub offset_ms: Option<i64>,
    /// `skew`: millionths the node's clock gains per real time unit (negative: loses) [default: 0].
    #[arg(long = "drift_ppm", visible_alias = "drift-ppm", allow_negative_numbers = true)]
    pub drift_ppm: Option<i64>,
    /// Leave a crashed node down when healing.
    #[arg(long = "no_restart", visible_alias = "no-restart")]
    pub no_restart: bool,
    /// Hold the fault this many seconds, then heal.
    #[arg(long, value_parser = crate::faults::plan::parse_seconds)]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub cluster: ClusterArg,
}

impl FaultArgs {
    /// The settings, as a plan event would give them.
    fn params(&self) -> Params {
        Params {
            slow_ms: self.slow_ms,
            loss_pct: self.loss_pct,
            rate_kbit: self.rate_kbit,
            cpu_pct: self.cpu_pct,
            partition_clients: self.partition_clients,
            no_restart: Some(self.no_restart),
            direction: self.direction,
            jitter_ms: self.jitter_ms,
            jitter_dist: self.jitter_dist,
            loss_correlation_pct: self.loss_correlation_pct,
            duplicate_pct: self.duplicate_pct,
            reorder_pct: self.reorder_pct,
            corrupt_pct: self.corrupt_pct,
            port: self.port,
            offset_ms: self.offset_ms,
            drift_ppm: self.drift_ppm,
        }
    }
}

pub fn run(command: FaultCommand) -> anyhow::Result<()> {
    match command {
        FaultCommand::Crash(args) => inject(Kind::Crash, args),
        FaultCommand::Slow(args) => inject(Kind::Slow, args),
        FaultCommand::Partition(args) => inject(Kind::Partition, args),
        FaultCommand::Pause(args) => inject(Kind::Pause, args),
        FaultCommand::Loss(args) => inject(Kind::Loss, args),
        FaultCommand::Bandwidth(args) => inject(Kind::Bandwidth, args),
        FaultCommand::Cpu(args) => inject(Kind::Cpu, args),
        FaultCommand::Duplicate(args) => inject(Kind::Duplicate, args),
        FaultCommand::Reorder(args) => inject(Kind::Reorder, args),
        FaultCommand::Corrupt(args) => inject(Kind::Corrupt, args),
        FaultCommand::Skew(args) => inject(Kind::Skew, args),
        FaultCommand::Run { plan, seed_flags, cluster } => {
            let events = match plan {
                Some(path) => plan::load(&path)?,
                None => {
                    let nodes = Cluster::read(&cluster.cluster_procs)?.ids();
                    let (events, notes) = seed_flags.plan(&nodes)?;
                    notes.iter().for_each(|note| println!("note: {note}"));
                    events
                }
            };
            run_plan(events, &cluster.cluster_procs)
        }
        FaultCommand::List { json, cluster } => list(&cluster.cluster_procs, json),
        FaultCommand::Heal { id, cluster } => heal_by_hand(&cluster.cluster_procs, id),
    }
}

fn inject(kind: Kind, args: FaultArgs) -> anyhow::Result<()> {
    let params = args.params();
    let layer = args.layer.unwrap_or(default_layer(kind));
    let request = FaultRequest::new(kind, layer, args.node.clone(), args.with.clone(), &params)?;
    let Some(seconds) = args.duration else {
        let record = apply(&args.cluster.cluster_procs, &request)?;
        println!("{}", describe(&record, None));
        println!("in force until `dynabed fault heal --id {}`", record.id);
        return Ok(());
    };
    let event = FaultEvent::holding(&request, params, seconds);
    let mut printer = Printer { countdown: Countdown::new("healing"), held_for: Some(seconds) };
    run_with(vec![event], &args.cluster.cluster_procs, &mut printer)
}

/// Applies and heals each event of a plan on time; Ctrl-C, SIGTERM or a
/// failure heal everything the plan applied.
fn run_plan(events: Vec<FaultEvent>, cluster_procs: &Path) -> anyhow::Result<()> {
    let mut printer = Printer { countdown: Countdown::new("next step"), held_for: None };
    run_with(events, cluster_procs, &mut printer)
}

fn run_with(events: Vec<FaultEvent>, cluster_procs: &Path, printer: &mut Printer) -> anyhow::Result<()> {
    crate::cluster::interrupt::install()?;
    let mut runner = PlanRunner::for_cluster(events, cluster_procs.to_owned())?;
    let outcome = runner.run_and_heal(printer);
    printer.countdown.end();
    outcome
}

/// What `fault run` and `fault KIND --duration` print as the plan goes.
struct Printer {
    countdown: Countdown,
    /// `fault KIND --duration`: the seconds the one fault is held.
    held_for: Option<f64>,
}

impl Hooks for Printer {
    fn before_step(&mut self) {
        self.countdown.end();
    }

    fn applied(&mut self, at: Duration, record: &FaultRecord) {
        self.countdown.end();
        match self.held_for {
            Some(_) => println!("{}", describe(record, None)),
            None => println!("{:8.3} s  {}", at.as_secs_f64(), describe(record, None)),
        }
    }

    fn healed(&mut self, record: &FaultRecord) {
        self.countdown.end();
        println!("healed fault {}: {:?} on {}", record.id, record.kind, record.targets.join(","));
    }

    fn lapsed(&mut self, log: &EventLog, record: &FaultRecord, why: &str) -> anyhow::Result<()> {
        self.countdown.end();
        let lapsed_s = log.lapsed_us.unwrap_or_default() as f64 / 1e6;
        match self.held_for {
            Some(seconds) => {
                let after_s = lapsed_s - log.applied_us.unwrap_or_default() as f64 / 1e6;
                anyhow::bail!("fault {} was found lapsed {after_s:.1} s into its {seconds} s: {why}", record.id)
            }
            None => anyhow::bail!("fault {}: {why} (at {lapsed_s:.1} s of the plan)", record.id),
        }
    }

    fn should_stop(&mut self) -> anyhow::Result<bool> {
        match (crate::cluster::interrupt::requested(), self.held_for) {
            (false, _) => Ok(false),
            // Ctrl-C ends a held fault early: it is healed, as asked.
            (true, Some(_)) => Ok(true),
            (true, None) => anyhow::bail!("interrupted"),
        }
    }

    fn waiting(&mut self, left: Duration) {
        self.countdown.show(left);
    }
}

/// The seconds until the next step, on a terminal.
struct Countdown {
    what: &'static str,
    shown: Option<u64>,
}

impl Countdown {
    fn new(what: &'static str) -> Self {
        Countdown { what, shown: None }
    }

    fn show(&mut self, left: Duration) {
        let seconds = left.as_secs_f64().ceil() as u64;
        if std::io::stderr().is_terminal() && self.shown != Some(seconds) {
            eprint!("\r{} in {seconds:>4} s ", self.what);
            let _ = std::io::stderr().flush();
            self.shown = Some(seconds);
        }
    }

    fn end(&mut self) {
        if self.shown.take().is_some() {
            eprintln!();
        }
    }
}

/// A fault in force as `fault list --json` shows it.
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    record: &'a FaultRecord,
    /// Why the fault no longer holds, if its holder is gone.
    lapse: Option<String>,
}

fn list(cluster_procs: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::read(cluster_procs)?;
    let (prefix, hosts) = (cluster.prefix().to_owned(), cluster.meta().hosts.as_ref());
    let faults = journal::in_force(&prefix)?;
    let lapse = |record: &FaultRecord| record.lapse(|p| p.is_running(hosts));
    if json {
        let listed: Vec<Listed> = faults.iter().map(|record| Listed { record, lapse: lapse(record) }).collect();
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    if faults.is_empty() {
        println!("no faults in force on {prefix}");
    }
    for record in &faults {
        println!("{}", describe(record, lapse(record)));
    }
    Ok(())
}

fn heal_by_hand(cluster_procs: &Path, id: Option<u32>) -> anyhow::Result<()> {
    let prefix = Cluster::read(cluster_procs)?.prefix().to_owned();
    let Some(state) = RunState::existing(&prefix)? else {
        println!("no faults in force on {prefix}");
        return Ok(());
    };
    let healed = heal(&state, id, HealFor::Service)?;
    if let Some(id) = id.filter(|_| healed.is_empty()) {
        anyhow::bail!("no fault {id} in force (see `dynabed fault list`)");
    }
    for record in healed {
        println!("healed fault {}: {:?} on {}", record.id, record.kind, record.targets.join(","));
    }
    Ok(())
}

/// One line per fault: what, where, how, and whether it still holds.
fn describe(record: &FaultRecord, lapse: Option<String>) -> String {
    let state = match (lapse, &record.verified) {
        (Some(why), _) => format!("; lapsed: {why} (`dynabed fault heal` removes what is left)"),
        (None, Some(verified)) => format!("; verified: {verified}"),
        (None, None) => String::new(),
    };
    format!(
        "fault {}: {:?} on {} ({:?} layer, {}){state}",
        record.id,
        record.kind,
        record.targets.join(","),
        record.layer,
        record.backend,
    )
}
