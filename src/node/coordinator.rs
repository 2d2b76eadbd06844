//! Where a client request is coordinated, and when it is refused at once
//! (Dynamo §4.4–4.6).
//!
//! Reads are coordinated by whichever node receives them ([`read`](super::read)).
//! Writes are coordinated by a preference-list member: a node outside the
//! key's preference list forwards the write to the members it believes
//! reachable, fastest first, each given a short latency-derived timeout; when
//! none answers it coordinates the write itself, with its own dot, as
//! Dynamo's sloppy coordinator ([`write`](super::write)).
//!
//! Both go to the key's *sloppy targets*: the first N reachable nodes of the
//! extended list, each preference-list member that is down or suspect
//! replaced by the next reachable fallback. A coordinator that has fewer
//! sloppy targets than the R or W asked for answers 503 at once, naming the
//! unreachable nodes, rather than waiting out timeouts it knows are coming.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::membership::Reachability;
use super::metrics::Counters;
use super::protocol::{ClientOp, OpKind, Outcome, RemoteError};
use super::replica::{self, ReplicaError};
use super::version::Object;
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
    #[error(
        "only {reachable} of the {needed} replicas needed can be reached; unreachable: {}",
        list_unreachable(unreachable)
    )]
    TooFewReachable { needed: usize, reachable: usize, unreachable: Vec<(String, Reachability)> },
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("{message}")]
    Remote { status: u16, message: String },
}

fn list_unreachable(nodes: &[(String, Reachability)]) -> String {
    nodes.iter().map(|(node, why)| format!("{node} ({why})")).collect::<Vec<_>>().join(", ")
}

impl CoordError {
    pub fn status(&self) -> u16 {
        match self {
            CoordError::BadRequest(_) => 400,
            CoordError::Unavailable { .. } | CoordError::TooFewReachable { .. } => 503,
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
pub(super) struct Placement {
    pub partition: u32,
    pub preference: Vec<String>,
    pub fallbacks: Vec<String>,
}

impl Placement {
    pub fn is_member(&self, id: &str) -> bool {
        self.preference.iter().any(|n| n == id)
    }

    /// The same placement without `node` (a coordinator's own copy is
    /// already taken care of).
    pub fn without(&self, node: &str) -> Placement {
        Placement {
            partition: self.partition,
            preference: self.preference.iter().filter(|n| *n != node).cloned().collect(),
            fallbacks: self.fallbacks.iter().filter(|n| *n != node).cloned().collect(),
        }
    }
}

/// Who serves each preference-list member for one request.
pub(super) struct SloppyTargets {
    /// Each member with the node that serves it: itself, a reachable
    /// fallback standing in for it, or none when no fallback is left.
    pub assignments: Vec<(String, Option<String>)>,
    /// Reachable fallbacks not assigned, in ring order: next in line when
    /// an assigned node fails.
    pub spares: VecDeque<String>,
    /// Nodes of the extended list passed over, and why.
    pub unreachable: Vec<(String, Reachability)>,
}

impl SloppyTargets {
    pub fn reachable(&self) -> usize {
        self.assignments.iter().filter(|(_, node)| node.is_some()).count()
    }

    /// Refuses at once when fewer than `needed` nodes can be reached.
    fn enough_for(&self, needed: usize) -> Result<(), CoordError> {
        let reachable = self.reachable();
        if reachable >= needed {
            return Ok(());
        }
        Err(CoordError::TooFewReachable { needed, reachable, unreachable: self.unreachable.clone() })
    }
}

impl Node {
    /// Runs a client operation. A `forwarded` write is coordinated here
    /// even if this node's ring disagrees, so that forwarding never loops.
    pub async fn execute(self: &Arc<Self>, op: ClientOp, forwarded: bool) -> Result<Coordinated, CoordError> {
        let needed = self.quorum(op.quorum)?;
        let placement = self.placement(&op.key);
        let targets = self.sloppy_targets(&placement);
        if let Err(refused) = targets.enough_for(needed) {
            Counters::bump(&self.counters.fail_fast);
            return Err(refused);
        }
        if matches!(op.kind, OpKind::Get) {
            Counters::bump(&self.counters.gets);
            return self.coordinate_read(op.key, &placement, targets, needed).await;
        }
        if forwarded || placement.is_member(self.id()) {
            return self.coordinate_write(op, &placement, needed, false).await;
        }
        match self.forward_write(&op, &placement).await {
            Some(answer) => answer,
            None => {
                Counters::bump(&self.counters.sloppy_coordinated);
                self.coordinate_write(op, &placement, needed, true).await
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

    pub(super) fn placement(&self, key: &[u8]) -> Placement {
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

    /// Each member of `placement` if reachable, else the next reachable
    /// fallback in its place (Dynamo's sloppy quorum).
    pub(super) fn sloppy_targets(&self, placement: &Placement) -> SloppyTargets {
        let mut unreachable = Vec::new();
        let mut reachability = |node: &String| {
            let why = self.membership.reachability(node);
            if why != Reachability::Reachable {
                unreachable.push((node.clone(), why));
            }
            why
        };
        let members: Vec<(String, Reachability)> =
            placement.preference.iter().map(|m| (m.clone(), reachability(m))).collect();
        let mut spares: VecDeque<String> =
            placement.fallbacks.iter().filter(|f| reachability(f) == Reachability::Reachable).cloned().collect();
        let assignments = members
            .into_iter()
            .map(|(member, why)| {
                // A suspect member with nobody to stand in is still asked:
                // one late answer under load is no reason to refuse; only
                // the detector's "down" is.
                let node = match why {
                    Reachability::Reachable => Some(member.clone()),
                    Reachability::Suspect => spares.pop_front().or_else(|| Some(member.clone())),
                    Reachability::Down => spares.pop_front(),
                };
                (member, node)
            })
            .collect();
        SloppyTargets { assignments, spares, unreachable }
    }
}
