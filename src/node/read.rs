//! Quorum reads, coordinated by whichever node receives them (Dynamo §4.5).
//!
//! The read goes to the key's sloppy targets (see [`coordinator`](super::coordinator));
//! one that fails is replaced by the next spare fallback. R counts answers
//! from preference-list members — "not found" included — and from stand-ins
//! that hold data for the key as a hint: a stand-in with nothing knows
//! nothing, and two of them must not answer "not found" for a key that
//! exists. The answer is the merge of every reply; read repair then writes
//! it back to the members found stale (never to stand-ins, which only keep
//! hints).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::coordinator::{CoordError, Coordinated, Placement, SloppyTargets};
use super::metrics::Counters;
use super::protocol::Request;
use super::replica;
use super::rpc::{Stored, Written};
use super::version::Object;
use super::Node;

/// One node asked for its copy, on behalf of a preference-list member.
#[derive(Clone)]
struct Asked {
    node: String,
    member: String,
}

impl Asked {
    fn is_member(&self) -> bool {
        self.node == self.member
    }

    /// Whether this reply counts toward R.
    fn counts(&self, held: &Option<Object>) -> bool {
        self.is_member() || held.as_ref().is_some_and(|o| !o.is_empty())
    }
}

/// A reply: what the node holds (`None`: nothing), or `Err` if it could not be read.
type Reply = (Asked, Result<Option<Object>, ()>);

impl Node {
    pub(super) async fn coordinate_read(
        self: &Arc<Self>,
        key: Bytes,
        placement: &Placement,
        targets: SloppyTargets,
        needed: usize,
    ) -> Result<Coordinated, CoordError> {
        let capacity = placement.preference.len() + placement.fallbacks.len();
        let (reply, mut replies_in) = mpsc::channel::<Reply>(capacity.max(1));
        let mut outstanding = 0;
        for (member, node) in targets.assignments {
            if let Some(node) = node {
                self.spawn_read(Asked { node, member }, &key, placement, &reply);
                outstanding += 1;
            }
        }
        let mut spares = targets.spares;
        let mut replies: Vec<(Asked, Option<Object>)> = Vec::new();
        let mut counted = 0;
        while counted < needed && outstanding > 0 {
            let Some((asked, held)) = replies_in.recv().await else { break };
            outstanding -= 1;
            match held {
                Ok(held) => {
                    counted += usize::from(asked.counts(&held));
                    replies.push((asked, held));
                }
                Err(()) => {
                    if let Some(node) = spares.pop_front() {
                        self.spawn_read(Asked { node, member: asked.member }, &key, placement, &reply);
                        outstanding += 1;
                    }
                }
            }
        }
        drop(reply);
        if counted < needed {
            Counters::bump(&self.counters.quorum_failures);
            return Err(CoordError::Unavailable { acks: counted, needed });
        }
        let merged = self.merge_all(replies.iter().map(|(_, held)| held));
        if self.switches.read_repair.load(Ordering::Relaxed) {
            let node = self.clone();
            let partition = placement.partition;
            tokio::spawn(async move { node.read_repair(partition, key, replies, replies_in, outstanding).await });
        }
        Ok(Coordinated { coordinator: self.id().to_owned(), object: merged, dot: None })
    }

    fn spawn_read(self: &Arc<Self>, asked: Asked, key: &Bytes, placement: &Placement, reply: &mpsc::Sender<Reply>) {
        let (node, key, reply) = (self.clone(), key.clone(), reply.clone());
        let owners = placement.preference.clone();
        tokio::spawn(async move {
            let held = node.read_copy(&asked.node, &key, &owners).await;
            let _ = reply.send((asked, held)).await;
        });
    }

    /// What `holder` knows of the key: its copy merged with its hints.
    async fn read_copy(&self, holder: &str, key: &Bytes, owners: &[String]) -> Result<Option<Object>, ()> {
        if holder == self.id() {
            let partition = self.membership.ring().partition_of(key);
            return self.replica.read_with_hints(partition, key, owners.iter().map(String::as_str)).map_err(|e| {
                tracing::error!("reading the local replica: {e}");
            });
        }
        match self.call_fast(holder, &Request::Read { key: key.clone() }).await {
            Ok(Stored(None)) => Ok(None),
            Ok(Stored(Some(bytes))) => replica::decode(&bytes, key).map(Some).map_err(|e| {
                tracing::warn!(peer = holder, "replica sent an invalid object: {e}");
            }),
            Err(e) => {
                tracing::debug!(peer = holder, "reading a replica: {e}");
                Err(())
            }
        }
    }

    fn merge_all<'a>(&self, held: impl Iterator<Item = &'a Option<Object>>) -> Object {
        let mut merged = Object::default();
        for object in held.flatten() {
            self.replica.merge_counted(&mut merged, object);
        }
        merged
    }

    /// Waits briefly for late replies, then writes the merge of everything
    /// heard back to every preference-list member that lacked part of it.
    async fn read_repair(
        self: Arc<Self>,
        partition: u32,
        key: Bytes,
        mut replies: Vec<(Asked, Option<Object>)>,
        mut replies_in: mpsc::Receiver<Reply>,
        mut outstanding: usize,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.read_repair_wait_ms);
        while outstanding > 0 {
            match tokio::time::timeout_at(deadline, replies_in.recv()).await {
                Ok(Some((asked, held))) => {
                    outstanding -= 1;
                    if let Ok(held) = held {
                        replies.push((asked, held));
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let merged = self.merge_all(replies.iter().map(|(_, held)| held));
        let stale: Vec<String> = replies
            .into_iter()
            .filter(|(asked, held)| asked.is_member() && held.as_ref() != Some(&merged))
            .map(|(asked, _)| asked.node)
            .collect();
        if merged.is_empty() || stale.is_empty() {
            return;
        }
        let encoded = Bytes::from(merged.encode());
        for member in stale {
            Counters::bump(&self.counters.read_repairs);
            if member == self.id() {
                if let Err(e) = self.replica.merge(partition, &key, &merged) {
                    tracing::warn!("read repair of the local replica: {e}");
                }
            } else {
                let request = Request::Write { key: key.clone(), object: encoded.clone(), hint_for: None };
                // A replica that misses it now gets it from anti-entropy later.
                let _ = self.call_fast::<Written>(&member, &request).await;
            }
        }
    }
}
