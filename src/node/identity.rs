//! What a node must never forget across restarts, kept beside the storage
//! engine in a small file that is on disk before anything relies on it.
//!
//! - **The actor name** in version vectors: the node id plus a tag made when
//!   the data directory was first used.
//! - **The dot-counter lease.** A dot `actor:counter` must never be issued
//!   twice: two different writes under one dot merge into one, and the
//!   acknowledged one can vanish. Counters are issued node-wide in strictly
//!   increasing order, and reserved in blocks whose upper end is synced to
//!   this file before the first counter of the block is used. A restart
//!   resumes above the last reservation, so no counter is reused even when
//!   the engine lost records it had acknowledged (a damaged or truncated
//!   journal, a power cut with `--sync kernel`) — the object a new write
//!   starts from may then be older than what the node once held, but its
//!   dot is new.
//! - **The checkpoint**: now and then the node writes a numbered canary into
//!   the engine, syncs the engine, and then records the number here. On
//!   open, a canary older than the recorded number means the engine lost
//!   records that had been on disk: the node says so loudly, and counts it.
//!
//! The memory engine keeps all of this in memory: its actor is new at every
//! start, so nothing it issued before can be issued again.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::api::status::LostRecords;

use super::storage::{Storage, StorageError};

/// Counters reserved per sync of the identity file: one small synced
/// write per this many coordinated writes.
pub const LEASE_BLOCK: u64 = 1 << 16;
const FILE_NAME: &str = "identity.json";
const CANARY_KEY: &[u8] = b"checkpoint";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is damaged: {source}", path.display())]
    Damaged { path: PathBuf, source: serde_json::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("this data directory belongs to actor {actor:?}, not to node {id:?}")]
    OtherNode { actor: String, id: String },
    #[error("checkpoint: {0}")]
    Storage(#[from] StorageError),
}

/// The fields the identity file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    actor: String,
    /// Every counter ever issued is below this.
    dots_reserved: u64,
    /// The last canary known to be on disk in the engine.
    checkpoint: u64,
}

struct State {
    ledger: Ledger,
    next_counter: u64,
}

pub struct Identity {
    actor: String,
    /// `None` for the memory engine.
    file: Option<PathBuf>,
    state: Mutex<State>,
    lost: Option<LostRecords>,
}

impl Identity {
    /// Reads (or creates) the identity of the node `id` whose data is in
    /// `dir`, and checks the engine against the last checkpoint.
    pub fn open(storage: &Storage, dir: &Path, id: &str) -> Result<Identity, IdentityError> {
        if !storage.is_persistent() {
            return Ok(Identity::new(new_ledger(id), None, None));
        }
        let path = dir.join(FILE_NAME);
        let ledger = match read_ledger(&path)? {
            Some(ledger) => {
                if ledger.actor.split('.').next() != Some(id) {
                    return Err(IdentityError::OtherNode { actor: ledger.actor, id: id.to_owned() });
                }
                ledger
            }
            // Without the file nothing is known of the counters this data
            // directory may have issued: only a new actor is safe.
            None => {
                let ledger = new_ledger(id);
                write_ledger(&path, &ledger)?;
                ledger
            }
        };
        let found = read_canary(storage)?;
        let quarantined = storage.quarantined().to_vec();
        let lost = (found < ledger.checkpoint || !quarantined.is_empty()).then_some(LostRecords {
            checkpoint_recorded: ledger.checkpoint,
            checkpoint_found: found,
            quarantined_journals: quarantined,
        });
        if let Some(lost) = &lost {
            tracing::error!(
                actor = %ledger.actor,
                "STORAGE LOST RECORDS: the engine in {} holds checkpoint {} but checkpoint {} had been synced \
                 to disk before: records written before that were lost (a damaged or truncated journal). \
                 This node's new dots start above {}, so none is issued twice; anti-entropy and read repair \
                 bring the lost versions back from the other replicas.",
                dir.display(),
                lost.checkpoint_found,
                lost.checkpoint_recorded,
                ledger.dots_reserved,
            );
        }
        Ok(Identity::new(ledger, Some(path), lost))
    }

