//! Removing what a cluster owns, by the run state's records: processes
//! (only those whose pid *and* start time match), then namespaces (which
//! takes their links, addresses and qdiscs with them), then the cluster
//! files and the run-state folder. Used by `cluster down` and by
//! `dynabed cleanup` after a crash; running it twice is harmless.
//!
//! A journal beside the record (the faults') still lists changes to undo;
//! removing the folder would forget them, so cleanup refuses until whoever
//! keeps it has emptied it (`faults::teardown` heals first).

use std::time::Duration;

use anyhow::bail;
use netns::process::Spawned;

use super::files::{self, Locked};
use super::runstate::RunState;

/// What a cleanup removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub processes: usize,
    pub namespaces: usize,
    pub cluster_files: bool,
}

pub fn cleanup(prefix: &str) -> anyhow::Result<Removed> {
    let Some(state) = RunState::existing(prefix)? else {
        remove_unused_folder(prefix);
        return Ok(Removed::default());
    };
    let journals = state.open_journals()?;
    if !journals.is_empty() {
        bail!(
            "{prefix} still journals changes to undo ({}) in {}: `dynabed cleanup --prefix {prefix}` heals them first",
            journals.join(", "),
            state.dir().display()
        );
    }
    let mut removed = Removed::default();
    let owned = state.owned()?;

    let records: Vec<Spawned> = owned.processes.iter().map(|p| p.record()).collect();
    removed.processes = records.iter().filter(|r| r.is_alive()).count();
    let stuck = stop(&records);
    if !stuck.is_empty() {
        bail!("these processes of {prefix} would not stop: {stuck:?}; run state kept in {}", state.dir().display());
    }
    for name in owned.namespaces.iter().rev() {
        if netns::namespace::exists(name) {
            removed.namespaces += 1;
        }
        netns::namespace::delete(name)?;
    }
    if let Some(path) = &owned.cluster_procs {
        let describes_us = files::read_unlocked(path).ok().and_then(|f| f.meta).is_some_and(|m| m.prefix == prefix);
        if describes_us {
            Locked::acquire(path)?.remove()?;
            removed.cluster_files = true;
        }
    }
    state.remove()?;
    Ok(removed)
}

/// A run-state folder that never recorded anything holds only its lock
/// file (a start that failed before creating anything): remove it too.
fn remove_unused_folder(prefix: &str) {
    let dir = super::runstate::dir_of(prefix);
    let only_lock = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).all(|e| e.file_name() == "lock"))
        .unwrap_or(false);
    if only_lock {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Stops every record in parallel; returns the pids that survived.
pub fn stop(records: &[Spawned]) -> Vec<u32> {
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            records.iter().map(|r| scope.spawn(move || (!r.stop(Duration::from_secs(5))).then_some(r.pid))).collect();
        handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
    })
}
