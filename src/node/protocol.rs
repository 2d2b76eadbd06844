//! The messages nodes exchange, carried in [`frame`](super::frame)s.
//!
//! Objects travel as their encoded bytes and are decoded (and so validated)
//! by the receiver's [`Object::decode`], never trusted as sent.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::membership::Digest;
use super::merkle::Hash;
use super::version::VersionVector;
use crate::api::dot::Dot;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Ping,
    Gossip(Digest),
    /// Read the local replica as it is, without repairing anything.
    Read {
        key: Bytes,
    },
    /// Merge `object` into the local replica, or keep it as a hint for the
    /// node `hint_for` when this node is a sloppy-quorum stand-in.
    Write {
        key: Bytes,
        object: Bytes,
        hint_for: Option<String>,
    },
    /// Coordinate a client operation for a node outside the preference list.
    Coordinate(ClientOp),
    /// Anti-entropy, step 1: the requester's Merkle root of a partition,
    /// answered `InSync` or with the responder's group hashes.
    TreeRoot {
        partition: u32,
        root: Hash,
    },
    /// Step 2: the responder's leaf hashes under the groups that differ.
    TreeLeaves {
        partition: u32,
        groups: Vec<u8>,
    },
    /// Step 3: the requester's key digests under the leaves that differ,
    /// answered with the responder's objects that the requester lacks or
    /// holds differently, and the keys the responder wants in return.
    SyncKeys {
        partition: u32,
        leaves: Vec<u8>,
        digests: Vec<(Bytes, Hash)>,
    },
    /// Step 4: the objects the responder wanted, to merge — or, during a
    /// staged round, to keep until the round is committed.
    SyncPush {
        partition: u32,
        objects: Vec<(Bytes, Bytes)>,
        staged: bool,
    },
    /// Remove a tombstone that every replica holds, if it is unchanged.
    Reap {
        key: Bytes,
        hash: Hash,
    },
}

impl Request {
    /// The request's name in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Gossip(_) => "gossip",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Coordinate(_) => "coordinate",
            Request::TreeRoot { .. } => "tree_root",
            Request::TreeLeaves { .. } => "tree_leaves",
            Request::SyncKeys { .. } => "sync_keys",
            Request::SyncPush { .. } => "sync_push",
            Request::Reap { .. } => "reap",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Pong,
    Gossip(Digest),
    Object(Option<Bytes>),
    Written,
    Coordinated(Result<Outcome, RemoteError>),
    InSync,
    Groups(Vec<Hash>),
    Leaves(Vec<Hash>),
    SyncKeys { objects: Vec<(Bytes, Bytes)>, wanted: Vec<Bytes> },
    Reaped(bool),
    Error(String),
}

/// A client request as the HTTP layer parsed it, forwardable as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientOp {
    pub key: Bytes,
    pub kind: OpKind,
    /// R for reads, W for writes; `None` means a majority of N.
    pub quorum: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OpKind {
    Get,
    Put {
        value: Bytes,
        context: VersionVector,
    },
    /// `None`: delete whatever the coordinator's replica has seen.
    Delete {
        context: Option<VersionVector>,
    },
}

/// What a coordinated operation produced: the merged object a read saw, or
/// the object a write left on the coordinator, whose clock is the context to
/// hand back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub coordinator: String,
    pub object: Bytes,
    pub dot: Option<Dot>,
}

/// A coordination failure as it crosses the wire: an HTTP status and a reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteError {
    pub status: u16,
    pub message: String,
}
