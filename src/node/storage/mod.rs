//! Local key-value storage for a node.
//!
//! A node keeps three independent trees: `data` (replicated objects, keyed by
//! a 4-byte big-endian partition number followed by the object key, so one
//! partition is one prefix range), `hints` (hinted-handoff entries) and `meta`
//! (small node metadata such as the checkpoint canary). The rest of the node only sees
//! the [`Tree`] trait, so the on-disk engine (fjall) and the in-memory engine
//! used by tests and throw-away clusters are interchangeable.
//!
//! A write has reached the OS when it returns (it survives the process
//! being killed) and is durable per [`Durability`] once
//! [`Storage::durable`] resolves after it: a replica acks a write only then,
//! as an ack that a crash can take back would break the quorum arithmetic.
//! With `--sync always` that is a group commit ([`journal_sync`]): one
//! fdatasync, on a thread of its own, for every write waiting at the time.

mod journal_sync;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use journal_sync::JournalSync;

/// How far a write must have travelled before `insert`/`remove` return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Handed to the OS with write(2): survives the process being killed
    /// (even SIGKILL), not a kernel crash or power loss.
    Kernel,
    /// fdatasync'ed before it is acked: survives power loss too. Writers
    /// waiting at the same time share one disk flush (group commit).
    Fsync,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Kernel => "kernel",
            Durability::Fsync => "always",
        })
    }
}

/// Spelled as the `--sync` flag's values: `kernel` or `always`.
impl FromStr for Durability {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kernel" => Ok(Durability::Kernel),
            "always" => Ok(Durability::Fsync),
            other => Err(StorageError::UnknownDurability(other.to_owned())),
        }
    }
}

/// Which engine backs the trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Fjall,
    Memory,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Fjall => "fjall",
            EngineKind::Memory => "memory",
        })
    }
}

