//! Running a fault plan on a clock: each fault applied at its `at_s` and
//! healed at `at_s + duration_s`, with what happened recorded per event.
//!
//! Whatever ends the run — its end, an error, an interruption the hooks
//! report, a panic — every fault applied is healed: [`PlanRunner::heal_all`],
//! or the runner's `Drop`.
//!
//! While it waits for the next step it watches the faults in force: one
//! whose holding process died (the delay line) has lapsed before its heal,
//! so the failure window is not the one asked for. The lapse goes into the
//! event's record, and the hooks decide whether the run goes on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::apply::apply;
use super::heal::{heal, HealFor};
use super::plan::{self, Step};
use crate::api::cluster::OwnedProcess;
use crate::api::fault::{FaultEvent, FaultRecord};
use crate::api::hosts::Deployed;
use crate::api::run::EventLog;
use crate::cluster::running::Cluster;
use crate::cluster::runstate::RunState;

impl EventLog {
    fn planned(event: usize, e: &FaultEvent) -> EventLog {
        EventLog {
            event,
            kind: e.kind,
            targets: e.targets.clone(),
            layer: e.layer,
            planned_at_s: e.at_s,
            planned_duration_s: e.duration_s,
            apply_started_us: None,
            applied_us: None,
            heal_started_us: None,
            healed_us: None,
            lapsed_us: None,
            lapse: None,
            effect_onset_us: None,
            faults: Vec::new(),
            error: None,
        }
    }
}

/// What the user of a run does at its moments; every hook is optional.
pub trait Hooks {
    /// Before each step.
    fn before_step(&mut self) {}
    /// The faults enter `stage`; returns the instant they did, which the
    /// event's record takes as its time (so a user stamping phases on its
    /// own records agrees with the faults file to the microsecond).
    fn stage(&mut self, _stage: Stage) -> Instant {
        Instant::now()
    }
    /// A fault was applied and verified, `at` into the run.
    fn applied(&mut self, _at: Duration, _record: &FaultRecord) {}
    /// A fault was healed.
    fn healed(&mut self, _record: &FaultRecord) {}
    /// After each step that healed an event.
    fn after_heal(&mut self) {}
    /// A fault of `log`'s event lapsed, `why`; an error ends the run.
    fn lapsed(&mut self, _log: &EventLog, _record: &FaultRecord, _why: &str) -> anyhow::Result<()> {
        Ok(())
    }
    /// Asked while waiting: `true` ends the run early (its faults are then
    /// healed), an error ends it with that error.
    fn should_stop(&mut self) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// Waiting `left` for the next step.
    fn waiting(&mut self, _left: Duration) {}
}

/// Where a run's faults stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A fault is being applied and verified.
    Applying,
    /// Every fault applied is verified in force (or the nominal window of a
    /// run without faults has begun).
    InForce,
    /// A fault is being healed.
    Healing,
    /// No fault is in force any more.
    Over,
}

enum Action {
    Apply(usize),
    Heal(usize),
    /// The nominal failure window of a run without faults.
    Enter,
    Leave,
}

/// How often a wait looks at the clock, the hooks and the faults in force.
const POLL: Duration = Duration::from_millis(50);

/// Runs one plan on one cluster.
pub struct PlanRunner {
    plan: Vec<FaultEvent>,
    cluster_procs: PathBuf,
    prefix: String,
    t0: Instant,
    nominal: Option<(f64, f64)>,
    log: Vec<EventLog>,
    /// The ids of each event's faults still in force.
    in_force: Vec<Vec<u32>>,
    /// The cluster's hosts, where it runs on hosts.
    hosts: Option<Deployed>,
}

impl PlanRunner {
    /// A runner for `plan` on the cluster of `cluster_procs` (run state
    /// `prefix`), its times counted from `t0`.
    pub fn new(plan: Vec<FaultEvent>, cluster_procs: PathBuf, prefix: String, t0: Instant) -> Self {
        let log = plan.iter().enumerate().map(|(event, e)| EventLog::planned(event, e)).collect();
        let in_force = vec![Vec::new(); plan.len()];
        // A node on a host holds its app faults there: ask there.
        let hosts = Cluster::read(&cluster_procs).ok().and_then(|c| c.meta().hosts.clone());
        PlanRunner { plan, cluster_procs, prefix, t0, nominal: None, log, in_force, hosts }
    }

    /// A runner for `plan` on the cluster of `cluster_procs`, starting now.
    pub fn for_cluster(plan: Vec<FaultEvent>, cluster_procs: PathBuf) -> anyhow::Result<Self> {
        let prefix = Cluster::read(&cluster_procs)?.prefix().to_owned();
        Ok(Self::new(plan, cluster_procs, prefix, Instant::now()))
    }

    /// A run without faults gets this window (at_s, duration_s) as its
    /// failure phase, so a control run compares with a failure run phase by phase.
    pub fn with_nominal_window(mut self, window: (f64, f64)) -> Self {
        self.nominal = Some(window);
        self
    }

    /// Runs every step on time. Returns at the plan's end, at an error or
    /// when the hooks stop it, leaving the faults in force to
    /// [`PlanRunner::heal_all`] (or `Drop`).
    pub fn run(&mut self, hooks: &mut impl Hooks) -> anyhow::Result<()> {
        for (at_s, action) in self.steps() {
            if !self.wait_until(self.t0 + Duration::from_secs_f64(at_s), hooks)? {
                return Ok(());
            }
            hooks.before_step();
            match action {
                Action::Enter => {
                    hooks.stage(Stage::InForce);
                }
                Action::Leave => {
                    hooks.stage(Stage::Over);
                }
                Action::Apply(event) => self.apply(event, hooks)?,
                Action::Heal(event) => {
                    self.heal(event, hooks)?;
                    hooks.after_heal();
                }
            }
        }
        Ok(())
    }

