//! Removing a cluster with faults in force: the faults are healed from the
//! journal first (for a teardown: nodes about to stop are not restarted),
//! then the cluster is removed. The cluster's own cleanup refuses to drop a
//! run state whose journal still holds faults, so this is the way to it.

use std::path::Path;

use super::heal::{heal, HealFor};
use crate::cluster::cleanup::{self, Removed};
use crate::cluster::manage;
use crate::cluster::running::Cluster;
use crate::cluster::runstate::RunState;

/// What a teardown healed and removed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub faults_healed: usize,
    pub removed: Removed,
}

/// Heals every fault of `prefix`, then removes everything it owns
/// (`dynabed cleanup`).
pub fn teardown(prefix: &str) -> anyhow::Result<Teardown> {
    let faults_healed = heal_for_teardown(prefix)?;
    Ok(Teardown { faults_healed, removed: cleanup::cleanup(prefix)? })
}

/// Heals every fault of the cluster, then stops it and removes what it
/// owns (`dynabed cluster down`).
pub fn down(cluster_procs: &Path) -> anyhow::Result<()> {
    heal_for_teardown(Cluster::read(cluster_procs)?.prefix())?;
    manage::down(cluster_procs)
}

fn heal_for_teardown(prefix: &str) -> anyhow::Result<usize> {
    // The lock is released before the cleanup takes it.
    let Some(state) = RunState::existing(prefix)? else { return Ok(0) };
    Ok(heal(&state, None, HealFor::Teardown)?.len())
}
