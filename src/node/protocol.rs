//! The messages nodes exchange, carried in [`frame`](super::frame)s.
//!
//! Objects travel as their encoded bytes and are decoded (and so validated)
//! by the receiver's [`Object::decode`], never trusted as sent.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::membership::MemberRecord;
use super::version::{Dot, VersionVector};

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
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Pong,
    Gossip(Digest),
    Object(Option<Bytes>),
    Written,
    Coordinated(Result<Outcome, RemoteError>),
    Error(String),
}

/// A membership view: who the sender knows, with their heartbeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Digest {
    pub partitions: u32,
    pub n: usize,
    pub members: Vec<MemberRecord>,
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