    fn new(ledger: Ledger, file: Option<PathBuf>, lost: Option<LostRecords>) -> Identity {
        let next_counter = ledger.dots_reserved.max(1);
        Identity { actor: ledger.actor.clone(), file, state: Mutex::new(State { ledger, next_counter }), lost }
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// What the last open found missing from the engine, if anything.
    pub fn lost_records(&self) -> Option<&LostRecords> {
        self.lost.as_ref()
    }

    /// A counter never issued before and at least `at_least`; it is covered
    /// by a reservation on disk when this returns.
    pub fn issue_counter(&self, at_least: u64) -> Result<u64, IdentityError> {
        let mut state = self.lock();
        let counter = state.next_counter.max(at_least);
        if counter >= state.ledger.dots_reserved {
            let mut ledger = state.ledger.clone();
            ledger.dots_reserved = counter.saturating_add(LEASE_BLOCK);
            self.persist(&ledger)?;
            state.ledger = ledger;
        }
        state.next_counter = counter.saturating_add(1);
        Ok(counter)
    }

    /// Writes the next canary, syncs the engine, then records the canary's
    /// number: everything the engine held before it is now known to be on
    /// disk, and its loss will be noticed at the next open.
    /// One checkpoint at a time (the node takes them from one task). The
    /// engine's sync runs without the lock: `issue_counter`, on every
    /// coordinated write, would wait for it.
    pub fn checkpoint(&self, storage: &Storage) -> Result<u64, IdentityError> {
        let number = self.lock().ledger.checkpoint + 1;
        storage.meta.insert(CANARY_KEY, &number.to_be_bytes())?;
        storage.sync()?;
        let mut state = self.lock();
        let mut ledger = state.ledger.clone();
        ledger.checkpoint = number;
        self.persist(&ledger)?;
        state.ledger = ledger;
        Ok(number)
    }

    fn persist(&self, ledger: &Ledger) -> Result<(), IdentityError> {
        match &self.file {
            Some(path) => write_ledger(path, ledger),
            None => Ok(()),
        }
    }

    // A holder that panicked left the ledger as it was before its change:
    // every change is made on a copy and stored only once it is on disk.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn new_ledger(id: &str) -> Ledger {
    let tag = Alphanumeric.sample_string(&mut rand::rng(), 6).to_lowercase();
    Ledger { actor: format!("{id}.{tag}"), dots_reserved: 1, checkpoint: 0 }
}

fn read_canary(storage: &Storage) -> Result<u64, IdentityError> {
    Ok(storage
        .meta
        .get(CANARY_KEY)?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

fn read_ledger(path: &Path) -> Result<Option<Ledger>, IdentityError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::Read { path: path.to_owned(), source }),
    };
    serde_json::from_slice(&text).map(Some).map_err(|source| IdentityError::Damaged { path: path.to_owned(), source })
}

/// Replaces the file atomically and durably: a crash leaves the old ledger
/// or the new one, never a torn one, and the new one survives power loss.
fn write_ledger(path: &Path, ledger: &Ledger) -> Result<(), IdentityError> {
    let error = |source| IdentityError::Write { path: path.to_owned(), source };
    let temporary = path.with_extension("json.tmp");
    let mut file = File::create(&temporary).map_err(error)?;
    let text = serde_json::to_vec(ledger).expect("a ledger serialises");
    file.write_all(&text).and_then(|()| file.sync_all()).map_err(error)?;
    fs::rename(&temporary, path).map_err(error)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::storage::{Durability, EngineKind};

    fn fjall(dir: &Path) -> Storage {
        Storage::open(EngineKind::Fjall, dir, Durability::Kernel).unwrap()
    }

    #[test]
    fn counters_rise_and_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (actor, last) = {
            let storage = fjall(dir.path());
            let identity = Identity::open(&storage, dir.path(), "node1").unwrap();
            let issued: Vec<u64> = (0..10).map(|_| identity.issue_counter(1).unwrap()).collect();
            assert!(issued.windows(2).all(|w| w[0] < w[1]), "{issued:?}");
            assert_eq!(identity.issue_counter(1_000_000).unwrap(), 1_000_000, "at least what the caller asks");
            (identity.actor().to_owned(), identity.issue_counter(1).unwrap())
        };
        let storage = fjall(dir.path());
        let identity = Identity::open(&storage, dir.path(), "node1").unwrap();
        assert_eq!(identity.actor(), actor, "the actor survives a restart");
        assert!(identity.issue_counter(1).unwrap() > last, "a restart resumes above every issued counter");
        assert_eq!(identity.lost_records(), None);
    }

    #[test]
    fn a_reservation_is_on_disk_before_its_counters_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let storage = fjall(dir.path());
        let identity = Identity::open(&storage, dir.path(), "node1").unwrap();
        let counter = identity.issue_counter(LEASE_BLOCK * 3).unwrap();
        let on_disk = read_ledger(&dir.path().join(FILE_NAME)).unwrap().unwrap();
        assert!(on_disk.dots_reserved > counter, "{} reserved, {counter} issued", on_disk.dots_reserved);
    }

    #[test]
    fn a_data_directory_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = fjall(dir.path());
        drop(Identity::open(&storage, dir.path(), "node1").unwrap());
        let err = Identity::open(&storage, dir.path(), "node2").err().unwrap();
        assert!(matches!(err, IdentityError::OtherNode { .. }), "{err}");
    }

    #[test]
    fn a_lost_checkpoint_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = fjall(dir.path());
            let identity = Identity::open(&storage, dir.path(), "node1").unwrap();
            assert_eq!(identity.checkpoint(&storage).unwrap(), 1);
            assert_eq!(identity.checkpoint(&storage).unwrap(), 2);
            // The engine forgets the last canary, as a cut journal would.
            storage.meta.insert(CANARY_KEY, &1u64.to_be_bytes()).unwrap();
        }
        let storage = fjall(dir.path());
        let identity = Identity::open(&storage, dir.path(), "node1").unwrap();
        let expected = LostRecords { checkpoint_recorded: 2, checkpoint_found: 1, quarantined_journals: vec![] };
        assert_eq!(identity.lost_records(), Some(&expected));
    }

    #[test]
    fn memory_nodes_get_a_new_actor_every_time() {
        let storage = Storage::open(EngineKind::Memory, Path::new("/nonexistent"), Durability::Kernel).unwrap();
        let first = Identity::open(&storage, Path::new("/nonexistent"), "node1").unwrap();
        let second = Identity::open(&storage, Path::new("/nonexistent"), "node1").unwrap();
        assert_ne!(first.actor(), second.actor());
        assert!(first.actor().starts_with("node1."));
    }
}