impl FromStr for EngineKind {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fjall" => Ok(EngineKind::Fjall),
            "memory" => Ok(EngineKind::Memory),
            other => Err(StorageError::UnknownEngine(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unknown storage engine {0:?} (expected \"fjall\" or \"memory\")")]
    UnknownEngine(String),
    #[error("unknown sync mode {0:?} (expected \"kernel\" or \"always\")")]
    UnknownDurability(String),
    #[error("cannot open fjall database in {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: fjall::Error,
    },
    #[error("cannot open fjall keyspace {tree:?}")]
    OpenTree {
        tree: &'static str,
        #[source]
        source: fjall::Error,
    },
    #[error("{op} on tree {tree:?} failed: {source}")]
    Engine {
        tree: &'static str,
        op: &'static str,
        #[source]
        source: fjall::Error,
    },
    #[error("cannot start the journal's sync thread")]
    SyncThread(#[source] std::io::Error),
    #[error("the journal could not be made durable: {0}")]
    Unsynced(String),
}

/// Key-value pairs as returned by [`Tree::scan_prefix`], sorted by key.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One ordered map from byte keys to byte values.
// No is_empty: len is for metrics and tests, nothing branches on emptiness.
#[allow(clippy::len_without_is_empty)]
pub trait Tree: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Handed to the OS when it returns; durable per the store's
    /// [`Durability`] once [`Storage::durable`] resolves after that.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    /// Like [`insert`](Tree::insert).
    fn remove(&self, key: &[u8]) -> Result<(), StorageError>;
    /// Removes `key` only if its current value is `expected`, atomically with
    /// respect to concurrent writes to the tree, so a hint re-written while it
    /// was being delivered survives the delivery's clean-up. Returns whether
    /// it removed anything; a removal is like an [`insert`](Tree::insert).
    fn remove_if_equal(&self, key: &[u8], expected: &[u8]) -> Result<bool, StorageError>;
    /// All pairs whose key starts with `prefix`, sorted by key.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<KvPairs, StorageError>;
    /// Exact number of keys. O(n) for fjall (a full scan): not for hot paths.
    fn len(&self) -> Result<usize, StorageError>;
    /// Starts flushing what the tree buffers in memory, if anything, to a
    /// table on disk. The memory engine buffers nothing.
    fn seal_memtable(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Whether the engine can still make writes durable.
///
/// After a write it could not make durable (a full disk, an I/O error)
/// fjall refuses every later write, even once the cause is gone, as it
/// should: it cannot know what reached the disk. A node in that state would
/// answer 500 forever while looking alive, so the first such failure is
/// recorded here and the node stops on it — the test bed then sees a
/// crash, which a restart can recover from.
#[derive(Default)]
pub struct Health {
    failure: OnceLock<String>,
    failed: tokio::sync::Notify,
}

impl Health {
    /// The first write failure, if there was one.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Resolves with the first write failure.
    pub async fn failed(&self) -> &str {
        loop {
            let notified = self.failed.notified();
            if let Some(failure) = self.failure() {
                return failure;
            }
            notified.await;
        }
    }

    fn record(&self, error: &StorageError) {
        if self.failure.set(error.to_string()).is_ok() {
            tracing::error!("storage can no longer make writes durable: {error}");
            self.failed.notify_waiters();
        }
    }
}

/// The node's three trees, all backed by the same engine.
pub struct Storage {
    pub data: Box<dyn Tree>,
    pub hints: Box<dyn Tree>,
    pub meta: Box<dyn Tree>,
    kind: EngineKind,
    durability: Durability,
    /// fjall's journal syncer; None for the memory engine.
    journal: Option<Arc<JournalSync>>,
    health: Arc<Health>,
    /// Journals too damaged to recover, moved aside when the store opened.
    quarantined: Vec<PathBuf>,
    /// The fjall database, for its memory figures; None for the memory engine.
    db: Option<Database>,
}

/// What the persistent engine holds in memory now, and its journals: the
/// figures that tell an engine's buffers filling from a leak in the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineMemory {
    /// Bytes in memtables, active and sealed, of all trees.
    pub write_buffer_bytes: u64,
    /// Bytes of table blocks in the block cache.
    pub cache_bytes: u64,
    /// Journal files not yet released by a flush.
    pub journals: u64,
}

/// What the persistent engine may hold in memory. fjall's defaults (a
/// 64 MiB memtable per tree, a 32 MiB block cache) suit one database per
/// machine, not dozens of nodes sharing one; a node's memory would keep
/// growing until each tree's first flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes a tree buffers before it is flushed to a table on disk.
    pub memtable_bytes: u64,
    /// Bytes of table blocks cached, shared by the three trees.
    pub cache_bytes: u64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget { memtable_bytes: 8 << 20, cache_bytes: 16 << 20 }
    }
}

impl Storage {
    /// Opens (or creates) the store with the default [`MemoryBudget`].
    /// `dir` and `durability` are ignored by the memory engine.
    pub fn open(kind: EngineKind, dir: &Path, durability: Durability) -> Result<Storage, StorageError> {
        Storage::open_within(kind, dir, durability, MemoryBudget::default())
    }

    /// Opens (or creates) the store, its engine held to `budget`.
    pub fn open_within(
        kind: EngineKind,
        dir: &Path,
        durability: Durability,
        budget: MemoryBudget,
    ) -> Result<Storage, StorageError> {
        match kind {
            EngineKind::Fjall => open_fjall(dir, durability, budget),
            EngineKind::Memory => Ok(Storage {
                data: Box::<MemoryTree>::default(),
                hints: Box::<MemoryTree>::default(),
                meta: Box::<MemoryTree>::default(),
                kind,
                durability,
                journal: None,
                health: Arc::default(),
                quarantined: Vec::new(),
                db: None,
            }),
        }
    }

    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    pub fn is_persistent(&self) -> bool {
        self.kind == EngineKind::Fjall
    }

