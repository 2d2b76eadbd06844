//! Ring placement: which partition a key falls in and which nodes hold it.
//!
//! Consistent hashing with Q equal partitions (Dynamo's strategy 3). The
//! key space is cut into a fixed power-of-two number of partitions, and
//! each partition is owned by the member that wins rendezvous hashing for it.
//! Ownership depends only on the member set, so every node that agrees on
//! membership agrees on placement without exchanging tokens, and a join or
//! leave moves only the partitions the changed member wins or loses. The
//! ring knows nothing of liveness: a down node is still a member. It lives
//! in the contract because a client routing to a key's coordinator must
//! place keys exactly as the nodes do.

use xxhash_rust::xxh3::xxh3_64;

/// Most partitions a ring may have.
pub const MAX_PARTITIONS: u32 = 1 << 16;

/// Partitions of a cluster started with `nodes` nodes when nobody says:
/// the smallest power of two ≥ 4 × nodes, and at least 256. About four
/// partitions per node keep the share of nodes that own none (and hold no
/// data) near 2 %; more would cost more to build, since a ring build hashes
/// Q × nodes names (16 M at 1,000 nodes with the 16 per node of old,
/// 4 M now: ~20 ms on every node, on every change of the member set).
pub fn default_partitions(nodes: usize) -> u32 {
    (4 * nodes.max(1)).next_power_of_two().clamp(256, MAX_PARTITIONS as usize) as u32
}

/// Preference lists up to this long are checked for repeats by scanning
/// them; longer ones (extended lists) by a bitmap over the members.
const SHORT_LIST: usize = 16;

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("partition count must be a power of two from 1 to {MAX_PARTITIONS}, got {0}")]
    BadPartitionCount(u32),
    #[error("a ring needs at least one member")]
    NoMembers,
    #[error("member names must not be empty")]
    EmptyMemberName,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Sorted and deduplicated, so the ring is independent of input order.
    members: Vec<String>,
    /// Index into `members` of each partition's owner.
    owners: Vec<u32>,
    /// Each owner's score for its partition: what a newcomer must beat.
    scores: Vec<u64>,
    /// Members that win no partition; walks append them so lists stay full.
    idle: Vec<u32>,
    /// log2 of the partition count.
    bits: u32,
}

impl Ring {
    pub fn new(members: impl IntoIterator<Item = String>, partitions: u32) -> Result<Ring, RingError> {
        if !partitions.is_power_of_two() || partitions > MAX_PARTITIONS {
            return Err(RingError::BadPartitionCount(partitions));
        }
        let mut members: Vec<String> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        if members.is_empty() {
            return Err(RingError::NoMembers);
        }
        if members.iter().any(String::is_empty) {
            return Err(RingError::EmptyMemberName);
        }
        let (owners, scores) = rendezvous_owners(&members, partitions);
        let idle = idle_members(members.len(), &owners);
        Ok(Ring { members, owners, scores, idle, bits: partitions.trailing_zeros() })
    }

    /// The ring of these members and `joiners`, the same as [`Ring::new`]
    /// would build, at the cost of scoring only the joiners: Q hashes per
    /// joiner instead of Q × K. A big cluster forming sees a member join
    /// every few gossip rounds, on every node.
    pub fn joined(&self, joiners: impl IntoIterator<Item = String>) -> Result<Ring, RingError> {
        let mut joiners: Vec<String> = joiners.into_iter().filter(|j| self.members.binary_search(j).is_err()).collect();
        joiners.sort_unstable();
        joiners.dedup();
        if joiners.iter().any(String::is_empty) {
            return Err(RingError::EmptyMemberName);
        }
        let mut members = self.members.clone();
        members.extend(joiners.iter().cloned());
        members.sort_unstable();
        let moved = |old: u32| members.binary_search(&self.members[old as usize]).expect("an old member") as u32;
        let mut owners: Vec<u32> = self.owners.iter().map(|&old| moved(old)).collect();
        let mut scores = self.scores.clone();
        for joiner in &joiners {
            let index = members.binary_search(joiner).expect("a joiner") as u32;
            for (partition, (owner, best)) in owners.iter_mut().zip(scores.iter_mut()).enumerate() {
                let score = score(partition as u32, joiner);
                // Ties go to the member first in sorted order, as in a full build.
                if score > *best || (score == *best && index < *owner) {
                    (*owner, *best) = (index, score);
                }
            }
        }
        let idle = idle_members(members.len(), &owners);
        Ok(Ring { members, owners, scores, idle, bits: self.bits })
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn partitions(&self) -> u32 {
        1 << self.bits
    }

    /// The partition holding `key`: the top bits of its hash, so partitions
    /// are contiguous arcs of the hash space.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        // A shift by 64 (one partition) is out of range, hence checked_shr.
        xxh3_64(key).checked_shr(64 - self.bits).unwrap_or(0) as u32
    }

