//! The failure timeline of a run: the fault plan runner with the driver's
//! hooks — it keeps the phase clients stamp on their requests, lets the CPU
//! meter sample before each step and the switches be re-applied after each
//! heal, and stops when the run is interrupted or the clients stopped. The
//! runner records what happened for `faults_<timestamp>.json`; a fault
//! that lapsed before its heal is recorded, warned about, and fails the run
//! later (see `PlanRunner::lapses`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::api::fault::FaultRecord;
use crate::api::run::EventLog;
use crate::cluster::interrupt;
use crate::faults::runner::{Hooks, Stage};
use crate::workload::history::History;
use crate::workload::runner::Shared;
use crate::workload::sample::Phase;

/// The driver's side of the timeline.
pub struct DriverHooks<'a, B, H, A> {
    pub shared: &'a Shared,
    /// Before each step (the CPU meter samples there, before a process it
    /// measures may go away).
    pub before_step: B,
    /// Before each heal starts (a run without a recovery phase waits there
    /// for its clients to stop, so that no request meets the heal).
    pub before_heal: H,
    /// After each heal (a restarted node starts with its default switches).
    pub after_heal: A,
}

impl<B: FnMut(), H: FnMut(), A: FnMut()> Hooks for DriverHooks<'_, B, H, A> {
    fn before_step(&mut self) {
        (self.before_step)();
    }

    /// The phase requests are stamped with, entered at the instant the
    /// faults file records for the step.
    fn stage(&mut self, stage: Stage) -> Instant {
        if stage == Stage::Healing {
            (self.before_heal)();
        }
        self.shared.phase.set(match stage {
            Stage::Applying => Phase::FaultApply,
            Stage::InForce => Phase::Failure,
            Stage::Healing => Phase::FaultHeal,
            Stage::Over => Phase::Recovery,
        })
    }

    fn after_heal(&mut self) {
        (self.after_heal)();
    }

    fn lapsed(&mut self, log: &EventLog, _: &FaultRecord, _: &str) -> anyhow::Result<()> {
        let (at_s, why) = (log.lapsed_us.unwrap_or_default() as f64 / 1e6, log.lapse.as_deref().unwrap_or_default());
        eprintln!("warning: fault event {} lapsed {at_s:.1} s into the run: {why}", log.event);
        Ok(())
    }

    fn should_stop(&mut self) -> anyhow::Result<bool> {
        Ok(interrupt::requested() || self.shared.stop.load(Ordering::Relaxed))
    }
}

/// Writes into each event when the driver's requests first met its effect
/// (see `EventLog::effect_onset_us`): "slow" is beyond the warmup's p99.9.
pub fn note_onsets(events: &mut [EventLog], history: &History, nodes: &[String]) {
    let slow_us = history.latency_quantile(Phase::Warmup, 0.999);
    for event in events {
        let Some(from) = event.apply_started_us else { continue };
        let until = event.heal_started_us.unwrap_or(i64::MAX);
        let targets: Vec<u16> =
            event.targets.iter().filter_map(|t| nodes.iter().position(|n| n == t)).map(|i| i as u16).collect();
        event.effect_onset_us = history.onset(&targets, from, until, slow_us);
    }
}
