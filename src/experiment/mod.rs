//! The experiment driver (`dynabed experiment`, the seed's
//! `experiment_driver.py`): checks the cluster, preloads the keys, runs the
//! workload while the failure timeline breaks and heals the cluster, then
//! counts repair rounds, checks that no acknowledged write was lost and
//! that nothing was left behind, and writes the run's files.

pub mod args;
mod checker;
mod cluster;
mod cpu;
mod divergence;
mod history;
mod history_check;
mod hlog;
mod holdings;
mod manifest;
mod outputs;
mod polling;
mod progress;
mod repair;
mod summary;
mod tcp;
mod timeline;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};

use self::args::{ExperimentArgs, Resolved};
use self::cluster::ClusterView;
use self::cpu::{CpuMeter, Role};
use self::outputs::Outputs;
use self::timeline::DriverHooks;
use crate::api::fault::FaultEvent;
use crate::api::fault::{Kind, Undo};
use crate::api::run::{
    CpuReport, EventLog, FaultsFile, Files, LostWrites, NodeSnapshot, NodeSnapshots, RepairResults, TcpCounters,
};
use crate::api::status::{Status, Switches};
use crate::cluster::interrupt;
use crate::cluster::runstate::RunState;
use crate::faults::plan;
use crate::faults::runner::PlanRunner;
use crate::faults::{delay_daemon, journal};
use crate::workload::ops::Routing;

pub use self::checker::Violation;
pub use self::history_check::{check as check_history, Findings};
pub use self::outputs::write_json;
use crate::workload::recorder::{Recorded, Recorder};
use crate::workload::runner::{self, Shared, Spec, Targets};

/// Runs one experiment; an error when a write was lost, something was left
/// behind, or the run was interrupted (after writing what it recorded).
pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let setup = Setup::prepare(&args)?;
    let outcome = setup.drive().and_then(|run| setup.conclude(run));
    if outcome.is_err() {
        // Whatever failed, the nodes get their switches back as they were.
        let everyone: Vec<usize> = (0..setup.cluster.ids.len()).collect();
        if let Err(e) = restore_switches(&setup.cluster, &setup.statuses, &everyone) {
            eprintln!("warning: restoring the nodes' switches: {e:#}");
        }
    }
    outcome
}

/// Everything checked and recorded before the first request.
struct Setup {
    settings: Resolved,
    cluster: Arc<ClusterView>,
    plan: Vec<FaultEvent>,
    notes: Vec<String>,
    /// Every node's `/status` before the run.
    statuses: Vec<Status>,
    outputs: Outputs,
    nodes_dir: PathBuf,
}

/// What ran from t0 beside the workload.
struct Measured {
    timeline: PlanRunner,
    cpu: CpuMeter,
    watch: watch::Watch,
    divergence: divergence::Sampler,
    failure: Option<anyhow::Error>,
    tcp_at_t0: BTreeMap<String, TcpCounters>,
    nodes_at_t0: Option<NodeSnapshots>,
}

/// What the workload and the failure timeline left.
struct Driven {
    recorded: Recorded,
    requests_sent: u64,
    timeline: PlanRunner,
    cpu: CpuReport,
    tcp: BTreeMap<String, TcpCounters>,
    sightings: Vec<watch::Sighting>,
    /// Still sampling: it stops when the repair rounds end.
    divergence: divergence::Sampler,
    t0_wall: SystemTime,
    /// Seconds from t0 until the clients stopped (less than --duration when interrupted).
    measured_s: f64,
    /// Clock entries the nodes pruned from t0 to the workload's end.
    prune_events: Option<u64>,
    /// The instant history times count from.
    origin: Instant,
    /// The history of the workload's requests; final reads follow.
    history: history::Written,
    latency_logs: Vec<PathBuf>,
}

