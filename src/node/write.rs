//! Quorum writes (Dynamo §4.4–4.6): forwarding to a preference-list member,
//! or coordinating here.
//!
//! The coordinator stamps the write with its own dot, keeps its copy, sends
//! the new version to the key's other sloppy targets and answers once W
//! nodes hold it. A node that fails is replaced by the next spare fallback,
//! which keeps the version as a hint; when none is left the coordinator
//! keeps the hint itself.
//!
//! A node outside the preference list first forwards the write. When no
//! member answers, it coordinates the write itself (Dynamo's sloppy
//! coordinator): its copy is a hint for the first member that is not
//! reachable, since it does not own the partition, and the clock gains this
//! node's entry — which is how clocks grow beyond N entries under
//! partitions. A forward that timed out may still have been applied by the
//! member, as a client's retry may: the write then exists twice, as
//! siblings with the same value, and nothing acknowledged is lost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::coordinator::{CoordError, Coordinated, Placement};
use super::metrics::Counters;
use super::protocol::{ClientOp, OpKind, Request};
use super::replica::ReplicaError;
use super::rpc::{Forwarded, Written};
use super::version::{Object, VersionVector};
use super::Node;

impl Node {
    /// Forwards a write to the reachable members, fastest first, each given
    /// its latency-derived timeout plus the cap for coordinating it; `None`
    /// when none of them answered.
    pub(super) async fn forward_write(
        &self,
        op: &ClientOp,
        placement: &Placement,
    ) -> Option<Result<Coordinated, CoordError>> {
        Counters::bump(&self.counters.forwarded);
        let mut members: Vec<String> =
            placement.preference.iter().filter(|m| self.membership.is_reachable(m)).cloned().collect();
        self.latency.fastest_first(&mut members);
        let request = Request::Coordinate(op.clone());
        for member in members {
            let timeout = self.latency.timeout(&member) + self.latency.cap();
            match self.call(&member, &request, timeout).await {
                Ok(Forwarded(Ok(outcome))) => return Some(Coordinated::from_outcome(outcome)),
                Ok(Forwarded(Err(e))) => {
                    let message = format!("{member}: {}", e.message);
                    return Some(Err(CoordError::Remote { status: e.status, message }));
                }
                Err(e) => tracing::debug!(%member, "forwarding a write: {e}"),
            }
        }
        None
    }

    /// Coordinates a put or delete here; `sloppy` when this node is outside
    /// the key's preference list.
    pub(super) async fn coordinate_write(
        self: &Arc<Self>,
        op: ClientOp,
        placement: &Placement,
        needed: usize,
        sloppy: bool,
    ) -> Result<Coordinated, CoordError> {
        let (value, context) = match op.kind {
            OpKind::Put { value, context } => {
                Counters::bump(&self.counters.puts);
                (Some(value), Some(context))
            }
            OpKind::Delete { context } => {
                Counters::bump(&self.counters.deletes);
                (None, context)
            }
            OpKind::Get => return Err(CoordError::BadRequest("a read is not a write".into())),
        };
        let key = op.key;
        let context = match context {
            Some(context) => context,
            None => self.known_clock(placement, &key)?,
        };
        let partition = placement.partition;
        let (object, encoded, dot, others) = if sloppy {
            let owner = self.first_unreachable_member(placement);
            let (object, encoded, dot) =
                self.replica.update_as_hint(&owner, partition, &key, &placement.preference, &context, value)?;
            (object, encoded, dot, placement.without(&owner).without(self.id()))
        } else {
            let (object, encoded, dot) = self.replica.update(partition, &key, &context, value)?;
            (object, encoded, dot, placement.without(self.id()))
        };
        // Our own copy counts once it is durable; its sync and the replicas' round trips overlap.
        let (durable, replicated) = tokio::join!(
            self.replica.storage().durable(),
            self.replicate(&key, encoded, &object, &others, needed.saturating_sub(1))
        );
        durable.map_err(ReplicaError::from)?;
        let acks = 1 + replicated;
        if acks < needed {
            Counters::bump(&self.counters.quorum_failures);
            return Err(CoordError::Unavailable { acks, needed });
        }
        Ok(Coordinated { coordinator: self.id().to_owned(), object, dot: Some(dot) })
    }

    /// Everything this node has seen of the key: the context of a delete
    /// that named none.
    fn known_clock(&self, placement: &Placement, key: &[u8]) -> Result<VersionVector, CoordError> {
        let owners = placement.preference.iter().map(String::as_str);
        Ok(self.replica.read_with_hints(placement.partition, key, owners)?.map(|o| o.clock).unwrap_or_default())
    }

    /// The member a sloppy coordinator keeps its copy for: the first that
    /// is not reachable (it was just tried in vain), else the first.
    fn first_unreachable_member(&self, placement: &Placement) -> String {
        let preference = &placement.preference;
        let unreachable = preference.iter().find(|m| !self.membership.is_reachable(m));
        unreachable.or(preference.first()).cloned().unwrap_or_else(|| self.id().to_owned())
    }

    /// Sends the write to every member of `others` (or its stand-in);
    /// returns how many nodes took it once `wanted` did or all finished.
    /// The others keep going in the background.
    async fn replicate(
        self: &Arc<Self>,
        key: &Bytes,
        encoded: Bytes,
        object: &Object,
        others: &Placement,
        wanted: usize,
    ) -> usize {
        let targets = self.sloppy_targets(others);
        let spares = Arc::new(Mutex::new(targets.spares));
        let object = Arc::new(object.clone());
        let (acked, mut acks_in) = mpsc::channel(targets.assignments.len().max(1));
        for (owner, first) in targets.assignments {
            let task = Replication {
                node: self.clone(),
                owner,
                first,
                key: key.clone(),
                encoded: encoded.clone(),
                object: object.clone(),
                spares: spares.clone(),
            };
            let acked = acked.clone();
            tokio::spawn(async move {
                let _ = acked.send(task.run().await).await;
            });
        }
        drop(acked);
        let mut acks = 0;
        while acks < wanted {
            match acks_in.recv().await {
                Some(true) => acks += 1,
                Some(false) => {}
                None => break,
            }
        }
        acks
    }
}

/// Getting one write to one preference-list member, or to a stand-in.
struct Replication {
    node: Arc<Node>,
    owner: String,
    /// The owner itself, the fallback standing in for it, or none.
    first: Option<String>,
    key: Bytes,
    encoded: Bytes,
    object: Arc<Object>,
    spares: Arc<Mutex<VecDeque<String>>>,
}

impl Replication {
    /// True when another node now holds the write; otherwise the
    /// coordinator keeps it as a hint for the owner.
    async fn run(self) -> bool {
        let mut candidate = self.first.clone();
        while let Some(target) = candidate {
            let hint_for = (target != self.owner).then(|| self.owner.clone());
            let request = Request::Write { key: self.key.clone(), object: self.encoded.clone(), hint_for };
            if self.node.call_fast::<Written>(&target, &request).await.is_ok() {
                return true;
            }
            candidate = self.next_spare();
        }
        if let Err(e) = self.node.replica.add_hint(&self.owner, &self.key, &self.object) {
            tracing::error!(owner = %self.owner, "cannot keep a hint: {e}");
        }
        false
    }

    fn next_spare(&self) -> Option<String> {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(candidate) = spares.pop_front() {
            if self.node.membership.is_reachable(&candidate) {
                return Some(candidate);
            }
        }
        None
    }
}