    /// Journals moved aside at open because they could not be recovered.
    pub fn quarantined(&self) -> &[PathBuf] {
        &self.quarantined
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Resolves once every write that returned before the call is durable
    /// per the store's [`Durability`]: at once unless it is
    /// [`Durability::Fsync`] (every write is in the OS already), else after
    /// the next group commit.
    pub async fn durable(&self) -> Result<(), StorageError> {
        match (&self.journal, self.durability) {
            (Some(journal), Durability::Fsync) => journal.durable().await,
            _ => Ok(()),
        }
    }

    /// The engine's memory now (all zero for the memory engine, whose
    /// trees are the data itself).
    pub fn engine_memory(&self) -> EngineMemory {
        self.db.as_ref().map_or_else(EngineMemory::default, |db| EngineMemory {
            write_buffer_bytes: db.write_buffer_size(),
            cache_bytes: db.cache_size(),
            journals: db.journal_count() as u64,
        })
    }

    /// Starts flushing every tree's memtable that holds anything. Called
    /// now and then, so that a node writing slowly does not take its memtables'
    /// whole budget, and so its memory reaches its level early rather than
    /// after the first size-triggered flush, many minutes in.
    pub fn seal_memtables(&self) -> Result<(), StorageError> {
        [&self.data, &self.hints, &self.meta].into_iter().try_for_each(|tree| tree.seal_memtable())
    }

    /// fdatasyncs of the journal made by its sync thread so far.
    pub fn journal_syncs(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.syncs())
    }

    /// Makes everything written so far survive power loss, whatever the
    /// store's [`Durability`]; blocks until then. Through the journal's sync
    /// thread: fjall's own persist would fsync under its journal mutex,
    /// stalling every writer meanwhile.
    pub fn sync(&self) -> Result<(), StorageError> {
        let Some(journal) = &self.journal else { return Ok(()) };
        futures::executor::block_on(journal.durable())
    }
}

fn open_fjall(dir: &Path, durability: Durability, budget: MemoryBudget) -> Result<Storage, StorageError> {
    let (db, quarantined) = open_salvaging(dir, budget)?;
    let health = Arc::<Health>::default();
    // Nobody waits for `--sync kernel`'s syncs: they only keep the journal's
    // unwritten tail short (see journal_sync).
    let writeback = (durability == Durability::Kernel).then_some(journal_sync::WRITEBACK);
    let journal = Arc::new(JournalSync::start(dir, writeback, health.clone()).map_err(StorageError::SyncThread)?);
    let tree = |name| FjallTree::open(&db, name, &journal, &health, budget);
    Ok(Storage {
        data: Box::new(tree("data")?),
        hints: Box::new(tree("hints")?),
        meta: Box::new(tree("meta")?),
        kind: EngineKind::Fjall,
        durability,
        journal: Some(journal),
        health,
        quarantined,
        db: Some(db),
    })
}

/// Opens the database; when its journal is too damaged for fjall to
/// recover (it already drops a torn tail by itself), moves journal files
/// aside, newest first, until it opens. What they held is lost here — the
/// node says so loudly, its dot lease keeps it from reissuing dots, and
/// the other replicas hold the data — but a node that cannot start at all
/// would be worse: nobody could repair it without an operator.
fn open_salvaging(dir: &Path, budget: MemoryBudget) -> Result<(Database, Vec<PathBuf>), StorageError> {
    let mut quarantined = Vec::new();
    loop {
        // fjall's journal reader asserts on some malformed entries instead
        // of returning an error: a panic while opening is a damaged journal
        // too.
        let opened = std::panic::catch_unwind(|| Database::builder(dir).cache_size(budget.cache_bytes).open());
        let damage = match opened {
            Ok(Ok(db)) => return Ok((db, quarantined)),
            Ok(Err(error @ fjall::Error::JournalRecovery(_))) => error.to_string(),
            Ok(Err(source)) => return Err(StorageError::Open { path: dir.to_path_buf(), source }),
            Err(_) => "fjall panicked reading it".to_owned(),
        };
        let Some((_, journal)) = newest_journal(dir) else {
            return Err(StorageError::Open { path: dir.to_path_buf(), source: fjall::Error::Unrecoverable });
        };
        let aside = journal.with_extension("jnl.damaged");
        tracing::error!(
            "STORAGE JOURNAL DAMAGED: fjall cannot recover {} ({damage}); moving it to {} and opening without it",
            journal.display(),
            aside.display()
        );
        std::fs::rename(&journal, &aside)
            .map_err(|e| StorageError::Open { path: dir.to_path_buf(), source: fjall::Error::Io(e) })?;
        quarantined.push(aside);
    }
}

