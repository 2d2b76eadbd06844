//! Causality tracking for stored values: dotted version vectors with
//! server-side actors (Riak 2.x "dotted causal container").
//!
//! Each write is stamped with a `Dot` by the coordinating node, and an
//! `Object` keeps every concurrent value (sibling) until a later write whose
//! context saw it supersedes it. Replicas converge by `Object::merge`, which
//! is order-insensitive, so anti-entropy and read repair may apply updates in
//! any order. Clients get the clock back as an opaque, checksummed context.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::api::dot::{validate_entry, Dot, DotError};

/// Most siblings a decoded object may hold.
pub const MAX_SIBLINGS: usize = 1024;
/// Most entries a decoded clock or context may hold.
pub const MAX_CLOCK_ENTRIES: usize = 1024;
/// Longest context string accepted from a client.
pub const MAX_CONTEXT_LEN: usize = 64 * 1024;
/// Largest counter a client context may carry. The checksum is no MAC, so a
/// client can forge counters; this bound leaves room for 2^63 further writes
/// before a counter could saturate.
pub const MAX_CONTEXT_COUNTER: u64 = 1 << 62;

const CONTEXT_VERSION: u8 = 1;
const CHECKSUM_LEN: usize = 4;

/// Why a dot, object or context was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(transparent)]
    Dot(#[from] DotError),
    #[error("context is {0} bytes, over the {MAX_CONTEXT_LEN}-byte limit")]
    ContextTooLong(usize),
    #[error("context is not valid URL-safe unpadded base64")]
    ContextBase64,
    #[error("context is too short to hold a version byte and checksum")]
    ContextTruncated,
    #[error("context version {0} is not supported (expected {CONTEXT_VERSION})")]
    ContextVersion(u8),
    #[error("context checksum does not match; it was altered or corrupted")]
    ContextChecksum,
    #[error("context payload is malformed: {0}")]
    ContextPayload(postcard::Error),
    #[error("context has {0} trailing bytes after its payload")]
    ContextTrailingBytes(usize),
    #[error("context counter {0} is over the limit of {MAX_CONTEXT_COUNTER}")]
    ContextCounterTooLarge(u64),
    #[error("context actors are not strictly ascending (duplicate or unsorted)")]
    ContextNotCanonical,
    #[error("too many clock entries: {0} (limit {MAX_CLOCK_ENTRIES})")]
    TooManyClockEntries(usize),
    #[error("stored object is malformed: {0}")]
    ObjectPayload(postcard::Error),
    #[error("stored object has {0} trailing bytes")]
    ObjectTrailingBytes(usize),
    #[error("too many siblings: {0} (limit {MAX_SIBLINGS})")]
    TooManySiblings(usize),
    #[error("sibling {0} is out of order or duplicated")]
    SiblingOrder(Dot),
    #[error("sibling {0} is not covered by the object's clock")]
    UncoveredSibling(Dot),
}

/// An actor's position in a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEntry {
    pub counter: u64,
    /// Wall time of the last advance; pruning drops the stalest entries.
    pub ts_ms: u64,
}

/// The set of dots an object (or a client's read) has seen, per actor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector {
    entries: BTreeMap<String, ClockEntry>,
}

impl VersionVector {
    /// Highest counter seen from `actor`, 0 if none.
    pub fn get(&self, actor: &str) -> u64 {
        self.entries.get(actor).map_or(0, |e| e.counter)
    }

    pub fn covers(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(&dot.actor)
    }

    /// Least upper bound: per actor the larger counter and the later time.
    pub fn join(&mut self, other: &VersionVector) {
        for (actor, theirs) in &other.entries {
            let ours = self.entries.entry(actor.clone()).or_insert(*theirs);
            ours.counter = ours.counter.max(theirs.counter);
            ours.ts_ms = ours.ts_ms.max(theirs.ts_ms);
        }
    }

    /// True if `self` has seen everything `other` has.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(actor, e)| self.get(actor) >= e.counter)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `node1:5,node3:2`, for logs and debugging headers.
    pub fn readable(&self) -> String {
        self.to_string()
    }

    fn advance(&mut self, actor: &str, counter: u64, ts_ms: u64) {
        self.entries.insert(actor.to_owned(), ClockEntry { counter, ts_ms });
    }

    fn validate(&self) -> Result<(), VersionError> {
        if self.entries.len() > MAX_CLOCK_ENTRIES {
            return Err(VersionError::TooManyClockEntries(self.entries.len()));
        }
        self.entries.iter().try_for_each(|(actor, e)| Ok(validate_entry(actor, e.counter)?))
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (actor, e)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{actor}:{}", e.counter)?;
        }
        Ok(())
    }
}

/// When a clock's entries are pruned: Riak's rule. Beyond `limit` entries
/// (small_vclock) the stalest are pruned once older than `young_ms`
/// (young_vclock); beyond `max` (big_vclock) they are pruned whatever their
/// age. Entries of actors that hold a current sibling are never pruned:
/// they keep the siblings covered. The age condition keeps the entries of
/// recent writers, whose loss would bring their superseded writes back as
/// false siblings; the hard bound keeps metadata small under a burst of
/// writers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneRule {
    pub limit: usize,
    pub max: usize,
    pub young_ms: u64,
}

