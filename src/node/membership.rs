//! Who is in the cluster and who is alive.
//!
//! Membership spreads by gossip: each node periodically swaps its view with
//! one peer. A view is bounded: the sender's own record and the
//! [`DIGEST_RECORDS`] − 1 records that most recently advanced at the sender
//! (fresh heartbeats spread like rumours), with how many members the sender
//! knows and a fingerprint of their names. Only a peer whose member set
//! differs and is no larger gets the whole list, once: so a joining node
//! learns everyone in one exchange, and an idle cluster's message size and
//! per-node cost stay the same however large it grows. So do a node's
//! connections: past [`OVERLAY_FROM`] members it gossips mostly along an
//! overlay of about 2 log2(n) neighbours ([`Membership::gossip_target`]).
//! What grows is the time a heartbeat takes to reach everyone, so past one
//! digest of members heartbeats advance less often and the failure limit
//! stretches ([`Membership::beat`], [`Membership::fail_after_for`]); when
//! that pace changes, the detector relearns every member's rhythm. Failure
//! detection is phi accrual (Hayashibara et al., as in Cassandra): from the
//! intervals at which a member's heartbeat has been seen to advance, the
//! silence so far gives a suspicion φ; past a threshold the member is
//! believed down — sooner on a steady network, later on a jittery one, and
//! never later than `fail_after`. Only this detector decides that a member
//! is down (what `/status` shows).
//!
//! A member a request could not reach — refused, reset, or silent past its
//! latency-derived timeout — is **suspect** until its heartbeat advances:
//! requests go to other nodes first and do not wait for it, and a
//! coordinator counts it unreachable when deciding to fail fast. A timeout
//! only makes a member suspect, never down: with timeouts of tens of
//! milliseconds a busy machine would otherwise flap members down and up;
//! a live suspect clears itself within a few gossip rounds. Being down
//! never removes a node from the ring: only the member set shapes the ring,
//! so a failure moves no data, and sloppy quorum covers for the absent node.
//!
//! The detector's intervals are measured on the node's clock as a drift
//! would make it run ([`NodeClock::perceived`]): a node whose clock runs
//! fast sees silences as longer and believes members down sooner.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom;
use serde::{Deserialize, Serialize};

use super::clock::NodeClock;
use super::config::parse_node_id;
use crate::api::ring::Ring;
use crate::api::status::MemberView;

/// One member as gossip carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: String,
    pub host: IpAddr,
    pub port: u16,
    pub peer_port: u16,
    /// When this incarnation started (ms since the epoch): a restarted node's
    /// heartbeat starts again from zero, and its generation tells it apart.
    pub generation: u64,
    pub heartbeat: u64,
    /// Left the cluster for good: no longer in the ring.
    pub left: bool,
}

impl MemberRecord {
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.peer_port)
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    fn version(&self) -> (u64, u64) {
        (self.generation, self.heartbeat)
    }
}

/// Most member records one gossip message carries, the sender's own
/// included, unless the receiver needs the whole list (see the module
/// doc). 128 records are about 4 KiB.
pub const DIGEST_RECORDS: usize = 128;

/// Members beyond which gossip keeps to an overlay (see [`Membership::gossip_target`]).
pub const OVERLAY_FROM: usize = 100;
/// One gossip round in this many goes to any member, overlay or not.
const RANDOM_ROUND: u64 = 8;

/// A member's overlay neighbours, as offsets from its place among the
/// `count` current members in name order: ± each power of two below
/// `count`. Every node has about 2 log2(count) of them, the overlay is
/// symmetric (each node is its neighbours' neighbour, so it also hears
/// from them), and any member is O(log count) hops from any other, so a
/// heartbeat still reaches everyone in a few rounds.
fn overlay_offsets(count: usize) -> impl Iterator<Item = usize> + Clone {
    std::iter::successors(Some(1usize), |step| step.checked_mul(2))
        .take_while(move |&step| step < count)
        .flat_map(move |step| [step, count - step])
}

