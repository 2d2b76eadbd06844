//! Quorum reads and writes, as in Dynamo §4.5–4.6.
//!
//! A request for a key is coordinated by a node of the key's preference
//! list; any other node forwards it to the first reachable one. The
//! coordinator writes locally, sends the new version to the other N−1
//! replicas and answers once W have it; a replica that is down or does not
//! answer in time is replaced by the next healthy node of the extended list,
//! which keeps the version as a hint (sloppy quorum), or, when there is no
//! such node, the coordinator keeps the hint itself. Reads ask the replicas,
//! answer once R replied with the merge of what they hold, then write that
//! merge back to any replica found stale (read repair).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::metrics::Counters;
use super::protocol::{ClientOp, OpKind, Outcome, RemoteError, Request};
use super::replica::{self, ReplicaError};
use super::rpc::{Forwarded, RpcError, Stored, Written};
use super::version::{Object, VersionVector};
use super::Node;
use crate::api::dot::Dot;

/// The result of a coordinated operation.
#[derive(Debug)]
pub struct Coordinated {
    pub coordinator: String,
    /// What a read merged from R replicas, or what a write left on the
    /// coordinator; its clock is the context to hand back.
    pub object: Object,
    pub dot: Option<Dot>,
}

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("{0}")]
    BadRequest(String),
    #[error("quorum not reached: {acks} of the {needed} replicas required answered")]
    Unavailable { acks: usize, needed: usize },
    #[error("no node of this key's preference list is reachable")]
    NoReachableReplica,
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("{message}")]
    Remote { status: u16, message: String },
}

impl CoordError {
    pub fn status(&self) -> u16 {
        match self {
            CoordError::BadRequest(_) => 400,
            CoordError::Unavailable { .. } | CoordError::NoReachableReplica => 503,
            CoordError::Replica(ReplicaError::TooManySiblings { .. }) => 409,
            CoordError::Replica(_) => 500,
            CoordError::Remote { status, .. } => *status,
        }
    }
}

impl Coordinated {
    pub fn into_outcome(self) -> Outcome {
        Outcome { coordinator: self.coordinator, object: Bytes::from(self.object.encode()), dot: self.dot }
    }

    pub fn from_outcome(outcome: Outcome) -> Result<Self, CoordError> {
        let object = replica::decode(&outcome.object, b"")?;
        Ok(Coordinated { coordinator: outcome.coordinator, object, dot: outcome.dot })
    }
}

impl From<CoordError> for RemoteError {
    fn from(e: CoordError) -> Self {
        RemoteError { status: e.status(), message: e.to_string() }
    }
}

/// Where a key lives, as this node's ring sees it.
struct Placement {
    partition: u32,
    preference: Vec<String>,
    fallbacks: Vec<String>,
}

impl Node {
    /// Runs a client operation; `forwarded` operations are coordinated here
    /// even if this node's ring disagrees, so that forwarding never loops.
    pub async fn execute(self: &Arc<Self>, op: ClientOp, forwarded: bool) -> Result<Coordinated, CoordError> {
        let needed = self.quorum(op.quorum)?;
        let placement = self.placement(&op.key);
        if !forwarded && !placement.preference.iter().any(|n| n == self.id()) {
            return self.forward(op, &placement).await;
        }
        match op.kind {
            OpKind::Get => {
                Counters::bump(&self.counters.gets);
                self.coordinate_read(op.key, &placement, needed).await
            }
            OpKind::Put { value, context } => {
                Counters::bump(&self.counters.puts);
                self.coordinate_write(op.key, &placement, Some(value), Some(context), needed).await
            }
            OpKind::Delete { context } => {
                Counters::bump(&self.counters.deletes);
                self.coordinate_write(op.key, &placement, None, context, needed).await
            }
        }
    }

    fn quorum(&self, asked: Option<usize>) -> Result<usize, CoordError> {
        let n = self.membership.n();
        match asked {
            None => Ok(n / 2 + 1),
            Some(q) if (1..=n).contains(&q) => Ok(q),
            Some(q) => {
                Err(CoordError::BadRequest(format!("quorum {q} is out of range: R and W must be between 1 and N={n}")))
            }
        }
    }

