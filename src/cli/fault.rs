//! `dynabed fault KIND ...`, `fault list`, `fault heal`: faults by hand.
//!
//! Without `--duration` a fault is applied, journaled and left in force
//! until `fault heal` (or `cleanup`). With `--duration` the command holds
//! it, counts down, and heals — also on Ctrl-C or SIGTERM.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::cluster::files;
use crate::cluster::runstate::RunState;
use crate::faults::apply::{apply, CutDirection, FaultRequest};
use crate::faults::plan::{self, FaultEvent, SeedFlags, Step};
use crate::faults::{self, FaultRecord, Kind, Layer};

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// SIGKILL a node; healing restarts it with its data and command line.
    Crash(FaultArgs),
    /// Delay every message to and from a node by --slow_ms per round trip.
    Slow(FaultArgs),
    /// Cut a node off from the other nodes (clients still reach it).
    Partition(FaultArgs),
    /// SIGSTOP a node; healing sends SIGCONT.
    Pause(FaultArgs),
    /// Drop --loss_pct % of the packets from and to a node (each direction).
    Loss(FaultArgs),
    /// Limit a node's link to --rate_kbit each way (tbf).
    Bandwidth(FaultArgs),
    /// Limit a node to --cpu_pct % of one core (cgroup CPU quota).
    Cpu(FaultArgs),
    /// Run a fault plan — a JSON timeline, or the seed's failure flags as a
    /// one-event plan — applying and healing each fault on time.
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
    List(ClusterArg),
    /// Heal every fault in force, or one.
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
    #[arg(long = "cluster_procs", alias = "cluster-procs", default_value = "cluster_procs.json")]
    pub cluster_procs: PathBuf,
}

#[derive(Debug, Args)]
pub struct FaultArgs {
    /// The node to break, e.g. node3.
    #[arg(long)]
    pub node: String,
    /// Where the fault is made: in the kernel, or by the node's own hooks.
    #[arg(long = "fault_layer", alias = "fault-layer", default_value = "kernel")]
    pub layer: Layer,
    /// Added round-trip delay for `slow`.
    #[arg(long = "slow_ms", alias = "slow-ms", default_value_t = 200)]
    pub slow_ms: u64,
    /// `isolate` cuts the node from clients too.
    #[arg(long = "partition_clients", alias = "partition-clients", default_value = "keep", value_parser = ["keep", "isolate"])]
    pub partition_clients: String,
    /// Chance of dropping each packet, per direction, for `loss`.
    #[arg(long = "loss_pct", alias = "loss-pct", default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub loss_pct: u8,
    /// Link rate for `bandwidth`.
    #[arg(long = "rate_kbit", alias = "rate-kbit", default_value_t = 1000)]
    pub rate_kbit: u64,
    /// CPU share for `cpu`, in % of one core.
    #[arg(long = "cpu_pct", alias = "cpu-pct", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=400))]
    pub cpu_pct: u32,
    /// Partitions: more nodes on the target's side of the split.
    #[arg(long, value_delimiter = ',')]
    pub with: Vec<String>,
    /// Partitions: drop both ways, or only into (`in`) or out of (`out`) the target's side.
    #[arg(long, default_value = "both")]
    pub direction: CutDirection,
    /// Leave a crashed node down when healing.
    #[arg(long = "no_restart", alias = "no-restart")]
    pub no_restart: bool,
    /// Hold the fault this many seconds, then heal.
    #[arg(long, value_parser = crate::faults::plan::parse_seconds)]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub cluster: ClusterArg,
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
        FaultCommand::Run { plan, seed_flags, cluster } => {
            let events = match plan {
                Some(path) => plan::load(&path)?,
                None => {
                    let (procs, _) = files::read_cluster(&cluster.cluster_procs)?;
                    let mut nodes: Vec<String> = procs.into_keys().collect();
                    nodes.sort_by_key(|id| files::natural_key(id));
                    let (events, notes) = seed_flags.plan(&nodes)?;
                    notes.iter().for_each(|note| println!("note: {note}"));
                    events
                }
            };
            run_plan(&events, &cluster.cluster_procs)
        }
        FaultCommand::List(cluster) => list(&cluster.cluster_procs),
        FaultCommand::Heal { id, cluster } => heal(&cluster.cluster_procs, id),
    }
}