/// A membership view: who the sender knows, with their heartbeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Digest {
    pub partitions: u32,
    pub n: usize,
    /// How many members the sender knows (left ones included).
    pub known: u32,
    /// XOR of the hashes of their names: equal sets have equal fingerprints.
    pub fingerprint: u64,
    /// All of them, or a bounded selection.
    pub members: Vec<MemberRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("peer runs a ring of {theirs} partitions with N={their_n}, this node {ours} with N={our_n}: they cannot form one cluster")]
    Incompatible { theirs: u32, their_n: usize, ours: u32, our_n: usize },
    #[error("gossip names a member {id:?}: {reason}")]
    BadMember { id: String, reason: String },
    #[error("this node is the last member of the cluster: there is nobody to leave its data to")]
    LastMember,
}

/// Heartbeat intervals the mean interval is taken over: a plain mean up to
/// this many, then a moving average with this weight (a window of its
/// own per member would cost 0.5 KiB each, 0.5 MB on a 1,000-node ring).
const WINDOW: u32 = 64;
/// Intervals needed before φ is trusted over the plain timeout.
const MIN_SAMPLES: u32 = 5;

struct MemberState {
    record: MemberRecord,
    last_advance: Instant,
    /// Mean interval between heartbeat advances, in seconds, over
    /// `samples` intervals (capped at WINDOW).
    mean_interval: f64,
    samples: u32,
    /// Set when a request failed: suspect until the heartbeat passes this version.
    suspect_at: Option<(u64, u64)>,
}

impl MemberState {
    fn new(record: MemberRecord) -> Self {
        MemberState { record, last_advance: Instant::now(), mean_interval: 0.0, samples: 0, suspect_at: None }
    }

    /// Forgets the intervals seen so far.
    fn relearn(&mut self) {
        (self.mean_interval, self.samples) = (0.0, 0);
    }

    fn advanced(&mut self, clock: &NodeClock) {
        let interval = clock.perceived(self.last_advance.elapsed()).as_secs_f64();
        self.samples = (self.samples + 1).min(WINDOW);
        self.mean_interval += (interval - self.mean_interval) / f64::from(self.samples);
        self.last_advance = Instant::now();
    }

    /// φ = −log10 P(a silence this long), heartbeats taken as a Poisson
    /// process with the observed mean interval; `None` until enough
    /// intervals were seen.
    fn phi(&self, silence: Duration) -> Option<f64> {
        if self.samples < MIN_SAMPLES {
            return None;
        }
        Some(silence.as_secs_f64() / self.mean_interval.max(1e-3) * std::f64::consts::LOG10_E)
    }
}

/// Whether a member should be sent requests, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    Reachable,
    /// A request to it failed since its heartbeat last advanced.
    Suspect,
    /// The failure detector believes it down (or it is unknown).
    Down,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reachability::Reachable => "reachable",
            Reachability::Suspect => "suspect",
            Reachability::Down => "down",
        })
    }
}

pub struct Membership {
    me: String,
    partitions: u32,
    n: usize,
    fail_after: Duration,
    phi_threshold: f64,
    inner: RwLock<Inner>,
    replicated: std::sync::Mutex<Option<Replicated>>,
    /// Times the detector's intervals.
    clock: Arc<NodeClock>,
}

/// This node's replicated partitions and the ring they were taken from.
type Replicated = (Arc<Ring>, Arc<Vec<u32>>);

/// How long the member set must stay unchanged before background work
/// (anti-entropy) uses the ring: while a big cluster forms, members arrive
/// every gossip round, and each pass would rebuild the ring and sync with
/// owners about to change.
const SETTLE: Duration = Duration::from_secs(2);

struct Inner {
    members: BTreeMap<String, MemberState>,
    /// XOR of `name_hash` over `members`: see [`Digest::fingerprint`].
    fingerprint: u64,
    ring: Arc<Ring>,
    /// The member set changed since `ring` was built. The ring is rebuilt
    /// on first use, not on each change: while a big cluster starts,
    /// members arrive one gossip round at a time, and rebuilding the ring
    /// (Q × K hashes) for each would cost more than everything else the
    /// nodes do.
    ring_stale: bool,
    /// When the member set last changed.
    changed_at: Instant,
    /// Gossip rounds so far: see [`Membership::beat`].
    rounds: u64,
    /// Rounds per heartbeat when the detector's intervals were learned.
    pace: u64,
}

