//! `history_<stamp>.jsonl`: the run as a history in Jepsen's operation
//! model, so that consistency checkers (Elle, Knossos, Porcupine, and
//! `dynabed check`) can judge it without the cluster; and the recorder's
//! per-request spool it is made from.
//!
//! Each request is an `invoke` line and, later, a completion line of the
//! same process: `ok`, `fail` (it certainly did not take effect) or `info`
//! (indeterminate, e.g. a timeout). Lines are in time order; `index` counts
//! them. Times are nanoseconds since the driver started.

use serde::{Deserialize, Serialize};

/// An event's type, as Jepsen names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// What an operation does: Jepsen's `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    Read,
    Write,
    /// The driver's read of every replica of a key after the run's repair
    /// rounds: the lost-write checker's ground truth.
    FinalRead,
}

/// An operation's value: a write's value id, or the ids a read returned
/// (one per sibling; none for an absent key). `null` on a read's invoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Written(String),
    Read(Vec<String>),
}

/// One replica's copy of a key in a final read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRead {
    pub node: String,
    /// Each version's dot, `~` after a tombstone's.
    pub versions: Vec<String>,
    /// The copy's clock (dynabed's text form).
    pub clock: String,
    /// Each live version's value id.
    pub values: Vec<String>,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Jepsen's process: the client, renumbered (+ concurrency) after an
    /// `info`, since a process with an indeterminate operation never
    /// invokes another; final reads are the process after every client's.
    pub process: u64,
    pub f: Function,
    pub key: String,
    pub value: Option<Value>,
    /// Nanoseconds since the driver started.
    pub time: i64,
    /// The workload client that issued it (absent for final reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<u32>,
    /// The workload's operation: `read`, `update` or `update_read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The run phase the request started in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The node the client contacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The coordinator that answered (completions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// HTTP status or transport error class (completions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// An acknowledged write's dot (`X-Dynamo-Dot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot: Option<String>,
    /// The answer's clock (`X-Dynamo-Clock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<String>,
    /// A final read: each live replica's copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<ReplicaRead>>,
    /// A final read: live replicas that could not be read, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// One workload request as the recorder wrote it to the spool, in order of
/// completion; the history is made from these at the end of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub client: u32,
    pub op: String,
    pub key: String,
    pub entry: String,
    pub node: Option<String>,
    /// When it was sent and answered, ns since the driver started.
    pub sent_ns: i64,
    pub end_ns: i64,
    /// How it completed: `ok`, `fail` or `info`.
    pub completion: EventType,
    pub status: String,
    pub phase: String,
    pub written: Option<String>,
    pub read: Vec<String>,
    pub dot: Option<String>,
    pub clock: Option<String>,
}