    fn placement(&self, key: &[u8]) -> Placement {
        let ring = self.membership.ring();
        let partition = ring.partition_of(key);
        let n = self.membership.n();
        let extended = ring.extended_list(partition);
        let split = n.min(extended.len());
        Placement {
            partition,
            preference: extended[..split].iter().map(|s| s.to_string()).collect(),
            fallbacks: extended[split..].iter().map(|s| s.to_string()).collect(),
        }
    }

    async fn forward(self: &Arc<Self>, op: ClientOp, placement: &Placement) -> Result<Coordinated, CoordError> {
        Counters::bump(&self.counters.forwarded);
        let request = Request::Coordinate(op);
        for owner in placement.preference.iter().filter(|n| self.membership.is_alive(n)) {
            match self.call(owner, &request, self.config.forward_timeout()).await {
                Ok(Forwarded(Ok(outcome))) => return Coordinated::from_outcome(outcome),
                Ok(Forwarded(Err(e))) => {
                    return Err(CoordError::Remote { status: e.status, message: format!("{owner}: {}", e.message) })
                }
                Err(_) => continue,
            }
        }
        Err(CoordError::NoReachableReplica)
    }

    async fn coordinate_write(
        self: &Arc<Self>,
        key: Bytes,
        placement: &Placement,
        value: Option<Bytes>,
        context: Option<VersionVector>,
        needed: usize,
    ) -> Result<Coordinated, CoordError> {
        let context = match context {
            Some(context) => context,
            None => self.replica.local_context(placement.partition, &key)?,
        };
        let (object, encoded, dot) = self.replica.update(placement.partition, &key, &context, value)?;
        let object = Arc::new(object);
        let fallbacks = Arc::new(Mutex::new(placement.fallbacks.iter().cloned().collect::<VecDeque<_>>()));
        let (acked, mut acks_in) = mpsc::channel(placement.preference.len().max(1));
        for owner in placement.preference.iter().filter(|n| *n != self.id()) {
            let task = Replication {
                node: self.clone(),
                owner: owner.clone(),
                key: key.clone(),
                encoded: encoded.clone(),
                object: object.clone(),
                fallbacks: fallbacks.clone(),
            };
            let acked = acked.clone();
            tokio::spawn(async move {
                let _ = acked.send(task.run().await).await;
            });
        }
        drop(acked);
        let mut acks = 1;
        while acks < needed {
            match acks_in.recv().await {
                Some(true) => acks += 1,
                Some(false) => {}
                None => break,
            }
        }
        if acks < needed {
            Counters::bump(&self.counters.quorum_failures);
            return Err(CoordError::Unavailable { acks, needed });
        }
        let object = Arc::try_unwrap(object).unwrap_or_else(|shared| (*shared).clone());
        Ok(Coordinated { coordinator: self.id().to_owned(), object, dot: Some(dot) })
    }

