//! This node's replica: the objects it holds and the hints it keeps for
//! others, on top of the storage engine, with the Merkle trees that
//! summarise it kept current on every change.
//!
//! Every change is a read-merge-write of one key. Two such changes to the
//! same key must not interleave, or the second would overwrite what the
//! first merged in; a striped lock serialises them without a lock per key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::clock::NodeClock;
use super::identity::{Identity, IdentityError};
use super::merkle::{self, Hash, Trees};
use super::metrics::Counters;
use super::storage::{Storage, StorageError};
use super::version::{Object, PruneRule, VersionError, VersionVector};
use crate::api::dot::Dot;

const STRIPES: usize = 1024;
/// Separates the owner's name from the key in a hint's storage key; node
/// names cannot contain it.
const HINT_SEPARATOR: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("stored object for key {key:?} is corrupt: {source}")]
    Corrupt { key: String, source: VersionError },
    #[error("key {key:?} has more than {limit} siblings: read it and write back with its context to resolve them")]
    TooManySiblings { key: String, limit: usize },
}

/// A hint waiting for its owner, as stored.
pub struct Hint {
    pub owner: String,
    pub key: Bytes,
    /// The stored bytes, compared on removal so that a hint updated while it
    /// was being delivered is kept.
    pub encoded: Vec<u8>,
}

pub struct Replica {
    storage: Storage,
    trees: Mutex<Trees>,
    stripes: Vec<Mutex<()>>,
    identity: Identity,
    /// Changes made, and how many of them the last checkpoint covered.
    changes: AtomicU64,
    checkpointed: AtomicU64,
    prune: PruneRule,
    /// The most clock entries any object written here had: how far
    /// clocks grow (under partitions, beyond N) despite pruning.
    largest_clock: AtomicU64,
    /// Concurrent values a write may leave; beyond it the write is refused
    /// rather than letting objects grow without bound (Riak's max_siblings).
    max_siblings: usize,
    counters: Arc<Counters>,
    /// Stamps versions, so pruning by age follows the node's (maybe skewed) clock.
    clock: Arc<NodeClock>,
}

impl Replica {
    /// Wraps opened storage, building the Merkle trees from what it holds.
    pub fn new(
        storage: Storage,
        identity: Identity,
        prune: PruneRule,
        max_siblings: usize,
        counters: Arc<Counters>,
        clock: Arc<NodeClock>,
    ) -> Result<Self, ReplicaError> {
        let mut trees = Trees::default();
        for (storage_key, encoded) in storage.data.scan_prefix(&[])? {
            if let Some((partition, key)) = split_data_key(&storage_key) {
                trees.apply(partition, key, None, Some(&encoded));
            }
        }
        Ok(Replica {
            storage,
            trees: Mutex::new(trees),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            identity,
            changes: AtomicU64::new(0),
            checkpointed: AtomicU64::new(0),
            prune,
            largest_clock: AtomicU64::new(0),
            max_siblings,
            counters,
            clock,
        })
    }