impl PruneRule {
    /// Prune beyond `limit` entries whatever their age.
    pub const fn count(limit: usize) -> Self {
        PruneRule { limit, max: limit, young_ms: 0 }
    }
}

/// One concurrent value of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    pub dot: Dot,
    /// `None` is a tombstone: a delete that must still win over older writes.
    pub value: Option<Bytes>,
    pub ts_ms: u64,
}

/// A key's causal state: its clock and the values it has not yet superseded.
///
/// Kept canonical (siblings sorted by dot, no duplicates) so replicas holding
/// the same state compare equal and encode to the same bytes. The fields are
/// public for reading; change them only through `update` and `merge`.
///
/// Clocks are bounded by a [`PruneRule`]. Actors issue counters node-wide
/// (see `identity`), so a pruned actor never reuses a dot; pruning can only
/// make a later merge keep a superseded value as a (false) sibling.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub clock: VersionVector,
    /// All siblings, tombstones included, sorted by dot.
    pub siblings: Vec<Sibling>,
}

impl Object {
    /// The live (non-tombstone) values.
    pub fn values(&self) -> impl Iterator<Item = &Bytes> {
        self.siblings.iter().filter_map(|s| s.value.as_ref())
    }

    /// True if a read should report "not found".
    pub fn is_deleted(&self) -> bool {
        self.siblings.iter().all(|s| s.value.is_none())
    }

    /// True if nothing was ever written or merged in.
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.clock.is_empty()
    }

    /// The lowest counter `actor` may give a new write to this object:
    /// above every dot of `actor` that the object or the writer's context
    /// has seen. The caller issues the actual counter (see
    /// `identity::Identity::issue_counter`), which is also above every
    /// counter the actor ever issued, for any key.
    pub fn min_counter(&self, context: &VersionVector, actor: &str) -> u64 {
        // Saturating only matters for forged counters; see MAX_CONTEXT_COUNTER.
        self.clock.get(actor).max(context.get(actor)).saturating_add(1)
    }

    /// The coordinator's write of `value` (None deletes) under `dot`, which
    /// supersedes exactly the siblings `context` has seen.
    ///
    /// `dot.actor` must pass [`validate_actor`](crate::api::dot::validate_actor) and `dot.counter` be at
    /// least [`min_counter`](Self::min_counter). Returns the number of clock
    /// entries pruned.
    pub fn update(
        &mut self,
        context: &VersionVector,
        dot: Dot,
        value: Option<Bytes>,
        now_ms: u64,
        rule: PruneRule,
    ) -> usize {
        debug_assert!(crate::api::dot::validate_actor(&dot.actor).is_ok(), "invalid actor {:?}", dot.actor);
        debug_assert!(dot.counter >= self.min_counter(context, &dot.actor), "dot {dot} is not new to this object");
        self.siblings.retain(|s| !context.covers(&s.dot));
        // The counter exceeds every dot of the actor this object holds, so
        // the new sibling lands after them and cannot duplicate one.
        let at = self.siblings.partition_point(|s| s.dot < dot);
        self.clock.join(context);
        self.clock.advance(&dot.actor, dot.counter, now_ms);
        self.siblings.insert(at, Sibling { dot, value, ts_ms: now_ms });
        self.prune(rule, now_ms)
    }

    /// Folds in another replica's state; returns clock entries pruned.
    ///
    /// A sibling survives if both sides hold it or the other side has not
    /// seen it. Commutative and idempotent; associative as long as pruning
    /// does not fire (pruning forgets history, so order can then matter).
    pub fn merge(&mut self, other: &Object, rule: PruneRule, now_ms: u64) -> usize {
        self.siblings = merge_siblings(&self.siblings, &self.clock, &other.siblings, &other.clock);
        self.clock.join(&other.clock);
        self.prune(rule, now_ms)
    }

    /// Drops the stalest clock entries that `rule` lets go (see
    /// [`PruneRule`]), sparing the actors of current siblings. Forgetting an
    /// entry can only make later merges keep more siblings (false
    /// concurrency), never fewer. Returns the entries dropped.
    fn prune(&mut self, rule: PruneRule, now_ms: u64) -> usize {
        let soft = self.clock.len().saturating_sub(rule.limit);
        if soft == 0 {
            return 0;
        }
        let hard = self.clock.len().saturating_sub(rule.max);
        let protected: BTreeSet<&str> = self.siblings.iter().map(|s| s.dot.actor.as_str()).collect();
        let mut candidates: Vec<(u64, String)> = self
            .clock
            .entries
            .iter()
            .filter(|(actor, _)| !protected.contains(actor.as_str()))
            .map(|(actor, e)| (e.ts_ms, actor.clone()))
            .collect();
        candidates.sort_unstable();
        let old_enough = |ts_ms: u64| now_ms.saturating_sub(ts_ms) >= rule.young_ms;
        let victims = candidates
            .iter()
            .enumerate()
            .take_while(|(i, (ts_ms, _))| *i < hard || (*i < soft && old_enough(*ts_ms)))
            .count();
        for (_, actor) in &candidates[..victims] {
            self.clock.entries.remove(actor);
        }
        victims
    }

    /// Canonical bytes for storage and replication.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("postcard cannot fail on in-memory maps and vecs")
    }

    /// Parses bytes from disk or a peer, rejecting anything that breaks the
    /// invariants the rest of this module relies on.
    pub fn decode(bytes: &[u8]) -> Result<Object, VersionError> {
        let (object, rest): (Object, _) = postcard::take_from_bytes(bytes).map_err(VersionError::ObjectPayload)?;
        if !rest.is_empty() {
            return Err(VersionError::ObjectTrailingBytes(rest.len()));
        }
        object.validate()?;
        Ok(object)
    }

    fn validate(&self) -> Result<(), VersionError> {
        self.clock.validate()?;
        if self.siblings.len() > MAX_SIBLINGS {
            return Err(VersionError::TooManySiblings(self.siblings.len()));
        }
        let mut previous: Option<&Dot> = None;
        for s in &self.siblings {
            if previous.is_some_and(|p| p >= &s.dot) {
                return Err(VersionError::SiblingOrder(s.dot.clone()));
            }
            validate_entry(&s.dot.actor, s.dot.counter)?;
            if !self.clock.covers(&s.dot) {
                return Err(VersionError::UncoveredSibling(s.dot.clone()));
            }
            previous = Some(&s.dot);
        }
        Ok(())
    }
}