impl Membership {
    pub fn new(
        me: MemberRecord,
        partitions: u32,
        n: usize,
        fail_after: Duration,
        phi_threshold: f64,
    ) -> anyhow::Result<Self> {
        let ring = Arc::new(Ring::new([me.id.clone()], partitions)?);
        let id = me.id.clone();
        let fingerprint = name_hash(&id);
        let mut members = BTreeMap::new();
        members.insert(id.clone(), MemberState::new(me));
        let inner = RwLock::new(Inner {
            members,
            fingerprint,
            ring,
            ring_stale: false,
            changed_at: Instant::now(),
            rounds: 0,
            pace: 1,
        });
        let (replicated, clock) = Default::default();
        Ok(Membership { me: id, partitions, n, fail_after, phi_threshold, inner, replicated, clock })
    }

    /// Times the failure detector on `clock` (the host's monotonic clock otherwise).
    pub fn with_clock(self, clock: Arc<NodeClock>) -> Self {
        Membership { clock, ..self }
    }

    // Every change to `Inner` is complete before its lock is released or
    // a panic could happen, so a holder that panicked left nothing half
    // done: the lock stays usable instead of taking the node down with it.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// The ring of the current members; if they cannot form one (which
    /// the checks on gossip and leave should make impossible), the last
    /// good ring, with an error in the log.
    pub fn ring(&self) -> Arc<Ring> {
        {
            let inner = self.read();
            if !inner.ring_stale {
                return inner.ring.clone();
            }
        }
        let mut inner = self.write();
        if inner.ring_stale {
            let current: Vec<&String> =
                inner.members.values().filter(|m| !m.record.left).map(|m| &m.record.id).collect();
            let built = match joiners(&inner.ring, &current) {
                Some(joiners) => inner.ring.joined(joiners),
                None => Ring::new(current.into_iter().cloned(), self.partitions),
            };
            match built {
                Ok(ring) => inner.ring = Arc::new(ring),
                Err(e) => tracing::error!("keeping the previous ring: the members cannot form a new one: {e}"),
            }
            inner.ring_stale = false;
        }
        inner.ring.clone()
    }

    /// The partitions this node replicates, once the member set has been
    /// still for [`SETTLE`]; computed once per ring.
    pub fn settled_partitions(&self) -> Option<Arc<Vec<u32>>> {
        if self.read().changed_at.elapsed() < SETTLE {
            return None;
        }
        let ring = self.ring();
        let mut cache = self.replicated.lock().unwrap_or_else(PoisonError::into_inner);
        match &*cache {
            Some((built_from, partitions)) if Arc::ptr_eq(built_from, &ring) => Some(partitions.clone()),
            _ => {
                let partitions = Arc::new(ring.replicated_partitions(&self.me, self.n));
                *cache = Some((ring, partitions.clone()));
                Some(partitions)
            }
        }
    }

