//! Faults as data, with a heal that always happens.
//!
//! A [`fault::Fault`] — from `dynabed fault` flags or a plan's event — is
//! applied by one executor ([`exec`]): its record, with the undo steps that
//! heal it, goes to the fault journal ([`journal`], in the cluster's run
//! state) first, then the kernel or the processes change, then the record
//! gets the exact commands and the result of a verification probe. Healing
//! ([`heal`]) runs the undo steps. Because the record precedes the change,
//! `dynabed cleanup` ([`teardown`]) can heal from the journal even after the
//! applying process was SIGKILLed halfway (each undo step is harmless when
//! its change never happened). [`runner::PlanRunner`] runs a timeline of
//! faults for `dynabed fault` and the experiment driver alike.

pub mod admin;
pub mod apply;
pub mod delay_daemon;
pub mod delay_line;
pub mod exec;
pub mod fault;
pub mod heal;
pub mod impairment;
pub mod journal;
pub mod leftovers;
pub mod line_loop;
pub mod plan;
pub mod runner;
pub mod teardown;

pub use teardown::{down, teardown};