/// The siblings that survive a merge, in canonical order.
fn merge_siblings(
    ours: &[Sibling],
    our_clock: &VersionVector,
    theirs: &[Sibling],
    their_clock: &VersionVector,
) -> Vec<Sibling> {
    let mut out = Vec::with_capacity(ours.len() + theirs.len());
    for a in ours {
        match find_dot(theirs, &a.dot) {
            Some(b) => out.push(pick_same_dot(a, b).clone()),
            None if !their_clock.covers(&a.dot) => out.push(a.clone()),
            None => {}
        }
    }
    for b in theirs {
        if find_dot(ours, &b.dot).is_none() && !our_clock.covers(&b.dot) {
            out.push(b.clone());
        }
    }
    out.sort_unstable_by(|x, y| x.dot.cmp(&y.dot));
    out
}

fn find_dot<'a>(siblings: &'a [Sibling], dot: &Dot) -> Option<&'a Sibling> {
    let i = siblings.binary_search_by(|s| s.dot.cmp(dot)).ok()?;
    siblings.get(i)
}

/// Two values under one dot should not happen (an actor's counter went
/// backwards); choosing by content keeps merge commutative regardless.
fn pick_same_dot<'a>(a: &'a Sibling, b: &'a Sibling) -> &'a Sibling {
    if (&b.value, b.ts_ms) > (&a.value, a.ts_ms) {
        b
    } else {
        a
    }
}

/// The opaque context string handed to clients (`X-Dynamo-Context`).
///
/// Timestamps stay server-side; the checksum catches corruption and casual
/// edits, it is not a MAC.
pub fn encode_context(clock: &VersionVector) -> String {
    let counters: Vec<(&str, u64)> = clock.entries.iter().map(|(actor, e)| (actor.as_str(), e.counter)).collect();
    let payload = postcard::to_allocvec(&counters).expect("postcard cannot fail on an in-memory vec");
    seal(CONTEXT_VERSION, &payload)
}

/// Parses a client's context; the result has `ts_ms` 0 everywhere. An empty
/// string is the empty context (a blind write).
pub fn decode_context(context: &str) -> Result<VersionVector, VersionError> {
    if context.is_empty() {
        return Ok(VersionVector::default());
    }
    let payload = unseal(context)?;
    let (counters, rest): (Vec<(String, u64)>, _) =
        postcard::take_from_bytes(payload.as_slice()).map_err(VersionError::ContextPayload)?;
    if !rest.is_empty() {
        return Err(VersionError::ContextTrailingBytes(rest.len()));
    }
    counters_to_clock(counters)
}