    /// The ring's members (those that have not left), sorted, without
    /// building the ring.
    pub fn ring_members(&self) -> Vec<String> {
        self.read().members.values().filter(|m| !m.record.left).map(|m| m.record.id.clone()).collect()
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn record(&self, id: &str) -> Option<MemberRecord> {
        self.read().members.get(id).map(|m| m.record.clone())
    }

    pub fn peer_addr(&self, id: &str) -> Option<SocketAddr> {
        self.record(id).map(|r| r.peer_addr())
    }

    /// Whether the failure detector believes `id` up.
    pub fn is_alive(&self, id: &str) -> bool {
        let inner = self.read();
        inner.members.get(id).is_some_and(|m| self.alive(&inner, m))
    }

    /// Whether requests should go to `id`: believed up and not suspect.
    pub fn is_reachable(&self, id: &str) -> bool {
        self.reachability(id) == Reachability::Reachable
    }

    /// Why `id` should or should not be sent requests.
    pub fn reachability(&self, id: &str) -> Reachability {
        let inner = self.read();
        match inner.members.get(id) {
            None => Reachability::Down,
            Some(m) if !self.alive(&inner, m) => Reachability::Down,
            Some(m) if m.suspect_at.is_some() => Reachability::Suspect,
            Some(_) => Reachability::Reachable,
        }
    }

    fn alive(&self, inner: &Inner, m: &MemberState) -> bool {
        if m.record.id == self.me {
            return true;
        }
        let silence = self.clock.perceived(m.last_advance.elapsed());
        let fail_after = self.fail_after_for(inner.members.len());
        silence < fail_after
            // φ decides between a quarter of fail_after and fail_after.
            && (silence < fail_after / 4 || m.phi(silence).is_none_or(|phi| phi < self.phi_threshold))
    }

    /// The silence after which a member is down in a cluster of `members`:
    /// `fail_after` while the whole membership fits in one digest; beyond,
    /// a digest carries a given member's heartbeat about members / DIGEST_RECORDS
    /// times less often, and the limit stretches by that factor.
    pub fn fail_after_for(&self, members: usize) -> Duration {
        self.fail_after * members.div_ceil(DIGEST_RECORDS).max(1) as u32
    }

    /// A request to `id` failed: suspect it until it shows a newer heartbeat.
    pub fn mark_suspect(&self, id: &str) {
        if id == self.me {
            return;
        }
        let mut inner = self.write();
        if let Some(m) = inner.members.get_mut(id) {
            if m.suspect_at.is_none() {
                tracing::info!(node = id, "suspecting node after a failed request");
            }
            m.suspect_at = Some(m.record.version());
        }
    }

    /// Starts a gossip round: returns the (bounded) view to gossip, after
    /// advancing this node's own heartbeat — each round while the whole
    /// membership fits in one digest, beyond that every members /
    /// [`DIGEST_RECORDS`] rounds. A digest has room for so many fresh
    /// heartbeats: if all 1,000 members advanced each round, a fresh one
    /// would be pushed out of the digests by fresher ones before it had
    /// been passed on, and some members would go unheard long enough to
    /// seem down. [`Self::fail_after_for`] stretches by the same factor.
    pub fn beat(&self) -> Digest {
        let mut inner = self.write();
        let every = inner.members.len().div_ceil(DIGEST_RECORDS).max(1) as u64;
        if every != inner.pace {
            // Every member's heartbeat now advances at another pace (they
            // count the same members): intervals learned at the old one
            // would make φ call the new rhythm a failure, or miss one.
            // Relearn; until enough intervals are seen, fail_after decides.
            inner.pace = every;
            for member in inner.members.values_mut() {
                member.relearn();
            }
        }
        inner.rounds += 1;
        if inner.rounds.is_multiple_of(every) {
            if let Some(me) = inner.members.get_mut(&self.me) {
                me.record.heartbeat += 1;
            }
        }
        self.bounded_digest(&inner)
    }

    /// The view to answer a peer's gossip `theirs` with (after merging
    /// it): every member if the peer knows a different set and no more
    /// members than this node, else a bounded selection.
    pub fn reply_to(&self, theirs: &Digest) -> Digest {
        let inner = self.read();
        if theirs.fingerprint != inner.fingerprint && theirs.known as usize <= inner.members.len() {
            self.full_digest(&inner)
        } else {
            self.bounded_digest(&inner)
        }
    }

    /// Whether a peer that answered with `theirs` knows fewer members than
    /// this node: then it is sent the whole list (see [`Self::everyone`]).
    pub fn peer_lacks_members(&self, theirs: &Digest) -> bool {
        let inner = self.read();
        theirs.fingerprint != inner.fingerprint && (theirs.known as usize) < inner.members.len()
    }

    /// Every member: for a peer that lacks some.
    pub fn everyone(&self) -> Digest {
        self.full_digest(&self.read())
    }

    fn full_digest(&self, inner: &Inner) -> Digest {
        self.digest_with(inner, inner.members.values().map(|m| m.record.clone()).collect())
    }

    /// This node's own record and the others that advanced most recently.
    fn bounded_digest(&self, inner: &Inner) -> Digest {
        let mut others: Vec<&MemberState> = inner.members.values().filter(|m| m.record.id != self.me).collect();
        let keep = DIGEST_RECORDS - 1;
        if others.len() > keep {
            others.select_nth_unstable_by_key(keep, |m| std::cmp::Reverse(m.last_advance));
            others.truncate(keep);
        }
        let me = inner.members.get(&self.me).map(|m| m.record.clone());
        self.digest_with(inner, me.into_iter().chain(others.into_iter().map(|m| m.record.clone())).collect())
    }

    fn digest_with(&self, inner: &Inner, members: Vec<MemberRecord>) -> Digest {
        Digest {
            partitions: self.partitions,
            n: self.n,
            known: inner.members.len() as u32,
            fingerprint: inner.fingerprint,
            members,
        }
    }

    /// Folds a peer's view into ours: newer heartbeats win, new members join.
    pub fn merge(&self, digest: &Digest) -> Result<(), MembershipError> {
        if digest.partitions != self.partitions || digest.n != self.n {
            return Err(MembershipError::Incompatible {
                theirs: digest.partitions,
                their_n: digest.n,
                ours: self.partitions,
                our_n: self.n,
            });
        }
        if let Some((id, reason)) = digest.members.iter().find_map(|r| parse_node_id(&r.id).err().map(|e| (&r.id, e))) {
            return Err(MembershipError::BadMember { id: id.clone(), reason });
        }
        let mut inner = self.write();
        let mut changed = false;
        for record in &digest.members {
            if record.id == self.me {
                continue;
            }
            match inner.members.get_mut(&record.id) {
                Some(m) if record.version() > m.record.version() => {
                    if m.suspect_at.is_some_and(|at| record.version() > at) {
                        tracing::info!(node = %record.id, "node is reachable again");
                        m.suspect_at = None;
                    }
                    if record.left && !m.record.left {
                        tracing::info!(node = %record.id, "member left the cluster");
                        changed = true;
                    }
                    m.record = record.clone();
                    m.advanced(&self.clock);
                }
                Some(_) => {}
                None => {
                    tracing::debug!(node = %record.id, addr = %record.peer_addr(), "new member");
                    inner.members.insert(record.id.clone(), MemberState::new(record.clone()));
                    inner.fingerprint ^= name_hash(&record.id);
                    changed = true;
                }
            }
        }
        if changed {
            inner.ring_stale = true;
            inner.changed_at = Instant::now();
        }
        Ok(())
    }

    /// The member to gossip with in round `round`; down members are chosen
    /// too, so that their return is noticed. In a cluster of up to
    /// [`OVERLAY_FROM`] members, any other member at random. In a bigger
    /// one, mostly a random one of this node's overlay neighbours (see
    /// `overlay_offsets`): gossip with anyone would in time connect
    /// every pair of nodes (a million connections at 1,000 nodes); every
    /// `RANDOM_ROUND`th round still goes to anyone, so that no pattern
    /// of cuts can hide a reachable member for long.
    pub fn gossip_target(&self, round: u64) -> Option<(String, SocketAddr)> {
        let inner = self.read();
        let current: Vec<&MemberRecord> = inner.members.values().map(|m| &m.record).filter(|r| !r.left).collect();
        let mut rng = rand::rng();
        let chosen = match current.iter().position(|r| r.id == self.me) {
            Some(me) if current.len() > OVERLAY_FROM && !round.is_multiple_of(RANDOM_ROUND) => {
                let offset = overlay_offsets(current.len()).choose(&mut rng).unwrap_or(1);
                current[(me + offset) % current.len()]
            }
            _ => *current.iter().filter(|r| r.id != self.me).choose(&mut rng)?,
        };
        Some((chosen.id.clone(), chosen.peer_addr()))
    }

    /// Leaves the ring for good: the next gossip tells everyone, and every
    /// node's ring (this one's too) is rebuilt without this node. The last
    /// member cannot leave: its data would have nowhere to go.
    pub fn leave(&self) -> Result<(), MembershipError> {
        let mut inner = self.write();
        if !inner.members.values().any(|m| m.record.id != self.me && !m.record.left) {
            return Err(MembershipError::LastMember);
        }
        if let Some(me) = inner.members.get_mut(&self.me) {
            me.record.left = true;
            me.record.heartbeat += 1;
        }
        inner.ring_stale = true;
        inner.changed_at = Instant::now();
        Ok(())
    }

    /// How many other current members have heard that `id` left.
    pub fn has_left(&self, id: &str) -> bool {
        self.record(id).is_some_and(|r| r.left)
    }

    pub fn member_count(&self) -> usize {
        self.read().members.len()
    }

    pub fn view(&self) -> Vec<MemberView> {
        let inner = self.read();
        inner
            .members
            .values()
            .map(|m| MemberView {
                id: m.record.id.clone(),
                addr: m.record.client_addr().to_string(),
                alive: self.alive(&inner, m),
                suspect: m.suspect_at.is_some(),
                left: m.record.left,
            })
            .collect()
    }
}

/// The members of `current` (sorted) that `ring` lacks, when it lacks
/// nothing else: then the ring only needs them to join; `None` when a
/// member left or there are so many new ones that a full build costs no more.
fn joiners(ring: &Ring, current: &[&String]) -> Option<Vec<String>> {
    let mut old = ring.members().iter().peekable();
    let mut joiners = Vec::new();
    for &id in current {
        if old.peek() == Some(&id) {
            old.next();
        } else {
            joiners.push(id.clone());
        }
    }
    (old.next().is_none() && joiners.len() < ring.members().len()).then_some(joiners)
}

/// A member name's share of a membership fingerprint.
fn name_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, generation: u64, heartbeat: u64) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            host: "127.0.0.1".parse().unwrap(),
            port: 1,
            peer_port: 2,
            generation,
            heartbeat,
            left: false,
        }
    }

    fn digest(members: Vec<MemberRecord>) -> Digest {
        Digest { partitions: 64, n: 3, known: members.len() as u32, fingerprint: 0, members }
    }

    #[test]
    fn learns_members_and_rebuilds_the_ring() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        m.merge(&digest(vec![record("b", 1, 1), record("c", 1, 1)])).unwrap();
        assert_eq!(m.ring().members(), ["a", "b", "c"]);
        assert!(m.is_alive("b"));
    }

    #[test]
    fn a_ring_grown_by_joins_is_the_ring_of_all_members() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        m.merge(&digest(vec![record("b", 1, 1), record("c", 1, 1)])).unwrap();
        let _ = m.ring();
        m.merge(&digest(vec![record("d", 1, 1)])).unwrap();
        let all = |ids: &[&str]| Ring::new(ids.iter().map(|id| id.to_string()), 64).unwrap();
        assert_eq!(*m.ring(), all(&["a", "b", "c", "d"]), "d joined the ring built of three");
        m.merge(&digest(vec![MemberRecord { left: true, ..record("b", 1, 2) }])).unwrap();
        assert_eq!(*m.ring(), all(&["a", "c", "d"]), "a member that left is built out");
    }

    #[test]
    fn suspect_until_heartbeat_advances_but_not_down() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        m.merge(&digest(vec![record("b", 1, 5)])).unwrap();
        m.mark_suspect("b");
        assert_eq!(m.reachability("b"), Reachability::Suspect);
        assert!(m.is_alive("b") && !m.is_reachable("b"), "only the detector decides down");
        assert!(m.view().iter().any(|v| v.id == "b" && v.alive && v.suspect));
        m.merge(&digest(vec![record("b", 1, 5)])).unwrap();
        assert!(!m.is_reachable("b"), "the same heartbeat is no proof of life");
        m.merge(&digest(vec![record("b", 2, 0)])).unwrap();
        assert!(m.is_reachable("b"), "a new incarnation is");
        m.mark_suspect("a");
        assert!(m.is_reachable("a"), "a node never suspects itself");
        assert_eq!(m.ring().members().len(), 2, "a down node stays a member");
    }

    /// The distinct members `me` gossips with over 400 draws of round `round`
    /// in a cluster of `count`.
    fn gossip_partners(count: usize, round: u64) -> std::collections::BTreeSet<String> {
        let m = Membership::new(record("m0000", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        m.merge(&digest((1..count).map(|i| record(&format!("m{i:04}"), 1, 1)).collect())).unwrap();
        (0..400).map(|_| m.gossip_target(round).unwrap().0).collect()
    }

    #[test]
    fn a_big_cluster_gossips_along_its_overlay_and_every_eighth_round_with_anyone() {
        let overlay = gossip_partners(300, 1);
        let expected: std::collections::BTreeSet<String> =
            overlay_offsets(300).map(|offset| format!("m{offset:04}")).collect();
        assert_eq!(overlay, expected, "± powers of two: 2 × 9 neighbours, m0001, m0299, m0002, m0298, ...");
        assert!(gossip_partners(300, 8).len() > 100, "a random round may reach anyone");
        assert!(gossip_partners(OVERLAY_FROM, 1).len() > 50, "a small cluster gossips with anyone");
        let offsets: std::collections::BTreeSet<usize> = overlay_offsets(1000).collect();
        assert!(offsets.iter().all(|o| offsets.contains(&(1000 - o))), "each node is its neighbours' neighbour");
        assert_eq!(offsets.len(), 20);
    }

    #[test]
    fn a_member_of_a_big_cluster_advances_its_heartbeat_once_per_digest_of_members() {
        let m = Membership::new(record("m0000", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        let heartbeat = |m: &Membership| m.record("m0000").unwrap().heartbeat;
        m.beat();
        assert_eq!(heartbeat(&m), 1, "alone, every round");
        m.merge(&digest((1..300).map(|i| record(&format!("m{i:04}"), 1, 1)).collect())).unwrap();
        let before = heartbeat(&m);
        for _ in 0..30 {
            m.beat();
        }
        assert_eq!(heartbeat(&m) - before, 10, "300 members fill three digests: every third round");
    }

    #[test]
    fn silent_member_times_out() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_millis(30), 8.0).unwrap();
        m.merge(&digest(vec![record("b", 1, 1)])).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!m.is_alive("b"));
        assert!(m.is_alive("a"), "a node never believes itself down");
    }

    #[test]
    fn a_drifting_clock_stretches_or_shrinks_the_detectors_silences() {
        let clock = Arc::new(NodeClock::default());
        let m =
            Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(1), 8.0).unwrap().with_clock(clock.clone());
        m.merge(&digest(vec![record("b", 1, 1)])).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        clock.set(crate::api::admin::ClockSkew { offset_ms: 0, drift_ppm: 1_000_000 });
        // At least 600 ms of silence, seen twice as long: past fail_after.
        assert!(!m.is_alive("b"), "a clock running twice as fast times out early");
        clock.set(crate::api::admin::ClockSkew { offset_ms: 0, drift_ppm: -900_000 });
        // A tenth of the silence: only a stall of over 9 s would reach fail_after.
        assert!(m.is_alive("b"), "a clock running ten times slower waits longer");
    }

    #[test]
    fn phi_suspects_a_silence_long_for_this_members_rhythm() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(10), 8.0).unwrap();
        for beat in 1..=10 {
            m.merge(&digest(vec![record("b", 1, beat)])).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(m.is_alive("b"));
        // Heartbeats came every ~20 ms: φ passes 8 after ~0.4 s of silence,
        // long before the 10 s ceiling, but not before 2.5 s (a quarter of it).
        std::thread::sleep(Duration::from_millis(600));
        assert!(m.is_alive("b"), "never before a quarter of fail_after");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!m.is_alive("b"), "φ is far past the threshold");
    }

    #[test]
    fn a_new_heartbeat_pace_is_learned_afresh_instead_of_read_as_failures() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(1), 8.0).unwrap();
        m.beat();
        for beat in 1..=10 {
            m.merge(&digest(vec![record("b", 1, beat)])).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        // The cluster grows past one digest: heartbeats now advance every
        // second round, and fail_after stretches to 2 s.
        m.merge(&digest((0..200).map(|i| record(&format!("node{i}"), 1, 1)).collect())).unwrap();
        m.beat();
        // 700 ms of silence is φ ≈ 15 at the old 20 ms rhythm: down, had it been kept.
        std::thread::sleep(Duration::from_millis(700));
        assert!(m.is_alive("b"), "the old rhythm was forgotten; fail_after decides until a new one is learned");
        std::thread::sleep(Duration::from_millis(1400));
        assert!(!m.is_alive("b"), "past the stretched fail_after");
    }

    #[test]
    fn refuses_gossip_naming_a_member_that_cannot_be_one() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        for bad in ["", "a\nb", &"x".repeat(33)] {
            let err = m.merge(&digest(vec![record("b", 1, 1), record(bad, 1, 1)])).unwrap_err();
            assert!(matches!(err, MembershipError::BadMember { .. }), "{err}");
        }
        assert_eq!(m.member_count(), 1, "nothing of a refused digest is taken");
        assert_eq!(m.ring().members(), ["a"]);
    }

    #[test]
    fn the_last_member_cannot_leave() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        assert!(matches!(m.leave(), Err(MembershipError::LastMember)));
        assert_eq!(m.ring().members(), ["a"], "still a member");
        m.merge(&digest(vec![record("b", 1, 1)])).unwrap();
        m.leave().unwrap();
        assert_eq!(m.ring().members(), ["b"]);
    }

    #[test]
    fn a_panic_under_the_lock_does_not_take_membership_down() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        let poisoned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _inner = m.write();
            panic!("a holder panics");
        }));
        assert!(poisoned.is_err() && m.inner.is_poisoned());
        m.merge(&digest(vec![record("b", 1, 1)])).unwrap();
        assert_eq!(m.ring().members(), ["a", "b"]);
    }

    impl Membership {
        fn digest_fingerprint(&self) -> u64 {
            self.read().fingerprint
        }
    }

    fn with_members(k: usize) -> Membership {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_millis(600), 8.0).unwrap();
        m.merge(&digest((0..k).map(|i| record(&format!("node{i}"), 1, 1)).collect())).unwrap();
        m
    }

    #[test]
    fn gossip_stays_the_same_size_however_many_members() {
        let size = |k: usize| {
            let gossip = with_members(k).beat();
            assert_eq!(gossip.members.len(), (k + 1).min(DIGEST_RECORDS), "{k} others");
            assert_eq!(gossip.members[0].id, "a", "the sender's own record always goes");
            assert_eq!(gossip.known as usize, k + 1);
            postcard::to_allocvec(&gossip).unwrap().len()
        };
        let (small, big, huge) = (size(50), size(1000), size(5000));
        assert!(small < big, "50 members fit whole: {small} bytes");
        // Longer names ("node4999" against "node999") are all that differ.
        assert!(huge <= big + DIGEST_RECORDS * 2, "1,000 members: {big} bytes, 5,000: {huge}");
        assert!(huge < 8 * 1024, "{huge} bytes");
    }

    #[test]
    fn fresh_heartbeats_are_what_a_bounded_digest_carries() {
        let m = with_members(1000);
        std::thread::sleep(Duration::from_millis(5));
        m.merge(&digest(vec![record("node777", 1, 2)])).unwrap();
        assert!(m.beat().members.iter().any(|r| r.id == "node777" && r.heartbeat == 2));
    }

    #[test]
    fn only_a_peer_lacking_members_gets_the_whole_list() {
        let m = with_members(1000);
        let joiner = Membership::new(record("z", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        let hello = joiner.beat();
        m.merge(&hello).unwrap();
        let answer = m.reply_to(&hello);
        assert_eq!(answer.members.len(), 1002, "a joining node learns everyone at once");
        joiner.merge(&answer).unwrap();
        assert_eq!(joiner.member_count(), 1002);
        let same = joiner.beat();
        assert_eq!(same.fingerprint, m.digest_fingerprint());
        assert_eq!(m.reply_to(&same).members.len(), DIGEST_RECORDS, "a peer with the same set gets a bounded one");
        assert!(!m.peer_lacks_members(&same));
        assert!(m.peer_lacks_members(
            &Membership::new(record("y", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap().beat()
        ));
    }

    #[test]
    fn the_failure_limit_stretches_once_members_outgrow_a_digest() {
        let m = with_members(10);
        assert_eq!(m.fail_after_for(100), Duration::from_millis(600));
        assert_eq!(m.fail_after_for(DIGEST_RECORDS), Duration::from_millis(600));
        assert_eq!(m.fail_after_for(1000), Duration::from_millis(600 * 8));
    }

    #[test]
    fn refuses_an_incompatible_ring() {
        let m = Membership::new(record("a", 1, 0), 64, 3, Duration::from_secs(5), 8.0).unwrap();
        let err = m.merge(&Digest { partitions: 128, ..digest(vec![record("b", 1, 1)]) }).unwrap_err();
        assert!(err.to_string().contains("cannot form one cluster"));
        assert_eq!(m.member_count(), 1);
    }
}
