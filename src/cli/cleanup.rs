//! `dynabed cleanup` and `dynabed cluster down`: removal by ownership of
//! everything a cluster's run state records, faults healed first — cleanup
//! for when a run was killed before it could clean up.

use std::path::Path;

use crate::cluster::runstate;
use crate::faults;

pub fn run(prefix: &str, all: bool) -> anyhow::Result<()> {
    let prefixes = if all { recorded_prefixes()? } else { vec![prefix.to_owned()] };
    for prefix in prefixes {
        let faults::teardown::Teardown { faults_healed, removed } = faults::teardown(&prefix)?;
        println!(
            "{prefix}: healed {faults_healed} fault(s), stopped {} process(es), removed {} namespace(s){}",
            removed.processes,
            removed.namespaces,
            if removed.cluster_files { " and the cluster files" } else { "" }
        );
    }
    Ok(())
}

/// `dynabed cluster down`.
pub fn down(cluster_procs: &Path) -> anyhow::Result<()> {
    faults::down(cluster_procs)
}

/// Prefixes with a run-state folder (each one is ours: we made the folder).
fn recorded_prefixes() -> anyhow::Result<Vec<String>> {
    let root = runstate::root();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut prefixes: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|prefix| runstate::records_something(prefix).unwrap_or(false))
        .collect();
    prefixes.sort();
    Ok(prefixes)
}
