//! The failure timeline of a run: the fault plan runner with the driver's
//! hooks — it keeps the phase clients stamp on their requests, lets the CPU
//! meter sample before each step and the switches be re-applied after each
//! heal, and stops when the run is interrupted or the clients stopped. The
//! runner records what happened for `faults_<timestamp>.json`; a fault
//! that lapsed before its heal is recorded, warned about, and fails the run
//! later (see `PlanRunner::lapses`).

use std::sync::atomic::Ordering;

use super::interrupt;
use crate::api::fault::FaultRecord;
use crate::api::run::EventLog;
use crate::faults::runner::Hooks;
use crate::workload::runner::Shared;
use crate::workload::sample::Phase;

/// The driver's side of the timeline.
pub struct DriverHooks<'a, B, A> {
    pub shared: &'a Shared,
    /// Before each step (the CPU meter samples there, before a process it
    /// measures may go away).
    pub before_step: B,
    /// After each heal (a restarted node starts with its default switches).
    pub after_heal: A,
}

impl<B: FnMut(), A: FnMut()> Hooks for DriverHooks<'_, B, A> {
    fn before_step(&mut self) {
        (self.before_step)();
    }

    fn failure_phase(&mut self, on: bool) {
        self.shared.phase.set(if on { Phase::Failure } else { Phase::Recovery });
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
