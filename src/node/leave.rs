//! Graceful leave: a node takes itself out of the ring for good while the
//! cluster serves, hands every version it holds to the nodes that now own
//! it, passes on the hints it keeps, and then stops.
//!
//! Unlike a failure, a leave changes the ring, so data must move: each key
//! goes to the replicas of its preference list in the ring without this
//! node, merged there like any replica write.

use std::sync::Arc;

use bytes::Bytes;

use super::membership::Digest;
use super::protocol::Request;
use super::rpc::Written;
use super::Node;
use crate::api::admin::LeaveStats;

impl Node {
    pub async fn leave(self: &Arc<Self>) -> anyhow::Result<LeaveStats> {
        let mut stats = LeaveStats::default();
        self.membership.leave()?;
        // Tell everyone now rather than in a few gossip rounds, so that no
        // coordinator keeps sending this node writes it would then strand.
        let digest = Request::Gossip(self.membership.beat());
        let others: Vec<String> =
            self.membership.view().into_iter().filter(|m| m.id != self.id() && !m.left).map(|m| m.id).collect();
        for member in &others {
            if self.call::<Digest>(member, &digest, self.config.sync_timeout()).await.is_ok() {
                stats.told += 1;
            }
        }
        let ring = self.membership.ring();
        let n = self.membership.n();
        for partition in 0..ring.partitions() {
            let owners: Vec<String> = ring.preference_list(partition, n).into_iter().map(str::to_owned).collect();
            for (key, encoded) in self.replica.scan_partition(partition)? {
                stats.keys += 1;
                let request = Request::Write { key: key.clone(), object: Bytes::from(encoded), hint_for: None };
                for owner in &owners {
                    match self.call::<Written>(owner, &request, self.config.sync_timeout()).await {
                        Ok(Written) => stats.writes += 1,
                        Err(_) => stats.failed_writes += 1,
                    }
                }
            }
        }
        self.deliver_hints().await;
        stats.hints_passed_on = self.pass_on_hints(&others).await?;
        Ok(stats)
    }

    /// Hints whose owner is still unreachable go to a live member, which
    /// keeps delivering them.
    async fn pass_on_hints(&self, members: &[String]) -> anyhow::Result<usize> {
        let mut passed = 0;
        for hint in self.replica.hints()? {
            let Some(keeper) = members.iter().find(|m| **m != hint.owner && self.membership.is_reachable(m)) else {
                continue;
            };
            let request = Request::Write {
                key: hint.key.clone(),
                object: hint.encoded.clone().into(),
                hint_for: Some(hint.owner.clone()),
            };
            if self.call::<Written>(keeper, &request, self.config.sync_timeout()).await.is_ok() {
                self.replica.remove_hint(&hint)?;
                passed += 1;
            }
        }
        Ok(passed)
    }
}