impl Setup {
    /// Checks the flags and the cluster, picks the output names, records the
    /// nodes' state and sets background anti-entropy as asked.
    fn prepare(args: &ExperimentArgs) -> anyhow::Result<Setup> {
        let settings = args.resolve()?;
        let cluster = Arc::new(ClusterView::open(&args.cluster_procs, settings.n)?);
        let (plan, mut notes) = fault_plan(args, &cluster)?;
        if !settings.recovery && !plan.is_empty() {
            notes.push(format!(
                "the workload stops at the heal, {:.1} s in (--recovery {}): the heal waits for the clients, and the repair rounds see what the failure left",
                workload_end_s(&settings, &plan),
                args.recovery
            ));
        }
        refuse_faults_in_force(&cluster)?;
        let statuses = cluster.reach(|| cluster.all_answer())?;
        let outputs = Outputs::new(&args.out)?;
        notes.iter().for_each(|note| eprintln!("note: {note}"));
        let nodes_dir = outputs.nodes_dir()?;
        write_json(&nodes_dir.join("before.json"), &by_node(&cluster, statuses.iter().cloned().map(Ok).collect()))?;
        interrupt::install()?;
        let setup = Setup { settings, cluster, plan, notes, statuses, outputs, nodes_dir };
        setup.apply_switches()?;
        Ok(setup)
    }

    /// Hint delivery, read repair and background anti-entropy as the run
    /// asks, on every node.
    fn apply_switches(&self) -> anyhow::Result<()> {
        let (cluster, settings) = (&self.cluster, &self.settings);
        let everyone: Vec<usize> = (0..cluster.ids.len()).collect();
        let switches = Switches {
            hint_delivery: settings.hint_delivery,
            anti_entropy: settings.anti_entropy,
            read_repair: settings.read_repair,
        };
        cluster.reach(|| cluster.switch(&everyone, switches))
    }

