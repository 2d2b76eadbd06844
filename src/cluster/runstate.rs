//! Run state: what one cluster (one prefix) owns, under
//! `/run/dynabed/<prefix>/`.
//!
//! Everything the test bed creates — processes and namespaces in
//! `owned.json`, and in journals other modules keep beside it (the faults'
//! firewall tables, qdiscs and cgroups) — is written here *before* it is
//! created, under a lock, so that `dynabed cleanup --prefix P` can remove
//! exactly that, from any directory and after any crash. Cleanup is by
//! ownership: nothing is ever found by matching names.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::place::Place;
use crate::api::cluster::OwnedProcess;
use crate::api::hosts::Deployed;

impl OwnedProcess {
    /// The process itself, to ask whether it still runs or to signal it.
    pub fn record(&self) -> netns::process::Spawned {
        netns::process::Spawned { pid: self.pid, start_time: self.start_time }
    }

    /// Whether it still runs, asked where it lives (on one of `hosts`, or here).
    pub fn is_running(&self, hosts: Option<&Deployed>) -> bool {
        match (&self.host, hosts) {
            (None, _) => self.record().is_alive(),
            (Some(name), Some(deployed)) => Place::host(deployed, name).is_ok_and(|p| p.is_alive(self.record())),
            // Not knowing how to reach its host, nobody can say it is gone.
            (Some(_), None) => true,
        }
    }
}

/// Everything one cluster owns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Owned {
    pub cluster_procs: Option<PathBuf>,
    pub processes: Vec<OwnedProcess>,
    /// Network namespaces, in creation order (removed in reverse).
    pub namespaces: Vec<String>,
    /// The hosts processes run on, for a cluster on hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Deployed>,
}

impl Owned {
    /// Where a process it records on `host` (or here) lives.
    pub fn place(&self, host: Option<&str>) -> anyhow::Result<Place> {
        match (host, &self.hosts) {
            (None, _) => Ok(Place::Local { netns: None }),
            (Some(name), Some(deployed)) => Place::host(deployed, name),
            (Some(name), None) => anyhow::bail!("the run state names host {name} but lists no hosts"),
        }
    }
}

const OWNED: &str = "owned.json";
/// How a journal's file name ends: `<name>.journal.json`.
const JOURNAL: &str = ".journal.json";

/// The run-state folder of one prefix, locked while open.
pub struct RunState {
    dir: PathBuf,
    _lock: Flock<File>,
    /// The flock keeps other processes out; this keeps this process's
    /// threads (faults made on several hosts at once) from interleaving
    /// their read-modify-writes.
    writing: std::sync::Mutex<()>,
}

/// `/run/dynabed` for root; elsewhere the user's runtime directory.
pub fn root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/dynabed");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("dynabed"),
        None => std::env::temp_dir().join(format!("dynabed-{}", nix::unistd::geteuid())),
    }
}

pub fn dir_of(prefix: &str) -> PathBuf {
    root().join(prefix)
}

impl RunState {
    /// Opens (creating if needed) and locks the run state of `prefix`.
    pub fn open(prefix: &str) -> anyhow::Result<Self> {
        let dir = dir_of(prefix);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", lock_path.display()))?;
        Ok(RunState { dir, _lock: lock, writing: std::sync::Mutex::default() })
    }

    /// Opens the run state of `prefix` only if it records something.
    pub fn existing(prefix: &str) -> anyhow::Result<Option<Self>> {
        if records_something(prefix)? {
            Self::open(prefix).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The prefix whose state this is (its folder's name).
    pub fn prefix(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn owned(&self) -> anyhow::Result<Owned> {
        self.read(OWNED)
    }

    /// Changes the record atomically (write, fsync, rename).
    pub fn update(&self, change: impl FnOnce(&mut Owned)) -> anyhow::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut owned = self.owned()?;
        change(&mut owned);
        self.write(OWNED, &owned)
    }

    /// The entries of journal `name`: a list another module keeps here,
    /// under the same lock, of things it made and must still undo.
    pub fn journal<T: DeserializeOwned>(&self, name: &str) -> anyhow::Result<Vec<T>> {
        self.read(&format!("{name}{JOURNAL}"))
    }

    /// Changes journal `name` atomically; an emptied journal is removed, so
    /// a journal file on disk always holds something still to undo.
    pub fn update_journal<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        change: impl FnOnce(&mut Vec<T>),
    ) -> anyhow::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let file = format!("{name}{JOURNAL}");
        let mut entries: Vec<T> = self.read(&file)?;
        change(&mut entries);
        if !entries.is_empty() {
            return self.write(&file, &entries);
        }
        match fs::remove_file(self.dir.join(&file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {file}")),
            _ => Ok(()),
        }
    }

    /// The names of the journals that still hold entries.
    pub fn open_journals(&self) -> anyhow::Result<Vec<String>> {
        journals_in(&self.dir)
    }

    fn read<T: DeserializeOwned + Default>(&self, file: &str) -> anyhow::Result<T> {
        let path = self.dir.join(file);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn write<T: Serialize>(&self, file: &str, value: &T) -> anyhow::Result<()> {
        let path = self.dir.join(file);
        let tmp = self.dir.join(format!("{file}.tmp"));
        let mut out = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
        out.write_all(&serde_json::to_vec_pretty(value)?)?;
        out.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Removes the folder once everything it recorded is gone.
    pub fn remove(self) -> anyhow::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.dir.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Whether `prefix` has a run state that records something (without
/// waiting for its lock).
pub fn records_something(prefix: &str) -> anyhow::Result<bool> {
    let dir = dir_of(prefix);
    Ok(dir.join(OWNED).exists() || !journals_in(&dir)?.is_empty())
}

/// The names of the journal files in `dir`.
fn journals_in(dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok()?.strip_suffix(JOURNAL).map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_removal_clears_them() {
        let prefix = format!("rt{}", std::process::id() % 100_000);
        let state = RunState::open(&prefix).unwrap();
        state.update(|o| o.namespaces.push("x-hub".into())).unwrap();
        state
            .update(|o| o.processes.push(OwnedProcess { role: "node node1".into(), pid: 1, start_time: 2, host: None }))
            .unwrap();
        drop(state);
        let state = RunState::existing(&prefix).unwrap().expect("still there");
        let owned = state.owned().unwrap();
        assert_eq!(owned.namespaces, ["x-hub"]);
        assert_eq!(owned.processes.len(), 1);
        state.remove().unwrap();
        assert!(RunState::existing(&prefix).unwrap().is_none());
    }

    #[test]
    fn a_journal_exists_on_disk_only_while_it_holds_entries() {
        let prefix = format!("rj{}", std::process::id() % 100_000);
        let state = RunState::open(&prefix).unwrap();
        state.update_journal("things", |entries: &mut Vec<u32>| entries.push(7)).unwrap();
        assert_eq!(state.open_journals().unwrap(), ["things"]);
        drop(state);
        let state = RunState::existing(&prefix).unwrap().expect("a journal alone is run state");
        assert_eq!(state.journal::<u32>("things").unwrap(), [7]);
        state.update_journal("things", |entries: &mut Vec<u32>| entries.clear()).unwrap();
        assert!(state.open_journals().unwrap().is_empty());
        state.remove().unwrap();
    }
}
