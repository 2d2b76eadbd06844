//! Removing what a cluster owns, by the run state's records: processes
//! (only those whose pid *and* start time match, on this machine or on
//! the hosts the run state names), then namespaces (which
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
use super::place::{by_place, stop_everywhere};
use super::runstate::{Owned, RunState};
use super::ssh::Ssh;

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

    let (processes, stuck) = stop_owned(&owned)?;
    removed.processes = processes;
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
    end_shared_connections(&owned);
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

/// Stops the owned processes, every host (this machine being one) at
/// once; how many ran, and the pids that survived.
fn stop_owned(owned: &Owned) -> anyhow::Result<(usize, Vec<u32>)> {
    let placed = owned.processes.iter().map(|p| Ok((owned.place(p.host.as_deref())?, p.record())));
    let groups = by_place(placed.collect::<anyhow::Result<Vec<_>>>()?);
    stop_everywhere(&groups, GRACE)
}

/// Ends the SSH connections shared with the hosts (their control sockets
/// are in the run state, about to go).
fn end_shared_connections(owned: &Owned) {
    let Some(deployed) = &owned.hosts else { return };
    for host in &deployed.inventory.hosts {
        if let Ok(ssh) = Ssh::of(deployed, &host.name) {
            ssh.end_shared();
        }
    }
}

/// How long a process has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Stops every record on this machine in parallel; returns the pids that survived.
pub fn stop(records: &[Spawned]) -> Vec<u32> {
    stop_within(records, GRACE)
}

/// [`stop`] with another grace period.
pub fn stop_within(records: &[Spawned], grace: Duration) -> Vec<u32> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = records.iter().map(|r| scope.spawn(move || (!r.stop(grace)).then_some(r.pid))).collect();
        handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
    })
}