/// fjall 3 keeps its journals as `<number>.jnl` in the database folder.
fn newest_journal(dir: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let number = path.file_name()?.to_str()?.strip_suffix(".jnl")?.parse::<u64>().ok()?;
            Some((number, path))
        })
        .max()
}

/// A fjall keyspace plus the lock that makes `remove_if_equal` atomic.
///
/// fjall 3's plain keyspace has no compare-and-delete. Its transactional
/// databases do, but they route every write of every keyspace through a
/// write batch (single-writer) or add conflict retries (optimistic). fjall
/// already serialises all writes on its journal mutex, so a per-tree write
/// mutex around the same critical section costs one uncontended lock and no
/// parallelism. No write syncs here: the journal's own thread does
/// (see journal_sync).
struct FjallTree {
    name: &'static str,
    db: Database,
    keyspace: Keyspace,
    journal: Arc<JournalSync>,
    write_lock: Mutex<()>,
    health: Arc<Health>,
}

impl FjallTree {
    fn open(
        db: &Database,
        name: &'static str,
        journal: &Arc<JournalSync>,
        health: &Arc<Health>,
        budget: MemoryBudget,
    ) -> Result<Self, StorageError> {
        let options = || KeyspaceCreateOptions::default().max_memtable_size(budget.memtable_bytes);
        let keyspace = db.keyspace(name, options).map_err(|source| StorageError::OpenTree { tree: name, source })?;
        Ok(FjallTree {
            name,
            db: db.clone(),
            keyspace,
            journal: journal.clone(),
            write_lock: Mutex::new(()),
            health: health.clone(),
        })
    }

    fn error(&self, op: &'static str) -> impl FnOnce(fjall::Error) -> StorageError {
        let tree = self.name;
        move |source| StorageError::Engine { tree, op, source }
    }