    /// Owner of `partition` (taken modulo the partition count).
    pub fn owner(&self, partition: u32) -> &str {
        let index = self.owners[self.wrap(partition)];
        &self.members[index as usize]
    }

    /// The first `n` distinct nodes clockwise from `partition` (all members
    /// if there are fewer): the nodes that replicate it.
    pub fn preference_list(&self, partition: u32, n: usize) -> Vec<&str> {
        self.walk(partition, n)
    }

    /// Every member once, in preference order from `partition`; past the
    /// first N are the fallbacks for a sloppy quorum.
    pub fn extended_list(&self, partition: u32) -> Vec<&str> {
        self.walk(partition, self.members.len())
    }

    /// Partitions whose preference list of length `n` contains `node`.
    pub fn replicated_partitions(&self, node: &str, n: usize) -> Vec<u32> {
        (0..self.partitions()).filter(|&p| self.preference_list(p, n).contains(&node)).collect()
    }

    fn wrap(&self, partition: u32) -> usize {
        (partition & (self.partitions() - 1)) as usize
    }

    /// Distinct owners clockwise from `partition`, then idle members, up to
    /// `n`. Stops as soon as every owning member has been seen, so a walk is
    /// at most one lap.
    fn walk(&self, partition: u32, n: usize) -> Vec<&str> {
        let want = n.min(self.members.len());
        let owning = self.members.len() - self.idle.len();
        // Placement runs on every request and, for every partition, in each
        // anti-entropy pass: a bitmap over a thousand members per walk would
        // cost more than the walk itself.
        let mut seen = (want > SHORT_LIST).then(|| vec![false; self.members.len()]);
        let mut picked: Vec<u32> = Vec::with_capacity(want);
        let start = self.wrap(partition);
        let clockwise = self.owners[start..].iter().chain(&self.owners[..start]);
        for &index in clockwise {
            if picked.len() == want.min(owning) {
                break;
            }
            let new = match &mut seen {
                Some(seen) => !std::mem::replace(&mut seen[index as usize], true),
                None => !picked.contains(&index),
            };
            if new {
                picked.push(index);
            }
        }
        let mut out: Vec<&str> = picked.iter().map(|&i| self.members[i as usize].as_str()).collect();
        let idle = self.idle.iter().map(|&i| self.members[i as usize].as_str());
        out.extend(idle.take(want - out.len()));
        out
    }
}

/// Each partition's owner and its score: the member with the highest
/// score for it (ties, which would need a 64-bit collision, go to the
/// first in sorted order).
fn rendezvous_owners(members: &[String], partitions: u32) -> (Vec<u32>, Vec<u64>) {
    (0..partitions)
        .map(|partition| {
            let mut best = (0u32, 0u64);
            for (index, member) in members.iter().enumerate() {
                let score = score(partition, member);
                if index == 0 || score > best.1 {
                    best = (index as u32, score);
                }
            }
            best
        })
        .unzip()
}

/// A member's claim on a partition: XXH3-64 of the partition number
/// (big-endian) and the member's name. Placement is pinned to it.
fn score(partition: u32, member: &str) -> u64 {
    let mut buf = [0u8; 4 + 64];
    let name = member.as_bytes();
    if name.len() <= 64 {
        buf[..4].copy_from_slice(&partition.to_be_bytes());
        buf[4..4 + name.len()].copy_from_slice(name);
        return xxh3_64(&buf[..4 + name.len()]);
    }
    xxh3_64(&[&partition.to_be_bytes()[..], name].concat())
}