    pub fn actor(&self) -> &str {
        self.identity.actor()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn read(&self, partition: u32, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        self.load(&data_key(partition, key), key)
    }

    /// Everything this node knows of a key, as a replica read answers: its
    /// copy in the partition merged with any hint it keeps for one of
    /// `owners` (the key's preference list) — a stand-in's or a sloppy
    /// coordinator's data counts for a read like a replica's.
    pub fn read_with_hints<'a>(
        &self,
        partition: u32,
        key: &[u8],
        owners: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Object>, ReplicaError> {
        let mut known = self.read(partition, key)?;
        for owner in owners {
            if let Some(bytes) = self.storage.hints.get(&hint_key(owner, key))? {
                let hint = decode(&bytes, key)?;
                self.merge_counted(known.get_or_insert_with(Object::default), &hint);
            }
        }
        Ok(known)
    }

    /// Merges `incoming` into `into` under the pruning rule, counting what
    /// it prunes.
    pub fn merge_counted(&self, into: &mut Object, incoming: &Object) {
        let pruned = into.merge(incoming, self.prune, self.clock.now_ms());
        Counters::add(&self.counters.prune_events, pruned as u64);
    }

    /// The most clock entries an object stored here has had.
    pub fn largest_clock(&self) -> u64 {
        self.largest_clock.load(Ordering::Relaxed)
    }

    fn note_clock(&self, object: &Object) {
        self.largest_clock.fetch_max(object.clock.len() as u64, Ordering::Relaxed);
    }

    /// The coordinator's own write: a new sibling superseding what `context`
    /// saw. Returns the object as it now stands here, encoded too, and the
    /// write's dot.
    pub fn update(
        &self,
        partition: u32,
        key: &[u8],
        context: &VersionVector,
        value: Option<Bytes>,
    ) -> Result<(Object, Bytes, Dot), ReplicaError> {
        let storage_key = data_key(partition, key);
        let _guard = self.lock(&storage_key);
        let old = self.storage.data.get(&storage_key)?;
        let mut object = old.as_deref().map(|b| decode(b, key)).transpose()?.unwrap_or_default();
        let (encoded, dot) = self.write_over(&mut object, key, context, value)?;
        self.store(partition, key, &storage_key, old.as_deref(), Some(&encoded))?;
        Ok((object, encoded, dot))
    }

    /// The coordinator's new version of `object`, under a dot this node
    /// never issued before: pruned, checked against `max_siblings`,
    /// counted, and encoded for storing and replicating.
    fn write_over(
        &self,
        object: &mut Object,
        key: &[u8],
        context: &VersionVector,
        value: Option<Bytes>,
    ) -> Result<(Bytes, Dot), ReplicaError> {
        let actor = self.identity.actor();
        let counter = self.identity.issue_counter(object.min_counter(context, actor))?;
        let dot = Dot { actor: actor.to_owned(), counter };
        let pruned = object.update(context, dot.clone(), value, self.clock.now_ms(), self.prune);
        self.refuse_too_many_siblings(object, key)?;
        Counters::add(&self.counters.prune_events, pruned as u64);
        self.note_clock(object);
        Ok((Bytes::from(object.encode()), dot))
    }

    /// A write may not leave more siblings than `max_siblings`.
    fn refuse_too_many_siblings(&self, object: &Object, key: &[u8]) -> Result<(), ReplicaError> {
        if object.siblings.len() <= self.max_siblings {
            return Ok(());
        }
        Err(ReplicaError::TooManySiblings { key: String::from_utf8_lossy(key).into_owned(), limit: self.max_siblings })
    }

    /// A sloppy coordinator's write (Dynamo §4.4): like [`update`](Self::update),
    /// under this node's own dot and built on everything it knows of the
    /// key, but kept as a hint for `owner`, since this node does not hold
    /// the key's partition.
    pub fn update_as_hint(
        &self,
        owner: &str,
        partition: u32,
        key: &[u8],
        owners: &[String],
        context: &VersionVector,
        value: Option<Bytes>,
    ) -> Result<(Object, Bytes, Dot), ReplicaError> {
        let storage_key = hint_key(owner, key);
        let _guard = self.lock(&storage_key);
        let mut object = self.read_with_hints(partition, key, owners.iter().map(String::as_str))?.unwrap_or_default();
        let (encoded, dot) = self.write_over(&mut object, key, context, value)?;
        // `object` includes the hint already kept for `owner`, so it replaces it.
        self.storage.hints.insert(&storage_key, &encoded)?;
        self.changes.fetch_add(1, Ordering::Relaxed);
        Counters::bump(&self.counters.hints_stored);
        Ok((object, encoded, dot))
    }

    /// Merges a peer's version into ours; returns the merged object.
    pub fn merge(&self, partition: u32, key: &[u8], incoming: &Object) -> Result<Object, ReplicaError> {
        let storage_key = data_key(partition, key);
        let _guard = self.lock(&storage_key);
        let old = self.storage.data.get(&storage_key)?;
        let mut merged = old.as_deref().map(|b| decode(b, key)).transpose()?.unwrap_or_default();
        self.merge_counted(&mut merged, incoming);
        self.note_clock(&merged);
        let encoded = merged.encode();
        if old.as_deref() != Some(encoded.as_slice()) {
            self.store(partition, key, &storage_key, old.as_deref(), Some(&encoded))?;
        }
        Ok(merged)
    }

    /// Removes `key` if what is stored still hashes to `expected` (a reaped
    /// tombstone that nothing has overwritten since it was checked).
    pub fn remove_if_unchanged(&self, partition: u32, key: &[u8], expected: Hash) -> Result<bool, ReplicaError> {
        let storage_key = data_key(partition, key);
        let _guard = self.lock(&storage_key);
        let Some(old) = self.storage.data.get(&storage_key)? else { return Ok(false) };
        if merkle::entry_hash(key, &old) != expected {
            return Ok(false);
        }
        self.store(partition, key, &storage_key, Some(&old), None)?;
        Ok(true)
    }

    /// Every key of a partition with its encoded object, in key order.
    pub fn scan_partition(&self, partition: u32) -> Result<Vec<(Bytes, Vec<u8>)>, ReplicaError> {
        let entries = self.storage.data.scan_prefix(&partition.to_be_bytes())?;
        Ok(entries.into_iter().map(|(k, v)| (Bytes::copy_from_slice(&k[4..]), v)).collect())
    }

    /// Runs `f` on the Merkle trees.
    pub fn with_trees<T>(&self, f: impl FnOnce(&Trees) -> T) -> T {
        f(&self.trees.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes (or, with `new` = None, removes) one entry and updates its
    /// partition's tree; the caller holds the key's stripe.
    fn store(
        &self,
        partition: u32,
        key: &[u8],
        storage_key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), ReplicaError> {
        match new {
            Some(bytes) => self.storage.data.insert(storage_key, bytes)?,
            None => self.storage.data.remove(storage_key)?,
        }
        self.trees.lock().unwrap_or_else(|e| e.into_inner()).apply(partition, key, old, new);
        self.changes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether anything changed since the last checkpoint, at the cost of
    /// two atomic loads: an idle node need not wake a blocking thread to learn it.
    pub fn needs_checkpoint(&self) -> bool {
        self.storage.is_persistent()
            && self.changes.load(Ordering::Relaxed) != self.checkpointed.load(Ordering::Relaxed)
    }

    /// Takes a checkpoint (see [`Identity::checkpoint`]) if anything
    /// changed since the last one; returns whether it took one. Blocks on
    /// disk syncs: call it off the request path.
    pub fn checkpoint_if_changed(&self) -> Result<bool, ReplicaError> {
        let changes = self.changes.load(Ordering::Relaxed);
        if !self.needs_checkpoint() {
            return Ok(false);
        }
        self.identity.checkpoint(&self.storage)?;
        self.checkpointed.store(changes, Ordering::Relaxed);
        Ok(true)
    }

    /// Keeps `object` for `owner`, merged with any hint already held.
    pub fn add_hint(&self, owner: &str, key: &[u8], object: &Object) -> Result<(), ReplicaError> {
        let storage_key = hint_key(owner, key);
        let _guard = self.lock(&storage_key);
        let mut hint = match self.storage.hints.get(&storage_key)? {
            Some(bytes) => decode(&bytes, key)?,
            None => Object::default(),
        };
        self.merge_counted(&mut hint, object);
        self.note_clock(&hint);
        self.storage.hints.insert(&storage_key, &hint.encode())?;
        self.changes.fetch_add(1, Ordering::Relaxed);
        Counters::bump(&self.counters.hints_stored);
        Ok(())
    }

    /// Every hint held, grouped by owner in name order.
    pub fn hints(&self) -> Result<Vec<Hint>, ReplicaError> {
        let entries = self.storage.hints.scan_prefix(&[])?;
        Ok(entries
            .into_iter()
            .filter_map(|(k, encoded)| {
                let at = k.iter().position(|&b| b == HINT_SEPARATOR)?;
                let owner = String::from_utf8(k[..at].to_vec()).ok()?;
                Some(Hint { owner, key: Bytes::copy_from_slice(&k[at + 1..]), encoded })
            })
            .collect())
    }

    /// Removes a delivered hint unless it changed since it was read.
    pub fn remove_hint(&self, hint: &Hint) -> Result<bool, ReplicaError> {
        Ok(self.storage.hints.remove_if_equal(&hint_key(&hint.owner, &hint.key), &hint.encoded)?)
    }

    pub fn hints_pending(&self) -> Result<usize, ReplicaError> {
        Ok(self.storage.hints.len()?)
    }

    fn load(&self, storage_key: &[u8], key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        self.storage.data.get(storage_key)?.map(|bytes| decode(&bytes, key)).transpose()
    }

    fn lock(&self, storage_key: &[u8]) -> MutexGuard<'_, ()> {
        let stripe = xxhash_rust::xxh3::xxh3_64(storage_key) as usize % STRIPES;
        // A panic while holding a stripe cannot leave storage half-written
        // (each write is one insert), so a poisoned stripe is still usable.
        self.stripes[stripe].lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn decode(bytes: &[u8], key: &[u8]) -> Result<Object, ReplicaError> {
    Object::decode(bytes)
        .map_err(|source| ReplicaError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source })
}

/// Data keys start with the partition, so a partition is one prefix range.
fn data_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn split_data_key(storage_key: &[u8]) -> Option<(u32, &[u8])> {
    let partition = u32::from_be_bytes(storage_key.get(..4)?.try_into().ok()?);
    Some((partition, &storage_key[4..]))
}

fn hint_key(owner: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner.len() + 1 + key.len());
    k.extend_from_slice(owner.as_bytes());
    k.push(HINT_SEPARATOR);
    k.extend_from_slice(key);
    k
}