    /// Like [`error`](Self::error), for a write: its failure is the
    /// engine's (see [`Health`]).
    fn write_error(&self, op: &'static str) -> impl FnOnce(fjall::Error) -> StorageError + '_ {
        move |source| {
            let error = StorageError::Engine { tree: self.name, op, source };
            self.health.record(&error);
            error
        }
    }

    fn locked<T>(
        &self,
        op: &'static str,
        write: impl FnOnce(&Keyspace) -> fjall::Result<T>,
    ) -> Result<T, StorageError> {
        // The mutex guards no data, so a panic while holding it leaves
        // nothing inconsistent behind.
        let _guard = self.write_lock.lock().unwrap_or_else(PoisonError::into_inner);
        write(&self.keyspace).map_err(self.write_error(op))
    }

    /// Hands the journal to the OS and counts the write for the journal's
    /// syncer. fjall already write(2)s the journal after each write unless a
    /// keyspace was created with `manual_journal_persist`; persisting
    /// explicitly keeps the guarantee independent of that stored option, and
    /// costs only a mutex when nothing is left buffered.
    fn persist(&self) -> Result<(), StorageError> {
        self.db.persist(PersistMode::Buffer).map_err(self.write_error("persist"))?;
        self.journal.written();
        Ok(())
    }
}

impl Tree for FjallTree {
    fn seal_memtable(&self) -> Result<(), StorageError> {
        self.keyspace.rotate_memtable().map(drop).map_err(self.error("seal memtable"))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.keyspace.get(key).map_err(self.error("get"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.locked("insert", |ks| ks.insert(key, value))?;
        self.persist()
    }

    fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.locked("remove", |ks| ks.remove(key))?;
        self.persist()
    }

    fn remove_if_equal(&self, key: &[u8], expected: &[u8]) -> Result<bool, StorageError> {
        let removed = self.locked("remove_if_equal", |ks| match ks.get(key)? {
            Some(current) if *current == *expected => ks.remove(key).map(|()| true),
            _ => Ok(false),
        })?;
        if removed {
            self.persist()?;
        }
        Ok(removed)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<KvPairs, StorageError> {
        self.keyspace
            .prefix(prefix)
            .map(|guard| guard.into_inner().map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<fjall::Result<_>>()
            .map_err(self.error("scan_prefix"))
    }

    fn len(&self) -> Result<usize, StorageError> {
        self.keyspace.len().map_err(self.error("len"))
    }
}

#[derive(Default)]
struct MemoryTree {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

// Lock poisoning is ignored: BTreeMap stays structurally valid if a holder
// panics, and every operation here changes at most one entry, so there is
// no half-applied multi-step update to hide.
impl MemoryTree {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tree for MemoryTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.read().get(key).cloned())
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.write().remove(key);
        Ok(())
    }

    fn remove_if_equal(&self, key: &[u8], expected: &[u8]) -> Result<bool, StorageError> {
        let mut map = self.write();
        let matches = map.get(key).is_some_and(|current| current == expected);
        if matches {
            map.remove(key);
        }
        Ok(matches)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<KvPairs, StorageError> {
        let map = self.read();
        let from: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Included(prefix), Bound::Unbounded);
        Ok(map
            .range::<[u8], _>(from)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn len(&self) -> Result<usize, StorageError> {
        Ok(self.read().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    type TestResult = Result<(), Box<dyn Error>>;

    fn key(partition: u32, suffix: &[u8]) -> Vec<u8> {
        let mut key = partition.to_be_bytes().to_vec();
        key.extend_from_slice(suffix);
        key
    }

    fn pairs(entries: &[(Vec<u8>, &[u8])]) -> KvPairs {
        entries.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect()
    }

    /// The behaviour every engine must share; run once per engine.
    fn check_contract(storage: &Storage) -> TestResult {
        let tree = &storage.data;
        assert_eq!(tree.get(b"missing")?, None);
        assert_eq!(tree.len()?, 0);

        // Inserted out of order, and with neighbours on both sides of
        // partition 1, to catch scans that start or stop at the wrong key.
        tree.insert(&key(1, b"b"), b"1b")?;
        tree.insert(&key(2, b""), b"2")?;
        tree.insert(&key(1, b"a"), b"1a")?;
        tree.insert(&key(0, b"\xff\xff"), b"0")?;
        tree.insert(&key(1, b""), b"1")?;
        assert_eq!(tree.len()?, 5);
        assert_eq!(tree.get(&key(1, b"a"))?, Some(b"1a".to_vec()));

        let expected = pairs(&[(key(1, b""), b"1"), (key(1, b"a"), b"1a"), (key(1, b"b"), b"1b")]);
        assert_eq!(tree.scan_prefix(&key(1, b""))?, expected);
        assert_eq!(tree.scan_prefix(&key(2, b""))?, pairs(&[(key(2, b""), b"2")]));
        assert_eq!(tree.scan_prefix(&key(3, b""))?, vec![]);
        assert_eq!(tree.scan_prefix(b"")?.len(), 5);

        tree.insert(&key(1, b"a"), b"1a-v2")?;
        assert_eq!(tree.get(&key(1, b"a"))?, Some(b"1a-v2".to_vec()));
        assert_eq!(tree.len()?, 5);

        tree.remove(&key(1, b"b"))?;
        tree.remove(b"never-existed")?;
        assert_eq!(tree.get(&key(1, b"b"))?, None);
        assert_eq!(tree.len()?, 4);

        // A stale expectation must leave the newer value in place.
        assert!(!tree.remove_if_equal(&key(1, b"a"), b"1a")?);
        assert_eq!(tree.get(&key(1, b"a"))?, Some(b"1a-v2".to_vec()));
        assert!(tree.remove_if_equal(&key(1, b"a"), b"1a-v2")?);
        assert_eq!(tree.get(&key(1, b"a"))?, None);
        assert!(!tree.remove_if_equal(&key(1, b"a"), b"1a-v2")?);

        // The trees are separate namespaces.
        storage.hints.insert(b"h", b"hint")?;
        storage.meta.insert(b"actor", b"id")?;
        assert_eq!(storage.data.get(b"h")?, None);
        assert_eq!(storage.hints.get(b"actor")?, None);
        assert_eq!(storage.meta.scan_prefix(b"")?, pairs(&[(b"actor".to_vec(), b"id")]));
        Ok(())
    }

    #[test]
    fn memory_engine_honours_contract() -> TestResult {
        let storage = Storage::open(EngineKind::Memory, Path::new("/nonexistent"), Durability::Kernel)?;
        assert!(!storage.is_persistent());
        check_contract(&storage)
    }

    #[test]
    fn fjall_engine_honours_contract() -> TestResult {
        let dir = tempfile::tempdir()?;
        let storage = Storage::open(EngineKind::Fjall, dir.path(), Durability::Kernel)?;
        assert!(storage.is_persistent());
        check_contract(&storage)
    }

    #[test]
    fn fjall_keeps_data_across_clean_reopen() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let storage = Storage::open(EngineKind::Fjall, dir.path(), Durability::Kernel)?;
            storage.data.insert(&key(7, b"k"), b"v")?;
            storage.data.insert(&key(7, b"gone"), b"v")?;
            storage.data.remove(&key(7, b"gone"))?;
            storage.hints.insert(b"hint", b"h")?;
            storage.meta.insert(b"actor", b"a")?;
        }
        let storage = Storage::open(EngineKind::Fjall, dir.path(), Durability::Kernel)?;
        assert_eq!(storage.data.scan_prefix(&key(7, b""))?, pairs(&[(key(7, b"k"), b"v")]));
        assert_eq!(storage.hints.get(b"hint")?, Some(b"h".to_vec()));
        assert_eq!(storage.meta.get(b"actor")?, Some(b"a".to_vec()));
        Ok(())
    }

    #[test]
    fn sealing_flushes_what_the_memtables_hold_and_keeps_it_readable() -> TestResult {
        let dir = tempfile::tempdir()?;
        let storage = Storage::open(EngineKind::Fjall, dir.path(), Durability::Kernel)?;
        for i in 0..100u32 {
            storage.data.insert(&key(i, b"k"), &[7; 100])?;
        }
        storage.hints.insert(b"hint", b"h")?;
        let buffered = storage.engine_memory().write_buffer_bytes;
        assert!(buffered >= 100 * 100, "{buffered} bytes buffered after 10 kB of values");

        storage.seal_memtables()?;
        // The flush runs on fjall's workers; the deadline only bounds a hang.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while storage.engine_memory().write_buffer_bytes > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(storage.engine_memory().write_buffer_bytes, 0, "the sealed memtables were flushed");
        assert_eq!(storage.data.get(&key(42, b"k"))?, Some(vec![7; 100]));
        assert_eq!(storage.hints.get(b"hint")?, Some(b"h".to_vec()));
        storage.seal_memtables()?; // nothing left to seal is not an error
        Ok(())
    }

    #[test]
    fn fjall_fsync_mode_writes_and_reopens() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let storage = Storage::open(EngineKind::Fjall, dir.path(), Durability::Fsync)?;
            storage.data.insert(b"a", b"1")?;
            storage.data.insert(b"b", b"2")?;
            storage.data.remove(b"a")?;
            storage.hints.insert(b"h", b"x")?;
            assert!(storage.hints.remove_if_equal(b"h", b"x")?);
        }
        let storage = Storage::open(EngineKind::Fjall, dir.path(), Durability::Fsync)?;
        assert_eq!(storage.data.scan_prefix(b"")?, pairs(&[(b"b".to_vec(), b"2")]));
        assert_eq!(storage.hints.len()?, 0);
        Ok(())
    }

    /// Wherever garbage lands in the journal, the store opens: fjall drops
    /// a torn tail itself, and a journal it cannot read (an error or a
    /// panic) is moved aside and reported.
    #[test]
    fn fjall_opens_whatever_part_of_the_journal_is_overwritten() -> TestResult {
        let pristine = tempfile::tempdir()?;
        {
            let storage = Storage::open(EngineKind::Fjall, pristine.path(), Durability::Kernel)?;
            for i in 0..300 {
                storage.data.insert(&crash_key(i), &crash_value(i))?;
            }
        }
        let (_, journal) = newest_journal(pristine.path()).ok_or("no journal")?;
        let bytes = std::fs::read(&journal)?;
        let written = bytes.iter().rposition(|&b| b != 0).ok_or("empty journal")? + 1;
        let mut quarantined = 0;
        for step in 1..40 {
            let at = written * step / 40;
            let dir = tempfile::tempdir()?;
            for entry in std::fs::read_dir(pristine.path())? {
                let entry = entry?;
                copy_tree(&entry.path(), &dir.path().join(entry.file_name()))?;
            }
            let mut damaged = bytes.clone();
            damaged[at..(at + 64).min(written)].fill(0x5a);
            std::fs::write(dir.path().join(journal.file_name().ok_or("journal name")?), &damaged)?;
            let storage = Storage::open(EngineKind::Fjall, dir.path(), Durability::Kernel)
                .map_err(|e| format!("garbage at byte {at} of {written}: {e}"))?;
            quarantined += usize::from(!storage.quarantined().is_empty());
            assert!(storage.data.len()? < 300, "garbage at byte {at} lost nothing?");
        }
        eprintln!("{quarantined} of 39 damaged journals had to be moved aside");
        Ok(())
    }

    fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
        if from.is_dir() {
            std::fs::create_dir_all(to)?;
            for entry in std::fs::read_dir(from)? {
                let entry = entry?;
                copy_tree(&entry.path(), &to.join(entry.file_name()))?;
            }
            Ok(())
        } else {
            std::fs::copy(from, to).map(drop)
        }
    }

    #[test]
    fn flag_values_round_trip_through_strings() -> TestResult {
        for kind in [EngineKind::Fjall, EngineKind::Memory] {
            assert_eq!(kind.to_string().parse::<EngineKind>()?, kind);
        }
        for durability in [Durability::Kernel, Durability::Fsync] {
            assert_eq!(durability.to_string().parse::<Durability>()?, durability);
        }
        assert!(matches!("sled".parse::<EngineKind>(), Err(StorageError::UnknownEngine(_))));
        assert!(matches!("never".parse::<Durability>(), Err(StorageError::UnknownDurability(_))));
        Ok(())
    }

    /// clap and anyhow need parse and open errors to cross threads.
    #[test]
    fn errors_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<StorageError>();
    }

