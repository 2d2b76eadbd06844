//! `dynabed cleanup`: removal by ownership of everything a cluster's run
//! state records, for when a run was killed before it could clean up.

use crate::cluster::{cleanup, runstate};

pub fn run(prefix: &str, all: bool) -> anyhow::Result<()> {
    let prefixes = if all { recorded_prefixes()? } else { vec![prefix.to_owned()] };
    for prefix in prefixes {
        let removed = cleanup::cleanup(&prefix)?;
        println!(
            "{prefix}: healed {} fault(s), stopped {} process(es), removed {} namespace(s){}",
            removed.faults,
            removed.processes,
            removed.namespaces,
            if removed.cluster_files { " and the cluster files" } else { "" }
        );
    }
    Ok(())
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
        .filter(|e| e.path().join("owned.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    prefixes.sort();
    Ok(prefixes)
}
