//! Anti-entropy: Merkle-tree exchanges between replicas, repair rounds,
//! the rate-limited background loop, and tombstone reaping.
//!
//! One exchange reconciles one partition between this node and one peer,
//! top-down: roots (one hash each way; equal roots end it), then the 16
//! group hashes, then the leaves under differing groups, then key digests
//! under differing leaves, and finally only the objects that differ, both
//! ways (push-pull). Versions are merged, never overwritten, so an exchange
//! can only add knowledge. The cost therefore grows with the difference,
//! not with the data.
//!
//! A repair round is DESIGN.md's unit of convergence: for every partition
//! it replicates, this node does one exchange with one other replica chosen
//! at random from a seed (or with all of them). The caller runs the rounds
//! of all nodes in parallel and counts them. A *staged* round keeps what it
//! learns aside until the caller commits it on every node, so that every
//! exchange of the round sees the state from before the round: the number
//! of rounds a key needs then depends on the seed alone, not on which node
//! happened to finish first.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;

use super::merkle::{self, Hash, GROUPS, LEAVES};
use super::metrics::Counters;
use super::peer::Traffic;
use super::protocol::{Request, Response};
use super::replica::{self, ReplicaError};
use super::rpc::{Reaped, Stored};
use super::Node;
use crate::api::admin::{Fanout, SyncStats};

/// Exchanges one repair round runs at once on this node.
const ROUND_PARALLELISM: usize = 8;