    /// With `--sync always`, writes waiting together share one fsync, and
    /// none is answered before it.
    #[tokio::test]
    async fn fjall_group_commit_shares_one_fsync_among_waiting_writers() -> TestResult {
        let dir = tempfile::tempdir()?;
        let storage = Storage::open(EngineKind::Fjall, dir.path(), Durability::Fsync)?;
        for i in 0..100 {
            storage.data.insert(&crash_key(i), &crash_value(i))?;
        }
        assert_eq!(storage.journal_syncs(), 0, "synced although nobody waited");
        let waiters: Vec<_> = (0..100).map(|_| storage.durable()).collect();
        for result in futures::future::join_all(waiters).await {
            result?;
        }
        // Every write came before the first waiter: one sync covers them all.
        assert_eq!(storage.journal_syncs(), 1);
        storage.data.insert(&crash_key(100), &crash_value(100))?;
        storage.durable().await?;
        assert_eq!(storage.journal_syncs(), 2, "a later write was answered without a sync of its own");
        Ok(())
    }

    const SIGKILL_DIR_ENV: &str = "DYNABED_STORAGE_SIGKILL_DIR";
    const SIGKILL_SYNC_ENV: &str = "DYNABED_STORAGE_SIGKILL_SYNC";
    const ACKS_BEFORE_KILL: usize = 3_000;
    const SIGKILL_WRITERS: usize = 8;

