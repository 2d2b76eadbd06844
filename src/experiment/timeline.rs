//! The failure timeline of a run: applies and heals each fault of the plan
//! on the run's clock, keeps the phase clients stamp on their requests, and
//! records what happened for `faults_<timestamp>.json`.
//!
//! Whatever ends the run — its end, an error, Ctrl-C, a panic — every
//! fault applied is healed: `Timeline` heals what is still in force when
//! it is dropped.
//!
//! While it waits for the next step it watches the faults in force: one
//! whose holding process died (the delay line) has lapsed before its heal,
//! so the failure window the run measures is not the one asked for. The
//! lapse goes into the event's record, and the run fails on it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::interrupt;
use crate::cluster::runstate::RunState;
use crate::faults::apply::apply;
use crate::faults::plan::{self, FaultEvent, Step};
use crate::faults::{self, FaultRecord, Kind, Layer};
use crate::workload::runner::Shared;
use crate::workload::sample::Phase;

/// One event of the plan as it went, on the run's clock (µs since t0).
#[derive(Debug, Clone, Serialize)]
pub struct EventLog {
    pub event: usize,
    pub kind: Kind,
    pub targets: Vec<String>,
    pub layer: Layer,
    pub planned_at_s: f64,
    pub planned_duration_s: f64,
    pub apply_started_us: Option<i64>,
    pub applied_us: Option<i64>,
    pub heal_started_us: Option<i64>,
    pub healed_us: Option<i64>,
    /// When the fault was first seen no longer in force, unhealed.
    pub lapsed_us: Option<i64>,
    /// Why it lapsed.
    pub lapse: Option<String>,
    /// What was applied, with the exact commands, backend and verification.
    pub faults: Vec<FaultRecord>,
    pub error: Option<String>,
}

enum Action {
    Apply(usize),
    Heal(usize),
    /// The nominal failure window of a run without faults.
    Enter,
    Leave,
}

pub struct Timeline {
    plan: Vec<FaultEvent>,
    cluster_procs: PathBuf,
    prefix: String,
    t0: Instant,
    log: Vec<EventLog>,
    in_force: Vec<Vec<u32>>,
}

impl Timeline {
    pub fn new(plan: Vec<FaultEvent>, cluster_procs: PathBuf, prefix: String, t0: Instant) -> Self {
        let log = plan
            .iter()
            .enumerate()
            .map(|(event, e)| EventLog {
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
                faults: Vec::new(),
                error: None,
            })
            .collect();
        let in_force = vec![Vec::new(); plan.len()];
        Timeline { plan, cluster_procs, prefix, t0, log, in_force }
    }

    /// Runs every step on time; the phase is `failure` from the first
    /// apply's start until no fault is in force. A run without faults gets
    /// the `nominal` window (at_s, duration_s) as its failure phase, so a
    /// control run compares with a failure run phase by phase.
    /// `before_step` runs before each step (the CPU meter samples there,
    /// before a process it measures may go away), `after_heal` after each
    /// heal (a restarted node starts with its default switches). Stops early
    /// when the run is interrupted or the clients stopped; the caller heals.
    pub fn run(
        &mut self,
        shared: &Shared,
        nominal: (f64, f64),
        mut before_step: impl FnMut(),
        mut after_heal: impl FnMut(),
    ) -> anyhow::Result<()> {
        let steps: Vec<(f64, Action)> = if self.plan.is_empty() {
            vec![(nominal.0, Action::Enter), (nominal.0 + nominal.1, Action::Leave)]
        } else {
            plan::timeline(&self.plan)
                .into_iter()
                .map(|step| match step {
                    Step::Apply { event, at_s } => (at_s, Action::Apply(event)),
                    Step::Heal { event, at_s } => (at_s, Action::Heal(event)),
                })
                .collect()
        };
        for (at_s, action) in steps {
            let due = self.t0 + Duration::from_secs_f64(at_s);
            loop {
                self.note_lapses();
                if Instant::now() >= due {
                    break;
                }
                if interrupt::requested() || shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(due.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
            }
            before_step();
            match action {
                Action::Enter => shared.phase.set(Phase::Failure),
                Action::Leave => shared.phase.set(Phase::Recovery),
                Action::Apply(event) => {
                    shared.phase.set(Phase::Failure);
                    self.apply(event)?;
                }
                Action::Heal(event) => {
                    self.heal(event)?;
                    after_heal();
                    if self.in_force.iter().all(Vec::is_empty) {
                        shared.phase.set(Phase::Recovery);
                    }
                }
            }
        }
        Ok(())
    }

    /// Records, once per event, a fault in force whose holder is gone.
    fn note_lapses(&mut self) {
        for event in 0..self.plan.len() {
            let log = &self.log[event];
            if log.lapse.is_some() {
                continue;
            }
            let in_force = log.faults.iter().filter(|r| self.in_force[event].contains(&r.id));
            if let Some(why) = in_force.filter_map(|r| r.lapse().map(|why| format!("fault {}: {why}", r.id))).next() {
                let at_us = self.now_us();
                eprintln!("warning: fault event {event} lapsed {:.1} s into the run: {why}", at_us as f64 / 1e6);
                self.log[event].lapsed_us = Some(at_us);
                self.log[event].lapse = Some(why);
            }
        }
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
        self.t0.elapsed().as_micros() as i64
    }

    fn apply(&mut self, event: usize) -> anyhow::Result<()> {
        self.log[event].apply_started_us = Some(self.now_us());
        for request in self.plan[event].requests() {
            match apply(&self.cluster_procs, &request) {
                Ok(record) => {
                    self.in_force[event].push(record.id);
                    self.log[event].faults.push(record);
                }
                Err(e) => {
                    self.log[event].error = Some(format!("{e:#}"));
                    return Err(e.context(format!("applying fault event {event}")));
                }
            }
        }
        self.log[event].applied_us = Some(self.now_us());
        Ok(())
    }

    fn heal(&mut self, event: usize) -> anyhow::Result<()> {
        self.log[event].heal_started_us = Some(self.now_us());
        let state = self.run_state()?;
        while let Some(&id) = self.in_force[event].first() {
            if let Err(e) = faults::heal(&state, Some(id), false) {
                self.log[event].error = Some(format!("{e:#}"));
                return Err(e.context(format!("healing fault event {event}")));
            }
            self.in_force[event].remove(0);
        }
        self.log[event].healed_us = Some(self.now_us());
        Ok(())
    }

    fn run_state(&self) -> anyhow::Result<RunState> {
        RunState::open(&self.prefix)
    }

    /// Heals everything still in force (after an interruption or an error).
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for event in 0..self.plan.len() {
            if !self.in_force[event].is_empty() {
                if let Err(e) = self.heal(event) {
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

impl Drop for Timeline {
    fn drop(&mut self) {
        if self.in_force.iter().any(|ids| !ids.is_empty()) {
            let _ = self.heal_all();
        }
    }
}