    /// Preloads, then runs the workload while the timeline applies and heals
    /// the faults; every fault is healed whatever happens.
    fn drive(&self) -> anyhow::Result<Driven> {
        let (settings, cluster) = (&self.settings, &self.cluster);
        let origin = Instant::now();
        let t0_wall = SystemTime::now();
        let (csv, spool) = (self.outputs.file("workload", "csv"), self.outputs.file("history", "spool"));
        let recorder = Recorder::start(&csv, &spool, cluster.ids.clone(), origin)?;
        let shared = Shared::new();
        let clients = self.start_clients(&shared, &recorder, origin)?;
        let workload_s = workload_end_s(settings, &self.plan);
        let progress = progress::Progress::start(shared.clone(), Duration::from_secs_f64(workload_s));
        let measured = wait_for_start(&shared, &clients).map(|t0| self.measure(&shared, t0, &clients));
        while !clients.is_finished() {
            if interrupt::requested() {
                shared.stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let measured_s = shared.t0().map_or(0.0, |t0| t0.elapsed().as_secs_f64().min(workload_s));
        progress.finish();
        let sent = clients.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let recorded = recorder.finish()?;
        let history = history::write(&spool, &self.outputs.file("history", "jsonl"), settings.concurrency)?;
        let measured_from = t0_wall + shared.t0().map_or(Duration::ZERO, |t0| t0.saturating_duration_since(origin));
        let latency_logs = hlog::write(&csv, measured_from, |op| self.outputs.file(&format!("latency_{op}"), "hlog"))?;
        let requests_sent = sent?;
        let Measured { timeline, mut cpu, watch, divergence, failure, tcp_at_t0, nodes_at_t0 } =
            measured.context("the run never started")?;
        let sightings = watch.finish();
        let nodes_at_end = self.snapshot_counters("at_end.json");
        let prune_events = nodes_at_t0.zip(nodes_at_end).map(|(t0, end)| counter_delta(&t0, &end, "prune_events"));
        let mut events = timeline.log().to_vec();
        timeline::note_onsets(&mut events, &recorded.history, &cluster.ids);
        write_json(&self.outputs.file("faults", "json"), &FaultsFile::new(events))?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Driven {
            recorded,
            requests_sent,
            cpu: cpu.finish(&measured_processes(cluster)?, nodes_elsewhere(cluster)?),
            tcp: tcp::delta(&tcp_at_t0, &tcp::snapshot(&cluster.entries()?)),
            timeline,
            sightings,
            divergence,
            t0_wall,
            measured_s,
            prune_events,
            origin,
            history,
            latency_logs,
        })
    }

    /// The nodes' `/status` into the nodes folder: the report takes its
    /// counters over the measured run, from t0 to the workload's end.
    fn snapshot_counters(&self, file: &str) -> Option<NodeSnapshots> {
        let cluster = &self.cluster;
        let written = cluster.reach(|| async { Ok(cluster.statuses().await) }).and_then(|statuses| {
            let snapshots = by_node(cluster, statuses);
            write_json(&self.nodes_dir.join(file), &snapshots).map(|()| snapshots)
        });
        written.map_err(|e| eprintln!("warning: node counters for {file}: {e:#}")).ok()
    }

    fn start_clients(
        &self,
        shared: &Arc<Shared>,
        recorder: &Recorder,
        origin: Instant,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<u64>>> {
        let (settings, cluster) = (&self.settings, &self.cluster);
        let ring = ClusterView::ring(&self.statuses[0])?;
        let coordinator_ring = (settings.routing == Routing::Coordinator).then_some((&ring, settings.n));
        let targets =
            Arc::new(Targets::new(cluster.ids.clone(), cluster.addrs.clone(), coordinator_ring, settings.keyspace));
        let spec = Arc::new(spec_of(settings, workload_end_s(settings, &self.plan)));
        let (shared, sender, netns) = (shared.clone(), recorder.sender(), cluster.meta().client_netns.clone());
        Ok(std::thread::spawn(move || runner::run(spec, targets, netns, origin, shared, sender)))
    }

    /// From t0 on: the failure timeline, the CPU meter and the detector
    /// watch; returns them with the timeline's error, if any (its faults
    /// are healed by then).
    fn measure(
        &self,
        shared: &Shared,
        t0: Instant,
        clients: &std::thread::JoinHandle<anyhow::Result<u64>>,
    ) -> Measured {
        let cluster = &self.cluster;
        // First, so that sampling starts at the start of warmup.
        let divergence = divergence::Sampler::start(cluster.clone(), t0);
        let tcp_at_t0 = tcp::snapshot(&cluster.entries().unwrap_or_default());
        let nodes_at_t0 = self.snapshot_counters("at_t0.json");
        let watch = watch::Watch::start(cluster.clone(), t0);
        let processes = || measured_processes(cluster).unwrap_or_default();
        let mut cpu = CpuMeter::start(&processes());
        let mut timeline =
            PlanRunner::new(self.plan.clone(), cluster.procs_path().to_owned(), cluster.meta().prefix.clone(), t0)
                .with_nominal_window(nominal_window(&self.settings));
        let mut hooks = DriverHooks {
            shared,
            before_step: || cpu.sample(&processes(), false),
            before_heal: || {
                if !self.settings.recovery {
                    wait_for_clients(clients, Duration::from_millis(2 * self.settings.op_timeout_ms + 1000));
                }
            },
            after_heal: || {
                // A node left down (--no_restart) cannot take them; say so and go on.
                if let Err(e) = self.apply_switches() {
                    eprintln!("warning: after a heal: {e:#}");
                }
            },
        };
        let mut failure = timeline.run(&mut hooks).err();
        if failure.is_some() {
            shared.stop.store(true, Ordering::Relaxed);
        }
        if let Err(e) = timeline.heal_all(&mut hooks) {
            failure.get_or_insert(e);
        }
        Measured { timeline, cpu, watch, divergence, failure, tcp_at_t0, nodes_at_t0 }
    }

    /// Repair rounds, the lost-write checker, the leftovers check, and the
    /// run's files; then the verdict.
    fn conclude(&self, run: Driven) -> anyhow::Result<()> {
        let (settings, cluster, outputs) = (&self.settings, &self.cluster, &self.outputs);
        let after = cluster.reach(|| async { Ok(cluster.statuses().await) })?;
        let live: Vec<usize> = (0..cluster.ids.len()).filter(|&i| after[i].is_ok()).collect();
        let mut keys: Vec<u32> = run.recorded.acked.dots().map(|(key, _)| key).collect();
        keys.sort_unstable();
        // Interrupted: only check what the replicas hold now, quickly.
        let rounds = if interrupt::requested() { 0 } else { settings.max_repair_rounds };
        let repair = cluster.reach(|| repair::run(cluster, &live, &keys, rounds, settings.seed))?;
        if settings.post_repair {
            let results: RepairResults =
                repair.keys.iter().map(|(k, rounds)| (crate::workload::ops::key_name(*k), *rounds)).collect();
            write_json(&outputs.repair_results(), &results)?;
        }
        let samples = run.divergence.finish().unwrap_or_else(|e| {
            eprintln!("warning: sampling divergence: {e:#}");
            Vec::new()
        });
        divergence::write_csv(&outputs.file("divergence", "csv"), &samples)?;
        let workload_end_us = (run.measured_s * 1e6) as i64;
        let divergence = divergence::summarize(&samples, run.timeline.log(), workload_end_us);
        let checked = cluster.reach(|| async {
            let hints_left = repair::drain_hints(cluster, &live).await?;
            let mut checked = checker::check(cluster, &live, &run.recorded.acked).await?;
            checked.verdict.hints_left = hints_left;
            Ok(checked)
        })?;
        history::append_final_reads(&run.history, &checked.held, run.origin.elapsed().as_nanos() as i64)?;
        let verdict = checked.verdict;
        restore_switches(cluster, &self.statuses, &live)?;

        let leftovers = leftovers(cluster, &run.timeline, &after);
        let lapses = run.timeline.lapses();
        let after = cluster.reach(|| async { Ok(cluster.statuses().await) })?;
        write_json(&self.nodes_dir.join("after.json"), &by_node(cluster, after))?;
        if let Err(e) = copy_logs(cluster, &self.nodes_dir) {
            eprintln!("warning: could not copy node logs: {e:#}");
        }
        watch::write_csv(&outputs.file("membership", "csv"), &run.sightings)?;
        let files = Files {
            workload: outputs.file("workload", "csv"),
            faults: outputs.file("faults", "json"),
            manifest: outputs.file("manifest", "json"),
            summary: outputs.file("summary", "json"),
            nodes: self.nodes_dir.clone(),
            membership: outputs.file("membership", "csv"),
            divergence: Some(outputs.file("divergence", "csv")),
            repair_results: settings.post_repair.then(|| outputs.repair_results()),
            history: Some(run.history.path.clone()),
            latency_logs: run.latency_logs.clone(),
        };
        write_json(&outputs.file("manifest", "json"), &self.manifest(&run.timeline, run.t0_wall, files.clone())?)?;
        let summary = summary::build(summary::Inputs {
            stats: &run.recorded.stats,
            history: &run.recorded.history,
            nodes: &cluster.ids,
            fault_windows: fault_windows(run.timeline.log(), &self.plan, settings, run.measured_s),
            prune_events: run.prune_events,
            duration_s: run.measured_s,
            target_rate: settings.target_rate,
            interrupted: interrupt::requested(),
            unreadable_clocks: run.recorded.unreadable_clocks,
            requests_sent: run.requests_sent,
            rows_written: run.recorded.rows,
            cpu: &run.cpu,
            repair: &repair,
            post_repair: settings.post_repair,
            divergence: Some(divergence),
            verdict: &verdict,
            leftovers: &leftovers,
            lapses: &lapses,
            detections: watch::detections(run.timeline.log(), &run.sightings),
            tcp: &run.tcp,
            files,
        });
        write_json(&outputs.file("summary", "json"), &summary)?;
        print!("{}", summary::text(&summary));
        println!("files: {}", outputs.file("*", "*").display());
        verdict_of(&verdict, &lapses, &leftovers)
    }
}

/// A fault left in force (by hand, or by a run killed outright) would blur
/// this run's results and be blamed on it.
fn refuse_faults_in_force(cluster: &ClusterView) -> anyhow::Result<()> {
    let Some(state) = RunState::existing(&cluster.meta().prefix)? else { return Ok(()) };
    let faults = journal::records(&state)?;
    if !faults.is_empty() {
        let ids: Vec<String> =
            faults.iter().map(|f| format!("{} ({:?} on {})", f.id, f.kind, f.targets.join(","))).collect();
        bail!(
            "faults are in force on {}: {}; heal them first with `dynabed fault heal --cluster_procs {}`",
            cluster.meta().prefix,
            ids.join(", "),
            cluster.procs_path().display()
        );
    }
    Ok(())
}

/// The run's outcome: interrupted, lost writes, a fault that lapsed,
/// leftovers, or fine.
fn verdict_of(verdict: &LostWrites, lapses: &[String], leftovers: &[String]) -> anyhow::Result<()> {
    if interrupt::requested() {
        bail!("interrupted: the files above hold what was recorded until then");
    }
    if let Some(violation) = checker::Violation::of(verdict) {
        return Err(violation.into());
    }
    if !lapses.is_empty() {
        bail!("the failure did not last as planned: {}", lapses.join("; "));
    }
    if !leftovers.is_empty() {
        bail!("the run left things behind: {}", leftovers.join("; "));
    }
    Ok(())
}

/// The plan from `--plan` or the failure flags; events must fit in the run.
fn fault_plan(args: &ExperimentArgs, cluster: &ClusterView) -> anyhow::Result<(Vec<FaultEvent>, Vec<String>)> {
    let (events, notes) = match &args.plan {
        Some(path) => (plan::load(path)?, Vec::new()),
        None => args.failure.plan(&cluster.ids)?,
    };
    for (i, event) in events.iter().enumerate() {
        if let Some(stranger) = event.targets.iter().find(|t| !cluster.ids.contains(t)) {
            bail!(
                "plan event {i} targets {stranger}, which is not a node of this cluster ({})",
                cluster.ids.join(", ")
            );
        }
        if event.at_s + event.duration_s > args.duration {
            bail!(
                "plan event {i} ends at {} s, after the workload's --duration {} s",
                event.at_s + event.duration_s,
                args.duration
            );
        }
        // A mechanism this machine lacks refuses now, not mid-run.
        for request in event.requests()? {
            crate::faults::apply::precheck(cluster.cluster(), &request).with_context(|| format!("plan event {i}"))?;
        }
    }
    Ok((events, notes))
}

/// Seconds from t0 until the clients stop: --duration, or the last heal's
/// start when the run has no recovery phase.
fn workload_end_s(s: &Resolved, plan: &[FaultEvent]) -> f64 {
    let last_heal = plan.iter().map(|e| e.at_s + e.duration_s).reduce(f64::max);
    match last_heal {
        Some(at_s) if !s.recovery => at_s.min(s.duration_s),
        _ => s.duration_s,
    }
}

fn spec_of(s: &Resolved, duration_s: f64) -> Spec {
    Spec {
        workload: s.workload,
        distribution: s.dist,
        keyspace: s.keyspace,
        concurrency: s.concurrency,
        duration: Duration::from_secs_f64(duration_s),
        value_size: s.value_size as usize,
        r: Some(s.r),
        w: Some(s.w),
        update_mode: s.update_mode,
        routing: s.routing,
        target_rate: s.target_rate,
        op_timeout: Duration::from_millis(s.op_timeout_ms),
        backoff: Duration::from_millis(s.backoff_ms),
        seed: s.seed,
    }
}

/// The failure phase of a run without faults: the flags' window, inside the run.
fn nominal_window(s: &Resolved) -> (f64, f64) {
    let start = s.warmup_s.min(s.duration_s);
    (start, s.failure_duration_s.min(s.duration_s - start))
}

/// Each fault event from the start of its apply to the start of its heal
/// (the workload's end if it never began), µs; the nominal window when the
/// run has no faults.
fn fault_windows(log: &[EventLog], plan: &[FaultEvent], s: &Resolved, measured_s: f64) -> Vec<(i64, i64)> {
    let end_us = (measured_s * 1e6).round() as i64;
    if plan.is_empty() {
        let (at_s, duration_s) = nominal_window(s);
        return vec![((at_s * 1e6).round() as i64, ((at_s + duration_s) * 1e6).round() as i64)];
    }
    log.iter().filter_map(|e| Some((e.apply_started_us?, e.heal_started_us.unwrap_or(end_us).min(end_us)))).collect()
}

/// A counter's growth summed over nodes (a restarted node counts from zero).
fn counter_delta(before: &NodeSnapshots, after: &NodeSnapshots, name: &str) -> u64 {
    let value = |snapshot: Option<&NodeSnapshot>| match snapshot {
        Some(NodeSnapshot::Status(status)) => Some(status.counters.get(name)),
        _ => None,
    };
    after
        .iter()
        .filter_map(|(node, snapshot)| {
            let now = value(Some(snapshot))?;
            let then = value(before.get(node)).unwrap_or(0);
            Some(now.checked_sub(then).unwrap_or(now))
        })
        .sum()
}

/// Waits for the preload to finish; `None` when the clients stopped first
/// (their error is then returned by the thread).
/// Waits until the clients have stopped, at most `limit` (a client stuck
/// past its timeout must not hold a heal back).
fn wait_for_clients(clients: &std::thread::JoinHandle<anyhow::Result<u64>>, limit: Duration) {
    let started = Instant::now();
    while !clients.is_finished() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_start(shared: &Shared, clients: &std::thread::JoinHandle<anyhow::Result<u64>>) -> Option<Instant> {
    loop {
        if let Some(t0) = shared.t0() {
            return Some(t0);
        }
        if clients.is_finished() {
            return None;
        }
        if interrupt::requested() {
            shared.stop.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The nodes on this machine and the delay line, whose CPU the run reports.
fn measured_processes(cluster: &ClusterView) -> anyhow::Result<Vec<(Role, u32)>> {
    let here = cluster.entries()?.into_iter().filter(|(_, e)| e.ssh.is_none());
    let mut processes: Vec<(Role, u32)> = here.map(|(_, e)| (Role::Node, e.pid)).collect();
    if let Some(state) = RunState::existing(&cluster.meta().prefix)? {
        let owned = state.owned()?;
        processes.extend(
            owned
                .processes
                .iter()
                .filter(|p| p.role == delay_daemon::ROLE && p.host.is_none())
                .map(|p| (Role::DelayLine, p.pid)),
        );
    }
    Ok(processes)
}

/// The nodes on other hosts, whose CPU this machine cannot measure.
fn nodes_elsewhere(cluster: &ClusterView) -> anyhow::Result<usize> {
    Ok(cluster.entries()?.iter().filter(|(_, e)| e.ssh.is_some()).count())
}

/// Each node's status by id, or why it has none, for the nodes folder.
fn by_node(cluster: &ClusterView, statuses: Vec<anyhow::Result<Status>>) -> NodeSnapshots {
    let snapshot = |status: anyhow::Result<Status>| match status {
        Ok(status) => NodeSnapshot::Status(Box::new(status)),
        Err(e) => NodeSnapshot::Unreachable { error: format!("{e:#}") },
    };
    cluster.ids.iter().cloned().zip(statuses.into_iter().map(snapshot)).collect()
}

/// Puts hint delivery and anti-entropy back as each node had them.
fn restore_switches(cluster: &ClusterView, before: &[Status], live: &[usize]) -> anyhow::Result<()> {
    cluster.reach(|| async {
        for &i in live {
            cluster.switch(&[i], before[i].switches).await?;
        }
        Ok(())
    })
}

/// Faults, rules, processes or dead nodes the run left behind.
fn leftovers(cluster: &ClusterView, timeline: &PlanRunner, after: &[anyhow::Result<Status>]) -> Vec<String> {
    let records: Vec<_> = timeline.log().iter().flat_map(|e| e.faults.iter().cloned()).collect();
    let checked = RunState::existing(&cluster.meta().prefix)
        .and_then(|state| state.map_or(Ok(Vec::new()), |s| crate::faults::leftovers::leftovers(&s, &records)));
    let mut found = checked.unwrap_or_else(|e| vec![format!("could not check what the faults left: {e:#}")]);
    // Crashes healed without a restart (--no_restart, or a plan's no_restart) are meant to stay down.
    let meant_down: Vec<&str> = records
        .iter()
        .filter(|r| r.kind == Kind::Crash && !r.undo.iter().any(|u| matches!(u, Undo::Restart { .. })))
        .flat_map(|r| r.targets.iter().map(String::as_str))
        .collect();
    for (id, status) in cluster.ids.iter().zip(after) {
        if status.is_err() && !meant_down.contains(&id.as_str()) {
            found.push(format!("{id} does not answer after the run"));
        }
    }
    found
}

/// Copies each node's log into the run folder, from its host when it has one.
fn copy_logs(cluster: &ClusterView, dir: &Path) -> anyhow::Result<()> {
    for node in cluster.cluster().nodes() {
        let Some(log) = cluster.meta().nodes.get(&node.id).and_then(|m| m.log.as_ref()) else { continue };
        let copy = dir.join(format!("{}.log", node.id));
        node.place.fetch(log, &copy).with_context(|| format!("copying {}", log.display()))?;
    }
    Ok(())
}