    /// [`PlanRunner::run`], then heals whatever is still in force; the
    /// run's error comes first.
    pub fn run_and_heal(&mut self, hooks: &mut impl Hooks) -> anyhow::Result<()> {
        let ran = self.run(hooks);
        let healed = self.heal_all(hooks);
        ran.and(healed)
    }

    fn steps(&self) -> Vec<(f64, Action)> {
        match self.nominal.filter(|_| self.plan.is_empty()) {
            Some((at_s, duration_s)) => vec![(at_s, Action::Enter), (at_s + duration_s, Action::Leave)],
            None => plan::timeline(&self.plan)
                .into_iter()
                .map(|step| match step {
                    Step::Apply { event, at_s } => (at_s, Action::Apply(event)),
                    Step::Heal { event, at_s } => (at_s, Action::Heal(event)),
                })
                .collect(),
        }
    }

    /// Waits until `due`, watching for lapses; `false` when the hooks stop the run.
    fn wait_until(&mut self, due: Instant, hooks: &mut impl Hooks) -> anyhow::Result<bool> {
        loop {
            self.note_lapses(hooks)?;
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(true);
            }
            if hooks.should_stop()? {
                return Ok(false);
            }
            hooks.waiting(left);
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Records, once per event, a fault in force whose holder is gone.
    fn note_lapses(&mut self, hooks: &mut impl Hooks) -> anyhow::Result<()> {
        for event in 0..self.plan.len() {
            let log = &self.log[event];
            if log.lapse.is_some() {
                continue;
            }
            let mut in_force = log.faults.iter().filter(|r| self.in_force[event].contains(&r.id));
            let alive = |p: &OwnedProcess| p.is_running(self.hosts.as_ref());
            let Some((record, why)) = in_force.find_map(|r| r.lapse(alive).map(|why| (r.clone(), why))) else {
                continue;
            };
            let at_us = self.now_us();
            let log = &mut self.log[event];
            log.lapsed_us = Some(at_us);
            log.lapse = Some(format!("fault {}: {why}", record.id));
            hooks.lapsed(log, &record, &why)?;
        }
        Ok(())
    }

    /// One line per fault event that lapsed before its heal.
    pub fn lapses(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|e| {
                let (at_us, why) = (e.lapsed_us?, e.lapse.as_ref()?);
                Some(format!(
                    "fault event {} ({:?} on {}) lapsed at {:.1} s, before its heal: {why}",
                    e.event,
                    e.kind,
                    e.targets.join(","),
                    at_us as f64 / 1e6
                ))
            })
            .collect()
    }

    fn now_us(&self) -> i64 {
        self.us(Instant::now())
    }

    fn us(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.t0).as_micros() as i64
    }

    fn apply(&mut self, event: usize, hooks: &mut impl Hooks) -> anyhow::Result<()> {
        self.log[event].apply_started_us = Some(self.us(hooks.stage(Stage::Applying)));
        let applied = self.plan[event]
            .requests()
            .map_err(anyhow::Error::from)
            .and_then(|requests| requests.iter().try_for_each(|request| self.apply_one(event, request, hooks)));
        if let Err(e) = applied {
            self.log[event].error = Some(format!("{e:#}"));
            return Err(e.context(format!("applying fault event {event}")));
        }
        self.log[event].applied_us = Some(self.us(hooks.stage(Stage::InForce)));
        Ok(())
    }

    fn apply_one(
        &mut self,
        event: usize,
        request: &super::fault::FaultRequest,
        hooks: &mut impl Hooks,
    ) -> anyhow::Result<()> {
        let record = apply(&self.cluster_procs, request)?;
        self.in_force[event].push(record.id);
        hooks.applied(self.t0.elapsed(), &record);
        self.log[event].faults.push(record);
        Ok(())
    }

    fn heal(&mut self, event: usize, hooks: &mut impl Hooks) -> anyhow::Result<()> {
        self.log[event].heal_started_us = Some(self.us(hooks.stage(Stage::Healing)));
        let state = RunState::open(&self.prefix)?;
        while let Some(&id) = self.in_force[event].first() {
            match heal(&state, Some(id), HealFor::Service) {
                Ok(healed) => healed.iter().for_each(|record| hooks.healed(record)),
                Err(e) => {
                    self.log[event].error = Some(format!("{e:#}"));
                    return Err(e.context(format!("healing fault event {event}")));
                }
            }
            self.in_force[event].remove(0);
        }
        let left = if self.in_force.iter().all(Vec::is_empty) { Stage::Over } else { Stage::InForce };
        self.log[event].healed_us = Some(self.us(hooks.stage(left)));
        Ok(())
    }

    /// Heals everything still in force (after an interruption or an error).
    pub fn heal_all(&mut self, hooks: &mut impl Hooks) -> anyhow::Result<()> {
        let mut first_error = None;
        for event in 0..self.plan.len() {
            if !self.in_force[event].is_empty() {
                if let Err(e) = self.heal(event, hooks) {
                    eprintln!("warning: {e:#}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The record, for `faults_<timestamp>.json`.
    pub fn log(&self) -> &[EventLog] {
        &self.log
    }
}

/// Hooks that do nothing.
pub struct NoHooks;

impl Hooks for NoHooks {}

impl Drop for PlanRunner {
    fn drop(&mut self) {
        if self.in_force.iter().any(|ids| !ids.is_empty()) {
            let _ = self.heal_all(&mut NoHooks);
        }
    }
}
