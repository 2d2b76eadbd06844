//! The fault journal: one [`FaultRecord`] per fault in force, kept in the
//! cluster's run-state folder under its lock. A record is written before
//! its change is made and removed only once its undo steps ran, so the
//! journal always lists everything that may still need healing.

use crate::api::fault::FaultRecord;
use crate::cluster::runstate::RunState;

/// The journal's name in the run-state folder.
const NAME: &str = "faults";

/// The faults in force.
pub fn records(state: &RunState) -> anyhow::Result<Vec<FaultRecord>> {
    state.journal(NAME)
}

/// The faults in force on `prefix`; none when it has no run state.
pub fn in_force(prefix: &str) -> anyhow::Result<Vec<FaultRecord>> {
    RunState::existing(prefix)?.map_or(Ok(Vec::new()), |state| records(&state))
}

/// Adds a record (before its change is made).
pub fn record(state: &RunState, record: FaultRecord) -> anyhow::Result<()> {
    state.update_journal(NAME, |records| records.push(record))
}

/// Changes the record of fault `id`; returns it as changed, or `None`
/// when it is no longer in the journal.
pub fn amend(state: &RunState, id: u32, change: impl FnOnce(&mut FaultRecord)) -> anyhow::Result<Option<FaultRecord>> {
    let mut amended = None;
    state.update_journal(NAME, |records: &mut Vec<FaultRecord>| {
        if let Some(record) = records.iter_mut().find(|r| r.id == id) {
            change(record);
            amended = Some(record.clone());
        }
    })?;
    Ok(amended)
}

/// Removes the record of fault `id` (once it is healed).
pub fn forget(state: &RunState, id: u32) -> anyhow::Result<()> {
    state.update_journal(NAME, |records: &mut Vec<FaultRecord>| records.retain(|r| r.id != id))
}

/// The id for the next fault: one more than any in force.
pub fn next_id(state: &RunState) -> anyhow::Result<u32> {
    Ok(records(state)?.iter().map(|f| f.id).max().unwrap_or(0) + 1)
}