fn seal(version: u8, payload: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(1 + payload.len() + CHECKSUM_LEN);
    bytes.push(version);
    bytes.extend_from_slice(payload);
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Undoes `seal`, returning the payload after the version byte.
fn unseal(context: &str) -> Result<Vec<u8>, VersionError> {
    if context.len() > MAX_CONTEXT_LEN {
        return Err(VersionError::ContextTooLong(context.len()));
    }
    let mut bytes = URL_SAFE_NO_PAD.decode(context).map_err(|_| VersionError::ContextBase64)?;
    if bytes.len() < 1 + CHECKSUM_LEN {
        return Err(VersionError::ContextTruncated);
    }
    let sum = bytes.split_off(bytes.len() - CHECKSUM_LEN);
    if sum != checksum(&bytes) {
        return Err(VersionError::ContextChecksum);
    }
    if bytes[0] != CONTEXT_VERSION {
        return Err(VersionError::ContextVersion(bytes[0]));
    }
    bytes.remove(0);
    Ok(bytes)
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = xxh3_64(bytes).to_be_bytes();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn counters_to_clock(counters: Vec<(String, u64)>) -> Result<VersionVector, VersionError> {
    if counters.len() > MAX_CLOCK_ENTRIES {
        return Err(VersionError::TooManyClockEntries(counters.len()));
    }
    if counters.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(VersionError::ContextNotCanonical);
    }
    let mut clock = VersionVector::default();
    for (actor, counter) in counters {
        validate_entry(&actor, counter)?;
        if counter > MAX_CONTEXT_COUNTER {
            return Err(VersionError::ContextCounterTooLarge(counter));
        }
        clock.entries.insert(actor, ClockEntry { counter, ts_ms: 0 });
    }
    Ok(clock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dot::MAX_ACTOR_LEN;
    use proptest::prelude::*;

    const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];
    const UNLIMITED: PruneRule = PruneRule::count(usize::MAX);
    const DEFAULT: PruneRule = PruneRule::count(10);
    const TIGHT: PruneRule = PruneRule::count(2);

    /// A coordinator's write with the smallest counter the object allows,
    /// as an actor that never lost data issues it.
    trait Coordinate {
        fn write(
            &mut self,
            context: &VersionVector,
            actor: &str,
            value: Option<Bytes>,
            now: u64,
            limit: PruneRule,
        ) -> (Dot, usize);
    }

    impl Coordinate for Object {
        fn write(
            &mut self,
            context: &VersionVector,
            actor: &str,
            value: Option<Bytes>,
            now: u64,
            limit: PruneRule,
        ) -> (Dot, usize) {
            let dot = Dot { actor: actor.to_owned(), counter: self.min_counter(context, actor) };
            let pruned = self.update(context, dot.clone(), value, now, limit);
            (dot, pruned)
        }
    }

    fn val(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn clock_of(counters: &[(&str, u64)]) -> VersionVector {
        let mut clock = VersionVector::default();
        for (actor, counter) in counters {
            clock.advance(actor, *counter, 0);
        }
        clock
    }

    fn dots(object: &Object) -> Vec<String> {
        object.siblings.iter().map(|s| s.dot.to_string()).collect()
    }

    /// One step of a replicated history; replica `i` writes as actor `NAMES[i]`,
    /// as a server-side coordinator would.
    #[derive(Debug, Clone)]
    enum Op {
        Read { replica: usize },
        Write { replica: usize, read: usize, value: Option<u8> },
        Sync { from: usize, to: usize },
    }

    fn op(replicas: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0..replicas).prop_map(|replica| Op::Read { replica }),
            3 => (0..replicas, any::<usize>(), proptest::option::weighted(0.8, any::<u8>()))
                .prop_map(|(replica, read, value)| Op::Write { replica, read, value }),
            2 => (0..replicas, 0..replicas).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    #[derive(Clone)]
    struct Sim {
        replicas: Vec<Object>,
        /// Contexts clients have read so far; index 0 is a blind write.
        reads: Vec<VersionVector>,
        /// The last counter each replica's actor issued, as its identity's
        /// lease keeps it: node-wide, so pruning can never make one repeat.
        issued: Vec<u64>,
        now: u64,
    }

    impl Sim {
        fn new(replicas: usize) -> Sim {
            Sim {
                replicas: vec![Object::default(); replicas],
                reads: vec![VersionVector::default()],
                issued: vec![0; replicas],
                now: 0,
            }
        }

        /// Applies `op`, returning the touched replica and entries pruned.
        fn apply(&mut self, op: &Op, limit: PruneRule) -> (usize, usize) {
            self.now += 1;
            match *op {
                Op::Read { replica } => {
                    let clock = self.replicas[replica].clock.clone();
                    // Round-trip like a real client would.
                    let context = decode_context(&encode_context(&clock)).expect("own context");
                    self.reads.push(context);
                    (replica, 0)
                }
                Op::Write { replica, read, value } => {
                    let context = &self.reads[read % self.reads.len()];
                    let value = value.map(|v| Bytes::from(vec![v]));
                    let object = &mut self.replicas[replica];
                    let counter = object.min_counter(context, NAMES[replica]).max(self.issued[replica] + 1);
                    self.issued[replica] = counter;
                    let dot = Dot { actor: NAMES[replica].to_owned(), counter };
                    (replica, object.update(context, dot, value, self.now, limit))
                }
                Op::Sync { from, to } => {
                    let source = self.replicas[from].clone();
                    (to, self.replicas[to].merge(&source, limit, self.now))
                }
            }
        }
    }

    fn simulate(replicas: usize, ops: &[Op], limit: PruneRule) -> Vec<Object> {
        let mut sim = Sim::new(replicas);
        for op in ops {
            sim.apply(op, limit);
        }
        sim.replicas
    }

    /// Three replica states from one random history.
    fn three_objects(replicas: usize, limit: PruneRule) -> impl Strategy<Value = Vec<Object>> {
        assert!(replicas >= 3);
        proptest::collection::vec(op(replicas), 0..60).prop_map(move |ops| simulate(replicas, &ops, limit))
    }

    fn merged(a: &Object, b: &Object, limit: PruneRule) -> Object {
        let mut out = a.clone();
        out.merge(b, limit, 0);
        out
    }

    /// Pruning may keep more entries than the limit only for sibling actors.
    fn prune_bound_holds(object: &Object, rule: PruneRule) -> bool {
        object.clock.len() <= rule.limit
            || object.clock.entries.keys().all(|actor| object.siblings.iter().any(|s| &s.dot.actor == actor))
    }

    proptest! {
        #[test]
        fn merge_laws_hold(objs in three_objects(3, DEFAULT)) {
            let p = DEFAULT;
            let (a, b, c) = (&objs[0], &objs[1], &objs[2]);
            prop_assert_eq!(merged(a, b, p), merged(b, a, p));
            prop_assert_eq!(merged(a, a, p), a.clone());
            prop_assert_eq!(merged(&merged(a, b, p), c, p), merged(a, &merged(b, c, p), p));
            // Canonical: the same state encodes to the same bytes.
            prop_assert_eq!(merged(a, b, p).encode(), merged(b, a, p).encode());
        }

        #[test]
        fn merge_commutes_and_is_idempotent_under_pruning(objs in three_objects(5, TIGHT)) {
            let p = TIGHT;
            for a in &objs {
                prop_assert_eq!(merged(a, a, p), a.clone());
                for b in &objs {
                    prop_assert_eq!(merged(a, b, p), merged(b, a, p));
                }
            }
        }

        #[test]
        fn pruning_is_bounded_and_never_drops_a_sibling(ops in proptest::collection::vec(op(5), 0..80)) {
            let tight = TIGHT;
            let mut sim = Sim::new(5);
            for op in &ops {
                let mut shadow = sim.clone();
                let (r, pruned) = sim.apply(op, tight);
                shadow.apply(op, UNLIMITED);
                let (kept, full) = (&sim.replicas[r], &shadow.replicas[r]);
                prop_assert_eq!(&kept.siblings, &full.siblings);
                prop_assert!(full.clock.descends(&kept.clock));
                prop_assert_eq!(full.clock.len() - kept.clock.len(), pruned);
                prop_assert!(prune_bound_holds(kept, tight), "clock {} siblings {:?}", kept.clock, dots(kept));
            }
        }

        #[test]
        fn encode_decode_roundtrip(objs in three_objects(3, DEFAULT)) {
            for object in &objs {
                prop_assert_eq!(&Object::decode(&object.encode())?, object);
            }
        }

        #[test]
        fn decode_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(object) = Object::decode(&bytes) {
                prop_assert!(object.validate().is_ok());
            }
        }

        #[test]
        fn decode_corrupted_encoding_never_panics(
            objs in three_objects(3, DEFAULT),
            at in any::<usize>(),
            byte in any::<u8>(),
            cut in any::<usize>(),
        ) {
            let mut bytes = objs[0].encode();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = byte;
                bytes.truncate(cut % (bytes.len() + 1));
            }
            if let Ok(object) = Object::decode(&bytes) {
                prop_assert_eq!(Object::decode(&object.encode())?, object);
            }
        }

        #[test]
        fn context_roundtrips_counters(objs in three_objects(3, DEFAULT)) {
            for object in &objs {
                let decoded = decode_context(&encode_context(&object.clock))?;
                prop_assert_eq!(decoded.to_string(), object.clock.to_string());
                prop_assert!(decoded.entries.values().all(|e| e.ts_ms == 0));
            }
        }

        #[test]
        fn tampered_context_is_rejected(objs in three_objects(3, DEFAULT), at in any::<usize>(), pick in 0usize..64) {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let context = encode_context(&objs[0].clock);
            let mut bytes = context.clone().into_bytes();
            let i = at % bytes.len();
            let replacement = ALPHABET[pick];
            prop_assume!(bytes[i] != replacement);
            bytes[i] = replacement;
            let tampered = String::from_utf8(bytes).expect("ascii");
            prop_assert!(decode_context(&tampered).is_err(), "{} -> {} accepted", context, tampered);
        }
    }

    /// A step of a history with more writers than the prune limit: any
    /// actor may coordinate a write at any replica (as sloppy coordinators
    /// do under partitions).
    #[derive(Debug, Clone)]
    enum Step {
        Read { replica: usize },
        Write { replica: usize, actor: usize, read: usize, value: u8 },
        Sync { from: usize, to: usize },
    }

    const REPLICAS: usize = 3;
    const ACTORS: usize = 12;

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => (0..REPLICAS).prop_map(|replica| Step::Read { replica }),
            3 => (0..REPLICAS, 0..ACTORS, any::<usize>(), any::<u8>())
                .prop_map(|(replica, actor, read, value)| Step::Write { replica, actor, read, value }),
            2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
        ]
    }

    /// Plays `steps` under `rule`: the merge of every replica at the end,
    /// every acknowledged write's dot, and the entries pruned on the way.
    fn play(steps: &[Step], rule: PruneRule) -> (Object, Vec<Dot>, usize) {
        let mut replicas = vec![Object::default(); REPLICAS];
        let mut reads = vec![VersionVector::default()];
        let mut issued = [0u64; ACTORS];
        let (mut acked, mut pruned) = (Vec::new(), 0);
        for (now, step) in (1u64..).zip(steps) {
            match *step {
                Step::Read { replica } => reads.push(replicas[replica].clock.clone()),
                Step::Write { replica, actor, read, value } => {
                    let context = &reads[read % reads.len()];
                    let name = format!("a{actor}");
                    let object = &mut replicas[replica];
                    let counter = object.min_counter(context, &name).max(issued[actor] + 1);
                    issued[actor] = counter;
                    let dot = Dot { actor: name, counter };
                    pruned += object.update(context, dot.clone(), Some(Bytes::from(vec![value])), now, rule);
                    acked.push(dot);
                }
                Step::Sync { from, to } => {
                    let source = replicas[from].clone();
                    pruned += replicas[to].merge(&source, rule, now);
                }
            }
        }
        let end = steps.len() as u64 + 1;
        let mut merged = Object::default();
        for replica in &replicas {
            pruned += merged.merge(replica, rule, end);
        }
        (merged, acked, pruned)
    }

    proptest! {
        /// Pruning never makes an acknowledged write disappear: each is
        /// still held — as the lost-write checker decides it, a sibling with
        /// its dot or a clock covering it — or was superseded in the same
        /// history without pruning. Pruning may only add siblings.
        #[test]
        fn pruning_never_loses_an_acknowledged_write(steps in proptest::collection::vec(step(), 1..150)) {
            let rule = PruneRule { limit: 4, max: 8, young_ms: 6 };
            let (kept, acked, _) = play(&steps, rule);
            let (full, _, _) = play(&steps, UNLIMITED);
            let holds = |o: &Object, dot: &Dot| o.siblings.iter().any(|s| &s.dot == dot);
            for dot in &acked {
                let held = holds(&kept, dot) || kept.clock.covers(dot);
                let superseded = full.clock.covers(dot) && !holds(&full, dot);
                prop_assert!(held || superseded, "{} lost: kept {} {:?}", dot, kept.clock, dots(&kept));
            }
            for sibling in &full.siblings {
                prop_assert!(holds(&kept, &sibling.dot), "pruning dropped the live sibling {}", sibling.dot);
            }
            prop_assert!(kept.clock.len() <= rule.max || prune_bound_holds(&kept, PruneRule::count(rule.max)));
        }
    }

    #[test]
    fn histories_with_many_writers_do_prune() {
        let steps: Vec<Step> = (0..ACTORS)
            .flat_map(|actor| {
                [Step::Write { replica: 0, actor, read: usize::MAX, value: 1 }, Step::Read { replica: 0 }]
            })
            .chain([Step::Write { replica: 0, actor: 0, read: usize::MAX, value: 2 }])
            .collect();
        let (kept, _, pruned) = play(&steps, PruneRule { limit: 4, max: 8, young_ms: 6 });
        assert!(pruned > 0, "the property above must see pruning fire");
        assert!(kept.clock.len() < ACTORS, "{}", kept.clock);
    }

    #[test]
    fn riak_rule_keeps_young_entries_up_to_the_hard_bound() {
        let mut object = Object::default();
        let mut clock = VersionVector::default();
        for (i, actor) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
            clock.advance(actor, 1, 100 + i as u64);
        }
        object.write(&clock, "z", val("x"), 110, UNLIMITED);
        let rule = PruneRule { limit: 2, max: 5, young_ms: 50 };
        let mut young = object.clone();
        // Seven entries, all younger than 50 ms: only the two beyond the hard bound go, oldest first.
        assert_eq!(young.prune(rule, 120), 2);
        assert_eq!(young.clock.readable(), "c:1,d:1,e:1,f:1,z:1");
        // Once old, everything beyond the limit goes, sparing the sibling's actor.
        assert_eq!(young.prune(rule, 200), 3);
        assert_eq!(young.clock.readable(), "f:1,z:1");
        // Partly old: the old ones beyond the limit go, the young stay.
        let mut mixed = object.clone();
        assert_eq!(mixed.prune(rule, 152), 3, "a, b and c are 50 ms old or more");
        assert_eq!(mixed.clock.readable(), "d:1,e:1,f:1,z:1");
    }

    #[test]
    fn concurrent_blind_writes_from_different_actors_are_siblings() {
        let mut object = Object::default();
        let empty = VersionVector::default();
        object.write(&empty, "n1", val("a"), 1, DEFAULT);
        object.write(&empty, "n2", val("b"), 2, DEFAULT);
        assert_eq!(dots(&object), ["n1:1", "n2:1"]);
        assert_eq!(object.clock.readable(), "n1:1,n2:1");
    }

    #[test]
    fn concurrent_blind_writes_from_one_actor_are_siblings() {
        let mut object = Object::default();
        let empty = VersionVector::default();
        let (first, _) = object.write(&empty, "n1", val("a"), 1, DEFAULT);
        let (second, _) = object.write(&empty, "n1", val("b"), 2, DEFAULT);
        assert_eq!((first.counter, second.counter), (1, 2));
        assert_eq!(dots(&object), ["n1:1", "n1:2"]);
        assert_eq!(object.values().count(), 2);
    }

    #[test]
    fn write_supersedes_exactly_what_its_read_saw() {
        let p = DEFAULT;
        let mut object = Object::default();
        let empty = VersionVector::default();
        object.write(&empty, "n1", val("a"), 1, p);
        object.write(&empty, "n2", val("b"), 2, p);
        let read = object.clock.clone();
        // Written after the read, so the next write must not supersede it.
        object.write(&empty, "n3", val("late"), 3, p);
        let (dot, _) = object.write(&read, "n1", val("c"), 4, p);
        assert_eq!(dot.to_string(), "n1:2");
        assert_eq!(dots(&object), ["n1:2", "n3:1"]);
        let values: Vec<&Bytes> = object.values().collect();
        assert_eq!(values, [&Bytes::from("c"), &Bytes::from("late")]);
    }

    #[test]
    fn stale_context_from_another_replica_advances_counter() {
        let mut object = Object::default();
        let object_ctx = clock_of(&[("n1", 7)]);
        let (dot, _) = object.write(&object_ctx, "n1", val("x"), 1, DEFAULT);
        assert_eq!(dot.counter, 8);
        let forged = clock_of(&[("n1", u64::MAX)]);
        let (dot, _) = Object::default().write(&forged, "n1", val("x"), 1, DEFAULT);
        assert_eq!(dot.counter, u64::MAX, "saturates instead of panicking");
    }

    #[test]
    fn delete_leaves_a_tombstone() {
        let p = DEFAULT;
        let mut object = Object::default();
        assert!(object.is_empty() && object.is_deleted());
        object.write(&VersionVector::default(), "n1", val("a"), 1, p);
        assert!(!object.is_deleted());
        let read = object.clock.clone();
        object.write(&read, "n1", None, 2, p);
        assert!(object.is_deleted() && !object.is_empty());
        assert_eq!(object.values().count(), 0);
        assert_eq!(dots(&object), ["n1:2"]);
    }

    #[test]
    fn replica_that_saw_a_write_drops_the_superseded_sibling() {
        let p = DEFAULT;
        let mut a = Object::default();
        a.write(&VersionVector::default(), "n1", val("old"), 1, p);
        let b = a.clone();
        let read = a.clock.clone();
        a.write(&read, "n1", val("new"), 2, p);
        assert_eq!(merged(&b, &a, p), a);
        assert_eq!(merged(&a, &b, p), a);
    }

    #[test]
    fn same_dot_with_different_values_merges_deterministically() {
        let sibling = |v: &str| Sibling { dot: Dot { actor: "n1".into(), counter: 1 }, value: val(v), ts_ms: 5 };
        let a = Object { clock: clock_of(&[("n1", 1)]), siblings: vec![sibling("a")] };
        let b = Object { clock: clock_of(&[("n1", 1)]), siblings: vec![sibling("b")] };
        let p = DEFAULT;
        assert_eq!(merged(&a, &b, p), merged(&b, &a, p));
        assert_eq!(merged(&a, &b, p).siblings, [sibling("b")]);
    }

    #[test]
    fn pruning_creates_false_concurrency_but_keeps_the_value() {
        let p = PruneRule::count(1);
        let mut a = Object::default();
        a.write(&VersionVector::default(), "n1", val("old"), 1, p);
        let stale = a.clone();
        let read = a.clock.clone();
        let (_, pruned) = a.write(&read, "n2", val("new"), 2, p);
        assert_eq!(pruned, 1, "n1 has no sibling left, so it goes");
        assert_eq!(a.clock.readable(), "n2:1");
        // Both actors now hold siblings, so the limit cannot be met.
        assert_eq!(a.merge(&stale, p, 3), 0);
        assert_eq!(dots(&a), ["n1:1", "n2:1"]);
        assert_eq!(a.clock.readable(), "n1:1,n2:1");
        // Without pruning the superseded value would have been dropped.
        let mut full = stale.clone();
        full.write(&read, "n2", val("new"), 2, UNLIMITED);
        full.merge(&stale, UNLIMITED, 3);
        assert_eq!(dots(&full), ["n2:1"]);
    }

    #[test]
    fn pruning_drops_oldest_then_by_actor_and_spares_sibling_actors() {
        let mut object = Object::default();
        let mut clock = VersionVector::default();
        for (actor, ts) in [("a", 5), ("b", 1), ("c", 1), ("d", 0)] {
            clock.advance(actor, 1, ts);
        }
        object.write(&clock, "d", val("x"), 9, DEFAULT);
        object.clock.entries.get_mut("d").expect("d").ts_ms = 0;
        assert_eq!(object.prune(TIGHT, 9), 2);
        // d is oldest but holds the sibling; b and c tie on age, then c goes.
        assert_eq!(object.clock.readable(), "a:1,d:2");
        assert_eq!(object.prune(PruneRule::count(0), 9), 1);
        assert_eq!(object.clock.readable(), "d:2");
    }

    #[test]
    fn readable_is_sorted_and_compact() {
        assert_eq!(VersionVector::default().readable(), "");
        let clock = clock_of(&[("node3", 2), ("node1", 5)]);
        assert_eq!(clock.readable(), "node1:5,node3:2");
        assert_eq!(clock.to_string(), clock.readable());
    }

    #[test]
    fn clock_comparisons() {
        let small = clock_of(&[("a", 1)]);
        let big = clock_of(&[("a", 2), ("b", 1)]);
        assert!(big.descends(&small) && !small.descends(&big));
        assert!(big.covers(&"a:2".parse().expect("dot")));
        assert!(!small.covers(&"b:1".parse().expect("dot")));
        let mut joined = small.clone();
        joined.join(&big);
        assert_eq!(joined, big);
        assert_eq!((big.get("b"), big.get("zz"), big.len()), (1, 0, 2));
    }

    #[test]
    fn decode_rejects_broken_invariants() {
        let sibling =
            |actor: &str, counter| Sibling { dot: Dot { actor: actor.into(), counter }, value: val("v"), ts_ms: 0 };
        let clock = clock_of(&[("a", 2), ("b", 1)]);
        let broken = |siblings: Vec<Sibling>| Object { clock: clock.clone(), siblings }.encode();
        let err = |bytes: Vec<u8>| Object::decode(&bytes).expect_err("accepted");
        assert!(matches!(err(broken(vec![sibling("b", 1), sibling("a", 1)])), VersionError::SiblingOrder(_)));
        assert!(matches!(err(broken(vec![sibling("a", 1), sibling("a", 1)])), VersionError::SiblingOrder(_)));
        assert!(matches!(err(broken(vec![sibling("a", 3)])), VersionError::UncoveredSibling(_)));
        assert!(matches!(err(broken(vec![sibling("a", 0)])), VersionError::Dot(DotError::ZeroCounter(_))));
        let long = "x".repeat(MAX_ACTOR_LEN + 1);
        let bad_clock = Object { clock: clock_of(&[(&long, 1)]), siblings: vec![] }.encode();
        assert_eq!(err(bad_clock), VersionError::Dot(DotError::BadActorLength(65)));
        let mut trailing = broken(vec![sibling("a", 1)]);
        trailing.push(0);
        assert_eq!(err(trailing), VersionError::ObjectTrailingBytes(1));
        assert!(Object::decode(&broken(vec![sibling("a", 1), sibling("b", 1)])).is_ok());
    }

    #[test]
    fn decode_rejects_too_many_siblings_and_entries() {
        let names: Vec<String> = (0..=MAX_CLOCK_ENTRIES).map(|i| format!("n{i}")).collect();
        let mut clock = VersionVector::default();
        for name in &names {
            clock.advance(name, 1, 0);
        }
        let object = Object { clock: clock.clone(), siblings: vec![] };
        assert_eq!(Object::decode(&object.encode()), Err(VersionError::TooManyClockEntries(1025)));
        let siblings = (1..=MAX_SIBLINGS as u64 + 1)
            .map(|counter| Sibling { dot: Dot { actor: "n1".into(), counter }, value: None, ts_ms: 0 })
            .collect();
        let object = Object { clock: clock_of(&[("n1", 2000)]), siblings };
        assert_eq!(Object::decode(&object.encode()), Err(VersionError::TooManySiblings(1025)));
    }

    fn sealed_counters(counters: &[(&str, u64)]) -> String {
        seal(CONTEXT_VERSION, &postcard::to_allocvec(counters).expect("encode"))
    }

    #[test]
    fn context_errors_are_distinct() {
        use VersionError::*;
        let good = encode_context(&clock_of(&[("n1", 3)]));
        assert_eq!(decode_context(&good).map(|c| c.readable()), Ok("n1:3".into()));
        assert_eq!(decode_context(""), Ok(VersionVector::default()));
        assert_eq!(decode_context("a+b/"), Err(ContextBase64));
        assert_eq!(decode_context("=="), Err(ContextBase64));
        assert_eq!(decode_context("AAAA"), Err(ContextTruncated));
        let mut flipped = URL_SAFE_NO_PAD.decode(&good).expect("b64");
        flipped[1] ^= 1;
        assert_eq!(decode_context(&URL_SAFE_NO_PAD.encode(flipped)), Err(ContextChecksum));
        assert_eq!(decode_context(&seal(2, b"")), Err(ContextVersion(2)));
        assert!(matches!(decode_context(&seal(CONTEXT_VERSION, &[0x05])), Err(ContextPayload(_))));
        assert_eq!(decode_context(&seal(CONTEXT_VERSION, &[0, 0])), Err(ContextTrailingBytes(1)));
        assert_eq!(decode_context(&sealed_counters(&[("", 1)])), Err(Dot(DotError::BadActorLength(0))));
        let long = "x".repeat(MAX_ACTOR_LEN + 1);
        assert_eq!(decode_context(&sealed_counters(&[(&long, 1)])), Err(Dot(DotError::BadActorLength(65))));
        for unprintable in ["a\nb", "a,b", "a b", "é"] {
            let err = decode_context(&sealed_counters(&[(unprintable, 1)]));
            assert_eq!(err, Err(Dot(DotError::BadActorCharacter(unprintable.into()))));
            assert!(!err.unwrap_err().to_string().contains('\n'), "one line");
        }
        assert_eq!(decode_context(&sealed_counters(&[("n1", u64::MAX)])), Err(ContextCounterTooLarge(u64::MAX)));
        assert_eq!(decode_context(&sealed_counters(&[("n1", 0)])), Err(Dot(DotError::ZeroCounter("n1".into()))));
        assert_eq!(decode_context(&sealed_counters(&[("b", 1), ("a", 1)])), Err(ContextNotCanonical));
        assert_eq!(decode_context(&sealed_counters(&[("a", 1), ("a", 2)])), Err(ContextNotCanonical));
        let names: Vec<String> = (0..=MAX_CLOCK_ENTRIES).map(|i| format!("{i:05}")).collect();
        let many: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        assert_eq!(decode_context(&sealed_counters(&many)), Err(TooManyClockEntries(1025)));
        let huge = "A".repeat(MAX_CONTEXT_LEN + 1);
        assert_eq!(decode_context(&huge), Err(ContextTooLong(MAX_CONTEXT_LEN + 1)));
        // Every message is one line.
        for e in [ContextBase64, ContextChecksum, ContextNotCanonical, Dot(DotError::BadDot("x"))] {
            assert!(!e.to_string().contains('\n'));
        }
    }
}
