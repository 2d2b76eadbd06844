//! What a node tells about itself: its status, its metrics, its Merkle
//! roots and what the replicas of a key hold. Built here from the node's
//! parts, so the HTTP layer only serves them.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;

use super::metrics::Readings;
use super::protocol::Request;
use super::rpc::Stored;
use super::version::Object;
use super::Node;
use crate::api::admin::{Held, MerkleLeaves, MerkleRoots, ReplicaCopy, Replicas, StoredVersion};
use crate::api::status::{Counters, RingView, Status};

impl Node {
    /// The body of `GET /status`.
    pub fn status(&self) -> Status {
        let counters: Counters = self.counters.snapshot().into_iter().map(|(name, _, value)| (name, value)).collect();
        Status {
            id: self.id().to_owned(),
            pid: std::process::id(),
            actor: self.replica.actor().to_owned(),
            members: self.membership.view(),
            hints_pending: self.hints_pending(),
            hints_delivered: counters.get("hints_delivered"),
            counters,
            // Not built for this: a status poll while a big cluster forms
            // would rebuild the ring each time.
            ring: RingView {
                partitions: self.membership.partitions(),
                n: self.membership.n(),
                members: self.membership.ring_members(),
            },
            storage: self.replica.storage().kind().to_string(),
            storage_lost_records: self.replica.identity().lost_records().cloned(),
            storage_failure: self.replica.storage().health().failure().map(str::to_owned),
            switches: self.switch_state(),
            clock: Some(self.clock.reading()),
        }
    }

    /// Every metric in OpenMetrics text (`GET /metrics`).
    pub fn prometheus(&self) -> String {
        let storage = self.replica.storage().health();
        self.metrics.encode(Readings {
            hints_pending: self.hints_pending(),
            members: self.membership.member_count() as u64,
            members_alive: self.membership.view().iter().filter(|m| m.alive).count() as u64,
            storage_ok: storage.failure().is_none(),
            storage_lost_records: self.replica.identity().lost_records().is_some(),
            client_connections: self.client_gate.open() as u64,
            clock_entries_max: self.replica.largest_clock(),
            engine: self.replica.storage().engine_memory(),
        })
    }

    /// A client request of kind `op` answered `status` after `seconds`.
    pub fn record_request(&self, op: &'static str, status: u16, seconds: f64) {
        self.metrics.request(op, status, seconds);
    }

    /// The Merkle root of every partition this node replicates, in hex.
    pub fn merkle_roots(&self) -> MerkleRoots {
        let partitions = self.membership.ring().replicated_partitions(self.id(), self.membership.n());
        let roots = self
            .replica
            .with_trees(|trees| partitions.iter().map(|&p| (p, format!("{:032x}", trees.root(p)))).collect());
        MerkleRoots { node: self.id().to_owned(), partitions: roots }
    }

    /// The non-empty Merkle leaves of those of `partitions` this node
    /// replicates, in hex; copied under the trees' lock, nothing read.
    pub fn merkle_leaves(&self, partitions: &[u32]) -> MerkleLeaves {
        let ours = self.membership.ring().replicated_partitions(self.id(), self.membership.n());
        let wanted: Vec<u32> = partitions.iter().copied().filter(|p| ours.contains(p)).collect();
        let leaves = self.replica.with_trees(|trees| wanted.iter().map(|&p| (p, trees.leaves(p))).collect::<Vec<_>>());
        let partitions = leaves
            .into_iter()
            .map(|(p, leaves)| {
                let held = leaves.iter().enumerate().filter(|(_, h)| **h != 0);
                (p, held.map(|(i, h)| (i as u16, format!("{h:032x}"))).collect())
            })
            .collect();
        MerkleLeaves { node: self.id().to_owned(), partitions }
    }

    /// What every preference-list replica of `key` holds, read directly.
    pub async fn replicas(self: &Arc<Self>, key: Bytes) -> Replicas {
        let ring = self.membership.ring();
        let partition = ring.partition_of(&key);
        let owners: Vec<String> =
            ring.preference_list(partition, self.membership.n()).into_iter().map(str::to_owned).collect();
        let mut replicas = Vec::new();
        for owner in owners {
            let held = match self.held_by(&owner, partition, &key).await {
                Ok(object) => Held::Versions { versions: versions(object.as_ref()) },
                Err(error) => Held::Unreadable { error },
            };
            replicas.push(ReplicaCopy { node: owner, held });
        }
        Replicas { key: String::from_utf8_lossy(&key).into_owned(), partition, replicas }
    }

    /// One replica's object for `key`, this node's read locally.
    async fn held_by(&self, owner: &str, partition: u32, key: &Bytes) -> Result<Option<Object>, String> {
        if owner == self.id() {
            return self.replica.read(partition, key).map_err(|e| e.to_string());
        }
        let read = Request::Read { key: key.clone() };
        let Stored(bytes) = self.call(owner, &read, self.config.sync_timeout()).await.map_err(|e| e.to_string())?;
        bytes.map(|b| super::replica::decode(&b, key)).transpose().map_err(|e| e.to_string())
    }

    fn hints_pending(&self) -> u64 {
        self.replica.hints_pending().unwrap_or(0) as u64
    }
}

fn versions(object: Option<&Object>) -> Vec<StoredVersion> {
    let Some(object) = object else { return Vec::new() };
    let clock = object.clock.readable();
    object
        .siblings
        .iter()
        .map(|s| StoredVersion {
            value: s.value.as_ref().map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
            dot: s.dot.to_string(),
            clock: clock.clone(),
            tombstone: s.value.is_none(),
        })
        .collect()
}