fn idle_members(count: usize, owners: &[u32]) -> Vec<u32> {
    let mut owns = vec![false; count];
    for &o in owners {
        owns[o as usize] = true;
    }
    (0..count as u32).filter(|&i| !owns[i as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("node{i}")).collect()
    }

    fn named_ring(k: usize, q: u32) -> Ring {
        Ring::new(names(k), q).expect("valid ring")
    }

    fn member_set() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[a-z0-9.:-]{1,12}", 1..12).prop_map(|set| set.into_iter().collect())
    }

    fn partition_count() -> impl Strategy<Value = u32> {
        (0u32..=10).prop_map(|bits| 1 << bits)
    }

    proptest! {
        #[test]
        fn preference_lists_have_min_n_k_distinct_nodes(
            members in member_set(), q in partition_count(), n in 0usize..15, p in any::<u32>(),
        ) {
            let ring = Ring::new(members.clone(), q)?;
            let list = ring.preference_list(p, n);
            let distinct: BTreeSet<&str> = list.iter().copied().collect();
            prop_assert_eq!(list.len(), n.min(members.len()));
            prop_assert_eq!(distinct.len(), list.len());
            if n > 0 {
                prop_assert_eq!(list[0], ring.owner(p));
            }
        }

        #[test]
        fn extended_list_extends_preference_list_with_every_member(
            members in member_set(), q in partition_count(), n in 0usize..15, p in any::<u32>(),
        ) {
            let ring = Ring::new(members.clone(), q)?;
            let extended = ring.extended_list(p);
            let preferred = ring.preference_list(p, n);
            prop_assert_eq!(&extended[..preferred.len()], preferred.as_slice());
            let mut sorted: Vec<&str> = extended.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, members.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn ring_ignores_member_order_and_duplicates(
            shuffled in member_set().prop_flat_map(|m| Just(m).prop_shuffle()),
            q in partition_count(),
        ) {
            let mut sorted = shuffled.clone();
            sorted.sort();
            let mut doubled = shuffled.clone();
            doubled.extend(shuffled.iter().rev().cloned());
            let ring = Ring::new(sorted.clone(), q)?;
            prop_assert_eq!(&Ring::new(shuffled, q)?, &ring);
            prop_assert_eq!(&Ring::new(doubled, q)?, &ring);
            prop_assert_eq!(ring.members(), sorted.as_slice());
        }

        #[test]
        fn a_ring_joined_by_newcomers_is_the_ring_built_with_them(
            members in member_set(),
            joiners in prop::collection::vec("[a-z]{1,8}", 1..6),
            q in partition_count(),
        ) {
            let before = Ring::new(members.clone(), q).unwrap();
            let full = Ring::new(members.into_iter().chain(joiners.clone()), q).unwrap();
            prop_assert_eq!(before.joined(joiners).unwrap(), full);
        }

        #[test]
        fn join_moves_partitions_only_to_the_new_node(members in member_set(), newcomer in "[A-Z]{1,8}") {
            let before = Ring::new(members.clone(), 256)?;
            let after = Ring::new(members.into_iter().chain([newcomer.clone()]), 256)?;
            for p in 0..256 {
                if before.owner(p) != after.owner(p) {
                    prop_assert_eq!(after.owner(p), newcomer.as_str());
                }
            }
        }

        #[test]
        fn replicated_partitions_match_preference_lists(
            members in member_set(), q in partition_count(), n in 1usize..5,
        ) {
            let ring = Ring::new(members.clone(), q)?;
            let mut total = 0;
            for member in &members {
                let mine = ring.replicated_partitions(member, n);
                for &p in &mine {
                    prop_assert!(ring.preference_list(p, n).contains(&member.as_str()));
                }
                total += mine.len();
            }
            prop_assert_eq!(total, q as usize * n.min(members.len()));
        }
    }

    #[test]
    fn join_moves_about_q_over_k_plus_one() {
        const Q: u32 = 256;
        for k in 3..20 {
            let before = named_ring(k, Q);
            let after = Ring::new(names(k).into_iter().chain(["joiner".to_string()]), Q).expect("ring");
            let moved = (0..Q).filter(|&p| before.owner(p) != after.owner(p)).count() as f64;
            let expected = f64::from(Q) / (k + 1) as f64;
            assert!(
                (0.3 * expected..=2.0 * expected).contains(&moved),
                "k={k}: moved {moved}, expected about {expected}"
            );
        }
    }

    #[test]
    fn a_thousand_members_share_their_partitions_as_chance_would() {
        let ring = named_ring(1000, default_partitions(1000));
        let mut owned = vec![0u32; 1000];
        for p in 0..ring.partitions() {
            owned[ring.members().iter().position(|m| m == ring.owner(p)).unwrap()] += 1;
        }
        // Four partitions a member on average: e^-4 ≈ 1.8 % own none, and
        // a member with more than 20 would be a one-in-a-million draw.
        let none = owned.iter().filter(|&&o| o == 0).count();
        assert!((5..=35).contains(&none), "{none} of 1000 members own no partition");
        assert!(owned.iter().all(|&o| o <= 20), "most owned by one member: {:?}", owned.iter().max());
    }

    #[test]
    fn load_is_balanced() {
        for prefix in ["node", "db-", "10.0.0."] {
            let members: Vec<String> = (1..=3).map(|i| format!("{prefix}{i}")).collect();
            let ring = Ring::new(members.clone(), 256).expect("ring");
            for member in &members {
                let owned = (0..256).filter(|&p| ring.owner(p) == member).count();
                assert!((50..=120).contains(&owned), "{member} owns {owned}");
            }
        }
    }

    #[test]
    fn partition_of_is_pinned() {
        // Placement must never change between releases: data would be lost.
        // xxh3("hello") = 0x9555e8555c62dcfd and xxh3("") = 0x2d06800538d394c2.
        let ring = named_ring(3, 1024);
        assert_eq!(ring.partition_of(b"hello"), 597);
        assert_eq!(ring.partition_of(b""), 180);
        assert_eq!(ring.owner(0), "node1");
        assert_eq!(ring.preference_list(7, 3), ["node1", "node2", "node0"]);
        assert_eq!(named_ring(3, 1).partition_of(b"hello"), 0);
        let full = named_ring(2, MAX_PARTITIONS);
        assert!(full.partition_of(b"hello") < MAX_PARTITIONS);
    }

    #[test]
    fn partition_count_and_members_are_validated() {
        for bad in [0, 3, 100, MAX_PARTITIONS * 2] {
            assert_eq!(Ring::new(names(3), bad), Err(RingError::BadPartitionCount(bad)));
        }
        assert_eq!(Ring::new(Vec::new(), 8), Err(RingError::NoMembers));
        assert_eq!(Ring::new(vec![String::new()], 8), Err(RingError::EmptyMemberName));
        assert_eq!(named_ring(3, 64).partitions(), 64);
    }

    #[test]
    fn default_partitions_grow_with_the_cluster() {
        assert_eq!(default_partitions(0), 256);
        assert_eq!(default_partitions(3), 256);
        assert_eq!(default_partitions(64), 256);
        assert_eq!(default_partitions(65), 512);
        assert_eq!(default_partitions(100), 512);
        assert_eq!(default_partitions(1000), 4096);
        assert_eq!(default_partitions(100_000), MAX_PARTITIONS);
        for nodes in [1, 7, 250, 1000, 1024, 1025, 5000] {
            let q = default_partitions(nodes);
            assert!(q.is_power_of_two() && q as usize >= nodes, "{nodes} nodes: Q = {q}");
            assert!(Ring::new(names(3), q).is_ok());
        }
        // A node owning nothing holds no data: at four partitions per node
        // few are left idle.
        let ring = named_ring(1000, default_partitions(1000));
        let owners: BTreeSet<&str> = (0..ring.partitions()).map(|p| ring.owner(p)).collect();
        let idle = 1000 - owners.len();
        assert!(idle < 60, "{idle} of 1000 nodes own no partition");
    }

    #[test]
    fn long_and_short_lists_agree() {
        let ring = named_ring(40, 64);
        for p in 0..64 {
            let extended = ring.extended_list(p);
            for n in [1, 3, SHORT_LIST, SHORT_LIST + 1, 40] {
                assert_eq!(ring.preference_list(p, n), extended[..n], "partition {p}, n {n}");
            }
        }
    }

    #[test]
    fn members_owning_nothing_still_appear_in_lists() {
        let ring = named_ring(8, 2);
        assert_eq!(ring.extended_list(0).len(), 8);
        assert_eq!(ring.preference_list(1, 5).len(), 5);
        assert!(ring.replicated_partitions("nobody", 3).is_empty());
    }
}
