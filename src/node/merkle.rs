//! Merkle trees over this node's replica, one per partition.
//!
//! Each key falls into one of [`LEAVES`] leaves of its partition's tree (by
//! a hash independent of the one that picks the partition). A leaf's hash
//! is the XOR of its entries' hashes, so a write updates it in O(1) — XOR
//! out the old entry, XOR in the new — and no tree is ever rebuilt. The two
//! levels above are computed on demand: [`GROUPS`] group hashes, each over
//! its 16 leaves, and the root over the groups. Two replicas holding the
//! same keys and versions have identical trees, so comparing roots first,
//! then groups, then leaves finds what differs while exchanging only a
//! few hashes when little does.

use std::collections::HashMap;

use xxhash_rust::xxh3::{xxh3_128, xxh3_64_with_seed};

pub const LEAVES: usize = 256;
pub const GROUPS: usize = 16;
const LEAVES_PER_GROUP: usize = LEAVES / GROUPS;
/// Keeps leaf choice independent of the partition choice (which uses the
/// unseeded hash's top bits).
const LEAF_SEED: u64 = 0x6479_6e61_6265_6421;

pub type Hash = u128;

/// The leaf a key belongs to.
pub fn leaf_of(key: &[u8]) -> usize {
    (xxh3_64_with_seed(key, LEAF_SEED) >> 56) as usize
}

/// The hash of one stored entry: its key and its encoded object, which is
/// canonical, so equal versions hash equally on every replica.
pub fn entry_hash(key: &[u8], encoded: &[u8]) -> Hash {
    let mut bytes = Vec::with_capacity(4 + key.len() + encoded.len());
    bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(encoded);
    xxh3_128(&bytes)
}

#[derive(Default)]
pub struct Trees {
    partitions: HashMap<u32, Box<[Hash; LEAVES]>>,
}

impl Trees {
    /// Records that `key` went from `old` to `new` (encoded objects; `None`
    /// for absent).
    pub fn apply(&mut self, partition: u32, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let delta = old.map_or(0, |o| entry_hash(key, o)) ^ new.map_or(0, |n| entry_hash(key, n));
        if delta != 0 {
            self.partitions.entry(partition).or_insert_with(|| Box::new([0; LEAVES]))[leaf_of(key)] ^= delta;
        }
    }

    pub fn leaves(&self, partition: u32) -> [Hash; LEAVES] {
        self.partitions.get(&partition).map_or([0; LEAVES], |l| **l)
    }

    pub fn groups(&self, partition: u32) -> [Hash; GROUPS] {
        groups_of(&self.leaves(partition))
    }

    pub fn root(&self, partition: u32) -> Hash {
        root_of(&self.groups(partition))
    }
}

pub fn groups_of(leaves: &[Hash; LEAVES]) -> [Hash; GROUPS] {
    std::array::from_fn(|g| hash_all(&leaves[g * LEAVES_PER_GROUP..(g + 1) * LEAVES_PER_GROUP]))
}

pub fn root_of(groups: &[Hash; GROUPS]) -> Hash {
    hash_all(groups)
}

fn hash_all(hashes: &[Hash]) -> Hash {
    let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_be_bytes()).collect();
    xxh3_128(&bytes)
}

/// The leaves of the given groups, in group order.
pub fn leaves_in_groups(leaves: &[Hash; LEAVES], groups: &[usize]) -> Vec<Hash> {
    groups.iter().flat_map(|&g| leaves[g * LEAVES_PER_GROUP..(g + 1) * LEAVES_PER_GROUP].iter().copied()).collect()
}

/// Indices of the leaves under `groups` whose hashes differ.
pub fn differing_leaves(ours: &[Hash; LEAVES], groups: &[usize], theirs: &[Hash]) -> Vec<usize> {
    let leaf_indices = groups.iter().flat_map(|&g| g * LEAVES_PER_GROUP..(g + 1) * LEAVES_PER_GROUP);
    leaf_indices.zip(theirs).filter(|(leaf, hash)| ours[*leaf] != **hash).map(|(leaf, _)| leaf).collect()
}

pub fn differing_groups(ours: &[Hash; GROUPS], theirs: &[Hash]) -> Vec<usize> {
    (0..GROUPS).filter(|&g| theirs.get(g) != Some(&ours[g])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_writes_does_not_matter_and_removal_restores() {
        let mut a = Trees::default();
        let mut b = Trees::default();
        let entries: Vec<(Vec<u8>, Vec<u8>)> =
            (0..500).map(|i| (format!("k{i}").into(), format!("v{i}").into())).collect();
        for (k, v) in &entries {
            a.apply(7, k, None, Some(v));
        }
        for (k, v) in entries.iter().rev() {
            b.apply(7, k, None, Some(v));
        }
        assert_eq!(a.root(7), b.root(7));
        let empty = Trees::default().root(7);
        assert_ne!(a.root(7), empty);
        for (k, v) in &entries {
            a.apply(7, k, Some(v), None);
        }
        assert_eq!(a.root(7), empty, "removing every entry gives the empty tree");
    }

    #[test]
    fn one_changed_key_shows_in_exactly_one_group_and_leaf() {
        let mut a = Trees::default();
        let mut b = Trees::default();
        for i in 0..1000 {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            a.apply(1, k.as_bytes(), None, Some(v.as_bytes()));
            b.apply(1, k.as_bytes(), None, Some(v.as_bytes()));
        }
        b.apply(1, b"k42", Some(b"v42"), Some(b"changed"));
        assert_ne!(a.root(1), b.root(1));
        let groups = differing_groups(&a.groups(1), &b.groups(1));
        assert_eq!(groups.len(), 1);
        let theirs = leaves_in_groups(&b.leaves(1), &groups);
        assert_eq!(differing_leaves(&a.leaves(1), &groups, &theirs), vec![leaf_of(b"k42")]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = Trees::default();
        t.apply(1, b"k", None, Some(b"v"));
        assert_eq!(t.root(2), Trees::default().root(2));
    }
}