fn inject(kind: Kind, args: FaultArgs) -> anyhow::Result<()> {
    let request = FaultRequest {
        kind,
        node: args.node.clone(),
        layer: args.layer,
        slow_ms: args.slow_ms,
        isolate_clients: args.partition_clients == "isolate",
        restart: !args.no_restart,
        loss_pct: args.loss_pct,
        rate_kbit: args.rate_kbit,
        cpu_pct: args.cpu_pct,
        with: args.with.clone(),
        direction: args.direction,
    };
    let record = apply(&args.cluster.cluster_procs, &request)?;
    println!("{}", describe(&record));
    let Some(seconds) = args.duration else {
        println!("in force until `dynabed fault heal --id {}`", record.id);
        return Ok(());
    };
    let held = hold(Duration::from_secs_f64(seconds), "healing", || record.lapse())?;
    let healed = heal(&args.cluster.cluster_procs, Some(record.id));
    match held {
        Held::Lapsed { after, why } => {
            if let Err(e) = healed {
                eprintln!("warning: {e:#}");
            }
            anyhow::bail!(
                "fault {} was found lapsed {:.1} s into its {seconds} s: {why}",
                record.id,
                after.as_secs_f64()
            )
        }
        Held::Done | Held::Interrupted => healed,
    }
}

/// Applies and heals each event of a plan on time; Ctrl-C, SIGTERM or a
/// failure heal everything the plan applied.
fn run_plan(events: &[FaultEvent], cluster_procs: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut applied: Vec<Vec<FaultRecord>> = vec![Vec::new(); events.len()];
    let outcome = (|| {
        for step in plan::timeline(events) {
            let due = started + Duration::from_secs_f64(step.at_s());
            let lapse = || applied.iter().flatten().find_map(|r| r.lapse().map(|why| format!("fault {}: {why}", r.id)));
            match hold(due.saturating_duration_since(Instant::now()), "next step", lapse)? {
                Held::Done => {}
                Held::Interrupted => anyhow::bail!("interrupted"),
                Held::Lapsed { why, .. } => {
                    anyhow::bail!("{why} (at {:.1} s of the plan)", started.elapsed().as_secs_f64())
                }
            }
            let at = started.elapsed().as_secs_f64();
            match step {
                Step::Apply { event, .. } => {
                    for request in events[event].requests() {
                        let record = apply(cluster_procs, &request)?;
                        println!("{at:8.3} s  {}", describe(&record));
                        applied[event].push(record);
                    }
                }
                Step::Heal { event, .. } => {
                    for record in applied[event].drain(..) {
                        heal(cluster_procs, Some(record.id))?;
                    }
                }
            }
        }
        Ok(())
    })();
    if outcome.is_err() {
        for record in applied.into_iter().flatten() {
            if let Err(e) = heal(cluster_procs, Some(record.id)) {
                eprintln!("warning: healing fault {}: {e:#}", record.id);
            }
        }
    }
    outcome
}

/// How a hold ended.
enum Held {
    /// Its time was up.
    Done,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// What it held lapsed `after` so long, for the reason given.
    Lapsed { after: Duration, why: String },
}

/// Waits, showing a countdown on a terminal, and checks `lapse` every
/// second: a fault that lapsed is not held any more, so waiting out its
/// time would report an experiment that did not happen.
fn hold(duration: Duration, what: &str, lapse: impl Fn() -> Option<String>) -> anyhow::Result<Held> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let began = Instant::now();
        let end = began + duration;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let finished: anyhow::Result<Held> = loop {
            if let Some(why) = lapse() {
                break Ok(Held::Lapsed { after: began.elapsed(), why });
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Ok(Held::Done);
            }
            if std::io::stderr().is_terminal() {
                eprint!("\r{what} in {:>4} s ", left.as_secs_f64().ceil() as u64);
                let _ = std::io::stderr().flush();
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = tokio::time::sleep(left) => break Ok(Held::Done),
                _ = tokio::signal::ctrl_c() => break Ok(Held::Interrupted),
                _ = term.recv() => break Ok(Held::Interrupted),
            }
        };
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        finished
    })
}

fn list(cluster_procs: &Path) -> anyhow::Result<()> {
    let (_, meta) = files::read_cluster(cluster_procs)?;
    let faults =
        RunState::existing(&meta.prefix)?.map(|s| s.owned()).transpose()?.map(|o| o.faults).unwrap_or_default();
    if faults.is_empty() {
        println!("no faults in force on {}", meta.prefix);
    }
    for record in &faults {
        println!("{}", describe(record));
    }
    Ok(())
}

fn heal(cluster_procs: &Path, id: Option<u32>) -> anyhow::Result<()> {
    let (_, meta) = files::read_cluster(cluster_procs)?;
    let Some(state) = RunState::existing(&meta.prefix)? else {
        println!("no faults in force on {}", meta.prefix);
        return Ok(());
    };
    let healed = faults::heal(&state, id, false)?;
    if let Some(id) = id.filter(|_| healed.is_empty()) {
        anyhow::bail!("no fault {id} in force (see `dynabed fault list`)");
    }
    for record in healed {
        println!("healed fault {}: {:?} on {}", record.id, record.kind, record.targets.join(","));
    }
    Ok(())
}

/// One line per fault: what, where, how, and whether it still holds.
fn describe(record: &FaultRecord) -> String {
    let state = match (record.lapse(), &record.verified) {
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