    async fn coordinate_read(
        self: &Arc<Self>,
        key: Bytes,
        placement: &Placement,
        needed: usize,
    ) -> Result<Coordinated, CoordError> {
        let mut replies = vec![(self.id().to_owned(), self.replica.read(placement.partition, &key)?)];
        let (reply, mut replies_in) = mpsc::channel(placement.preference.len().max(1));
        let mut outstanding = 0;
        for owner in placement.preference.iter().filter(|n| *n != self.id() && self.membership.is_alive(n)) {
            outstanding += 1;
            let (node, owner, key, reply) = (self.clone(), owner.clone(), key.clone(), reply.clone());
            tokio::spawn(async move {
                let object = node.read_replica(&owner, &key).await;
                let _ = reply.send((owner, object)).await;
            });
        }
        drop(reply);
        while replies.len() < needed && outstanding > 0 {
            let Some((owner, object)) = replies_in.recv().await else { break };
            outstanding -= 1;
            if let Some(object) = object {
                replies.push((owner, object));
            }
        }
        if replies.len() < needed {
            Counters::bump(&self.counters.quorum_failures);
            return Err(CoordError::Unavailable { acks: replies.len(), needed });
        }
        let merged = self.merge_all(&replies);
        if !self.switches.read_repair.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Coordinated { coordinator: self.id().to_owned(), object: merged, dot: None });
        }
        let node = self.clone();
        let partition = placement.partition;
        tokio::spawn(async move { node.read_repair(partition, key, replies, replies_in, outstanding).await });
        Ok(Coordinated { coordinator: self.id().to_owned(), object: merged, dot: None })
    }

    /// What one replica holds, or `None` if it could not be read.
    async fn read_replica(&self, owner: &str, key: &Bytes) -> Option<Option<Object>> {
        match self.call(owner, &Request::Read { key: key.clone() }, self.config.replica_timeout()).await {
            Ok(Stored(None)) => Some(None),
            Ok(Stored(Some(bytes))) => match replica::decode(&bytes, key) {
                Ok(object) => Some(Some(object)),
                Err(e) => {
                    tracing::warn!(peer = owner, "replica sent an invalid object: {e}");
                    None
                }
            },
            Err(RpcError::Unreachable) => None,
            Err(e) => {
                tracing::warn!(peer = owner, "reading a replica: {e}");
                None
            }
        }
    }

    fn merge_all(&self, replies: &[(String, Option<Object>)]) -> Object {
        let mut merged = Object::default();
        for object in replies.iter().filter_map(|(_, o)| o.as_ref()) {
            merged.merge(object, self.config.prune_limit);
        }
        merged
    }

    /// Waits briefly for late replies, then writes the merge of everything
    /// heard back to every replica that lacked part of it.
    async fn read_repair(
        self: Arc<Self>,
        partition: u32,
        key: Bytes,
        mut replies: Vec<(String, Option<Object>)>,
        mut replies_in: mpsc::Receiver<(String, Option<Option<Object>>)>,
        mut outstanding: usize,
    ) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(self.config.read_repair_wait_ms);
        while outstanding > 0 {
            match tokio::time::timeout_at(deadline, replies_in.recv()).await {
                Ok(Some((owner, object))) => {
                    outstanding -= 1;
                    if let Some(object) = object {
                        replies.push((owner, object));
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let merged = self.merge_all(&replies);
        let stale: Vec<String> =
            replies.into_iter().filter(|(_, held)| held.as_ref() != Some(&merged)).map(|(owner, _)| owner).collect();
        if merged.is_empty() || stale.is_empty() {
            return;
        }
        let encoded = Bytes::from(merged.encode());
        for owner in stale {
            Counters::bump(&self.counters.read_repairs);
            if owner == self.id() {
                if let Err(e) = self.replica.merge(partition, &key, &merged) {
                    tracing::warn!("read repair of the local replica: {e}");
                }
            } else {
                let request = Request::Write { key: key.clone(), object: encoded.clone(), hint_for: None };
                // A replica that misses it now gets it from anti-entropy later.
                let _ = self.call::<Written>(&owner, &request, self.config.replica_timeout()).await;
            }
        }
    }
}

/// Getting one write to one preference-list node, or to a stand-in.
struct Replication {
    node: Arc<Node>,
    owner: String,
    key: Bytes,
    encoded: Bytes,
    object: Arc<Object>,
    fallbacks: Arc<Mutex<VecDeque<String>>>,
}

impl Replication {
    /// True when a node other than the coordinator now holds the write.
    async fn run(self) -> bool {
        let node = &self.node;
        if node.membership.is_alive(&self.owner) && self.send_to(&self.owner, None).await {
            return true;
        }
        while let Some(stand_in) = self.next_fallback() {
            if self.send_to(&stand_in, Some(self.owner.clone())).await {
                return true;
            }
        }
        if let Err(e) = node.replica.add_hint(&self.owner, &self.key, &self.object) {
            tracing::error!(owner = %self.owner, "cannot keep a hint: {e}");
        }
        false
    }

    fn next_fallback(&self) -> Option<String> {
        let mut fallbacks = self.fallbacks.lock().expect("fallbacks lock");
        while let Some(candidate) = fallbacks.pop_front() {
            if self.node.membership.is_alive(&candidate) {
                return Some(candidate);
            }
        }
        None
    }

    async fn send_to(&self, target: &str, hint_for: Option<String>) -> bool {
        let request = Request::Write { key: self.key.clone(), object: self.encoded.clone(), hint_for };
        self.node.call::<Written>(target, &request, self.node.config.replica_timeout()).await.is_ok()
    }
}