    fn crash_key(i: usize) -> Vec<u8> {
        key(9, &(i as u64).to_be_bytes())
    }

    fn crash_value(i: usize) -> Vec<u8> {
        let mut value = vec![0xAB; 100];
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        value
    }

    /// Libtest's name for a test in this module, wherever the module sits.
    fn test_name(function: &str) -> String {
        let module = module_path!();
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        format!("{module}::{function}")
    }

    /// Child side of the SIGKILL tests: writers that ack on stdout, as a
    /// replica would, until the parent kills it: a write is acked once
    /// [`Storage::durable`] resolved after it. Stdout is line-buffered, so
    /// each ack line leaves the process only after that.
    #[test]
    #[ignore = "helper process, spawned by the fjall_*_after_sigkill tests"]
    fn sigkill_child() -> TestResult {
        let Some(dir) = std::env::var_os(SIGKILL_DIR_ENV) else {
            return Ok(());
        };
        let durability: Durability = std::env::var(SIGKILL_SYNC_ENV)?.parse()?;
        let storage = Storage::open(EngineKind::Fjall, Path::new(&dir), durability)?;
        std::thread::scope(|scope| {
            for writer in 0..SIGKILL_WRITERS {
                let storage = &storage;
                scope.spawn(move || -> Result<(), StorageError> {
                    // Bounded so an orphaned child cannot fill the disk.
                    for i in (writer..1_000_000).step_by(SIGKILL_WRITERS) {
                        storage.data.insert(&crash_key(i), &crash_value(i))?;
                        futures::executor::block_on(storage.durable())?;
                        println!("acked {i}");
                    }
                    Ok(())
                });
            }
        });
        Ok(())
    }