impl SyncStats {
    fn add(&mut self, other: &SyncStats) {
        self.partitions += other.partitions;
        self.exchanges += other.exchanges;
        self.in_sync += other.in_sync;
        self.differing_leaves += other.differing_leaves;
        self.keys_sent += other.keys_sent;
        self.keys_received += other.keys_received;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.tombstones_reaped += other.tombstones_reaped;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    fn count(&mut self, traffic: Traffic) {
        self.bytes_sent += traffic.sent;
        self.bytes_received += traffic.received;
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("peer {0} did not answer")]
    Unreachable(String),
    #[error("peer {peer} answered {answer}")]
    Unexpected { peer: String, answer: String },
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

impl Node {
    /// This node's share of one repair round.
    pub async fn repair_round(self: &Arc<Self>, seed: u64, fanout: Fanout, staged: bool) -> SyncStats {
        let started = Instant::now();
        let ring = self.membership.ring();
        let n = self.membership.n();
        let partitions = ring.replicated_partitions(self.id(), n);
        let mut total = SyncStats::default();
        let mut each = stream::iter(partitions)
            .map(|partition| {
                let peers = self.round_peers(partition, seed, fanout);
                async move { self.sync_partition(partition, peers, staged).await }
            })
            .buffer_unordered(ROUND_PARALLELISM);
        while let Some(stats) = each.next().await {
            total.add(&stats);
        }
        total.duration_ms = started.elapsed().as_millis() as u64;
        total
    }

    /// The replicas this node reconciles `partition` with in a round; the
    /// draw depends only on the seed, this node and the partition, so a
    /// round is reproducible.
    fn round_peers(&self, partition: u32, seed: u64, fanout: Fanout) -> Vec<String> {
        let ring = self.membership.ring();
        let others: Vec<String> = ring
            .preference_list(partition, self.membership.n())
            .into_iter()
            .filter(|p| *p != self.id() && self.membership.is_reachable(p))
            .map(str::to_owned)
            .collect();
        match fanout {
            Fanout::All => others,
            Fanout::One => {
                let salt = xxhash_rust::xxh3::xxh3_64(self.id().as_bytes()) ^ u64::from(partition).rotate_left(32);
                let mut rng = StdRng::seed_from_u64(seed ^ salt);
                others.choose(&mut rng).cloned().into_iter().collect()
            }
        }
    }

    async fn sync_partition(&self, partition: u32, peers: Vec<String>, staged: bool) -> SyncStats {
        let mut stats = SyncStats { partitions: 1, ..Default::default() };
        if peers.is_empty() {
            stats.skipped = 1;
        }
        for peer in peers {
            match self.exchange(partition, &peer, staged).await {
                Ok(exchange) => stats.add(&exchange),
                Err(e) => {
                    tracing::debug!(peer, partition, "anti-entropy exchange failed: {e}");
                    stats.failed += 1;
                }
            }
        }
        if !staged {
            stats.tombstones_reaped += self.reap_tombstones(partition).await;
        }
        stats
    }

    /// Reconciles one partition with one peer, both ways.
    async fn exchange(&self, partition: u32, peer: &str, staged: bool) -> Result<SyncStats, SyncError> {
        let mut stats = SyncStats { exchanges: 1, ..Default::default() };
        let leaves = self.replica.with_trees(|t| t.leaves(partition));
        let groups = merkle::groups_of(&leaves);
        let root = merkle::root_of(&groups);
        let theirs = match self.ask(peer, Request::TreeRoot { partition, root }, &mut stats).await? {
            Response::InSync => {
                stats.in_sync = 1;
                return Ok(stats);
            }
            Response::Groups(theirs) => theirs,
            other => return Err(unexpected(peer, &other)),
        };
        let differing_groups = merkle::differing_groups(&groups, &theirs);
        let request = Request::TreeLeaves { partition, groups: differing_groups.iter().map(|&g| g as u8).collect() };
        let their_leaves = match self.ask(peer, request, &mut stats).await? {
            Response::Leaves(l) => l,
            other => return Err(unexpected(peer, &other)),
        };
        let differing = merkle::differing_leaves(&leaves, &differing_groups, &their_leaves);
        stats.differing_leaves = differing.len() as u64;
        if differing.is_empty() {
            return Ok(stats);
        }
        let leaf_set: BTreeSet<usize> = differing.iter().copied().collect();
        let digests = self.digests(partition, &leaf_set)?;
        let request = Request::SyncKeys { partition, leaves: differing.iter().map(|&l| l as u8).collect(), digests };
        let (objects, wanted) = match self.ask(peer, request, &mut stats).await? {
            Response::SyncKeys { objects, wanted } => (objects, wanted),
            other => return Err(unexpected(peer, &other)),
        };
        stats.keys_received = objects.len() as u64;
        self.take_objects(partition, objects, staged)?;
        // Push what the peer wanted, as it stands now (after merging what it
        // sent, unless the round is staged).
        let mut push = Vec::with_capacity(wanted.len());
        for key in wanted {
            if let Some(object) = self.replica.read(partition, &key)? {
                push.push((key, Bytes::from(object.encode())));
            }
        }
        stats.keys_sent = push.len() as u64;
        if !push.is_empty() {
            match self.ask(peer, Request::SyncPush { partition, objects: push, staged }, &mut stats).await? {
                Response::Written => {}
                other => return Err(unexpected(peer, &other)),
            }
        }
        Ok(stats)
    }

    async fn ask(&self, peer: &str, request: Request, stats: &mut SyncStats) -> Result<Response, SyncError> {
        let (response, traffic) = self
            .call_counted::<Response>(peer, &request, self.config.sync_timeout())
            .await
            .map_err(|_| SyncError::Unreachable(peer.to_owned()))?;
        stats.count(traffic);
        Ok(response)
    }

    /// Key digests of this replica under `leaves`.
    fn digests(&self, partition: u32, leaves: &BTreeSet<usize>) -> Result<Vec<(Bytes, Hash)>, ReplicaError> {
        Ok(self
            .replica
            .scan_partition(partition)?
            .into_iter()
            .filter(|(key, _)| leaves.contains(&merkle::leaf_of(key)))
            .map(|(key, encoded)| {
                let hash = merkle::entry_hash(&key, &encoded);
                (key, hash)
            })
            .collect())
    }

    /// Merges objects a peer sent, or stages them for a staged round.
    fn take_objects(&self, partition: u32, objects: Vec<(Bytes, Bytes)>, staged: bool) -> Result<(), ReplicaError> {
        let mut decoded = Vec::with_capacity(objects.len());
        for (key, encoded) in objects {
            let object = replica::decode(&encoded, &key)?;
            decoded.push((partition, key, object));
        }
        if staged {
            self.staged.lock().expect("staging lock").extend(decoded);
            return Ok(());
        }
        for (partition, key, object) in decoded {
            self.replica.merge(partition, &key, &object)?;
        }
        Ok(())
    }

    /// Ends a staged round on this node: merges everything it staged.
    pub fn commit_staged(&self) -> Result<usize, ReplicaError> {
        let staged = std::mem::take(&mut *self.staged.lock().expect("staging lock"));
        for (partition, key, object) in &staged {
            self.replica.merge(*partition, key, object)?;
        }
        Ok(staged.len())
    }

    /// The responder's side of an exchange.
    pub(super) fn answer_sync(&self, request: Request) -> Response {
        let result = match request {
            Request::TreeRoot { partition, root } => Ok(self.answer_root(partition, root)),
            Request::TreeLeaves { partition, groups } => Ok(self.answer_leaves(partition, &groups)),
            Request::SyncKeys { partition, leaves, digests } => self.answer_keys(partition, &leaves, digests),
            Request::SyncPush { partition, objects, staged } => {
                self.take_objects(partition, objects, staged).map(|()| Response::Written)
            }
            Request::Reap { key, hash } => self.answer_reap(&key, hash),
            other => Ok(Response::Error(format!("not an anti-entropy request: {other:?}"))),
        };
        result.unwrap_or_else(|e| Response::Error(e.to_string()))
    }

    fn answer_root(&self, partition: u32, root: Hash) -> Response {
        let groups = self.replica.with_trees(|t| t.groups(partition));
        if merkle::root_of(&groups) == root {
            Response::InSync
        } else {
            Response::Groups(groups.to_vec())
        }
    }

    fn answer_leaves(&self, partition: u32, groups: &[u8]) -> Response {
        let groups: Vec<usize> = groups.iter().map(|&g| g as usize).filter(|&g| g < GROUPS).collect();
        let leaves = self.replica.with_trees(|t| t.leaves(partition));
        Response::Leaves(merkle::leaves_in_groups(&leaves, &groups))
    }

    fn answer_keys(
        &self,
        partition: u32,
        leaves: &[u8],
        digests: Vec<(Bytes, Hash)>,
    ) -> Result<Response, ReplicaError> {
        let leaf_set: BTreeSet<usize> = leaves.iter().map(|&l| l as usize).filter(|&l| l < LEAVES).collect();
        let mut theirs: HashMap<Bytes, Hash> = digests.into_iter().collect();
        let mut objects = Vec::new();
        let mut wanted = Vec::new();
        for (key, encoded) in self.replica.scan_partition(partition)? {
            if !leaf_set.contains(&merkle::leaf_of(&key)) {
                continue;
            }
            match theirs.remove(&key) {
                Some(hash) if hash == merkle::entry_hash(&key, &encoded) => {}
                Some(_) => {
                    wanted.push(key.clone());
                    objects.push((key, Bytes::from(encoded)));
                }
                None => objects.push((key, Bytes::from(encoded))),
            }
        }
        wanted.extend(theirs.into_keys());
        Ok(Response::SyncKeys { objects, wanted })
    }

    fn answer_reap(&self, key: &Bytes, hash: Hash) -> Result<Response, ReplicaError> {
        let partition = self.membership.ring().partition_of(key);
        let reaped = self.replica.remove_if_unchanged(partition, key, hash)?;
        if reaped {
            Counters::bump(&self.counters.tombstones_reaped);
        }
        Ok(Response::Reaped(reaped))
    }

    /// Removes tombstones of `partition` that are older than the grace
    /// period and held, identically, by every replica. Only the partition's
    /// first preference-list node does this, so replicas never race.
    async fn reap_tombstones(&self, partition: u32) -> u64 {
        let ring = self.membership.ring();
        let replicas: Vec<String> =
            ring.preference_list(partition, self.membership.n()).into_iter().map(str::to_owned).collect();
        if replicas.first().map(String::as_str) != Some(self.id()) {
            return 0;
        }
        let Ok(entries) = self.replica.scan_partition(partition) else { return 0 };
        let grace = self.config.tombstone_grace_ms;
        let now = self.clock.now_ms();
        let mut reaped = 0;
        for (key, encoded) in entries {
            let Ok(object) = replica::decode(&encoded, &key) else { continue };
            let newest = object.siblings.iter().map(|s| s.ts_ms).max().unwrap_or(0);
            if !object.is_deleted() || newest.saturating_add(grace) > now {
                continue;
            }
            if self.everyone_holds(&replicas[1..], &key, &encoded).await
                && self.reap_everywhere(&replicas, &key, &encoded).await
            {
                reaped += 1;
            }
        }
        reaped
    }

    async fn everyone_holds(&self, others: &[String], key: &Bytes, encoded: &[u8]) -> bool {
        for peer in others {
            let held = self.call(peer, &Request::Read { key: key.clone() }, self.config.sync_timeout()).await;
            if !matches!(held, Ok(Stored(Some(bytes))) if bytes.as_ref() == encoded) {
                return false;
            }
        }
        true
    }

    /// Reaps on the other replicas first, then here; true if all did.
    async fn reap_everywhere(&self, replicas: &[String], key: &Bytes, encoded: &[u8]) -> bool {
        let hash = merkle::entry_hash(key, encoded);
        let mut all = true;
        for peer in &replicas[1..] {
            let answer = self.call(peer, &Request::Reap { key: key.clone(), hash }, self.config.sync_timeout()).await;
            all &= matches!(answer, Ok(Reaped(true)));
        }
        let partition = self.membership.ring().partition_of(key);
        let here = matches!(self.replica.remove_if_unchanged(partition, key, hash), Ok(true));
        if here {
            Counters::bump(&self.counters.tombstones_reaped);
        }
        all && here
    }

    /// Background anti-entropy: one partition per interval, round-robin
    /// over the partitions this node replicates, with a random live peer.
    /// The interval is the rate limit.
    pub(super) async fn anti_entropy_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.ae_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next = 0usize;
        let mut rng = StdRng::from_os_rng();
        loop {
            tick.tick().await;
            if !self.switches.anti_entropy.load(Ordering::Relaxed) {
                continue;
            }
            let Some(partitions) = self.membership.settled_partitions() else { continue };
            let Some(&partition) = partitions.get(next % partitions.len().max(1)) else { continue };
            next = next.wrapping_add(1);
            let peers = self.round_peers(partition, rand::Rng::random(&mut rng), Fanout::One);
            let stats = self.sync_partition(partition, peers, false).await;
            Counters::add(&self.counters.ae_keys_received, stats.keys_received);
            Counters::add(&self.counters.ae_keys_sent, stats.keys_sent);
        }
    }
}

fn unexpected(peer: &str, answer: &Response) -> SyncError {
    let mut text = format!("{answer:?}");
    text.truncate(200);
    SyncError::Unexpected { peer: peer.to_owned(), answer: text }
}