    /// Kills a child writing with `sync` after enough acks; every write it
    /// acked must be there after reopening.
    fn check_acked_writes_survive_sigkill(sync: Durability) -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--exact", &test_name("sigkill_child"), "--ignored", "--nocapture"])
            .env(SIGKILL_DIR_ENV, dir.path())
            .env(SIGKILL_SYNC_ENV, sync.to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let mut acked = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        let ack = |line: &str| line.strip_prefix("acked ").and_then(|i| i.parse::<usize>().ok());
        while acked.len() < ACKS_BEFORE_KILL {
            let line = lines.next().ok_or("child exited before being killed")??;
            acked.extend(ack(&line));
        }
        child.kill()?; // SIGKILL on Unix: no destructors, no flush.
        let status = child.wait()?;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "child was not killed: {status}");
        // Acks still in the pipe were printed before the kill, so they count.
        for line in lines {
            acked.extend(ack(&line?));
        }

        let storage = Storage::open(EngineKind::Fjall, dir.path(), sync)?;
        for i in acked {
            assert_eq!(storage.data.get(&crash_key(i))?, Some(crash_value(i)), "acked write {i} lost");
        }
        Ok(())
    }

    #[test]
    fn fjall_recovers_acked_writes_after_sigkill() -> TestResult {
        check_acked_writes_survive_sigkill(Durability::Kernel)
    }

    /// The group commit's acks too (a SIGKILL keeps the page cache, so this
    /// checks that acks wait for their write and that the journal's own sync
    /// thread leaves it readable, not the fsync itself).
    #[test]
    fn fjall_group_commit_recovers_acked_writes_after_sigkill() -> TestResult {
        check_acked_writes_survive_sigkill(Durability::Fsync)
    }
}
