//! What a workload request is: YCSB's operation mixes, how updates carry
//! causal context, which node a request enters at, and the values written.

use bytes::Bytes;
use serde::Serialize;

/// YCSB's core workloads with read and update operations only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Workload {
    /// 50 % reads, 50 % updates (YCSB "update heavy").
    A,
    /// 95 % reads, 5 % updates (YCSB "read mostly").
    B,
}

impl Workload {
    pub fn read_fraction(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
        }
    }
}

/// The causal context an update sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    /// Read the key first (recorded as `update_read`), then write with that
    /// context, as Dynamo's get → put intends. When that read fails, write
    /// with the newest context this client holds for the key, as an
    /// application caching its objects would: writes go on (and clocks
    /// grow) where reads cannot be served, e.g. on a partition's minority side.
    Rmw,
    /// The context of this client's last answer for the key (read or write);
    /// none before the first. Often thousands of operations old, so most
    /// updates conflict: a workload artifact more than the store's.
    Context,
    /// No context: every update is concurrent with what the store holds.
    Blind,
}

/// Which node a request enters at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// A node drawn per request from the client's seeded generator.
    Random,
    /// Client i always enters at node i mod K.
    Fixed,
    /// The key's first preference-list node (client-driven coordination).
    Coordinator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Read,
    Update,
    /// The read of a read-modify-write update (`--update_mode rmw`): a
    /// request of its own, outside the workload's read/update mix.
    UpdateRead,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::UpdateRead => "update_read",
        }
    }

    /// Whether the request reads the key.
    pub fn reads(self) -> bool {
        matches!(self, Op::Read | Op::UpdateRead)
    }
}

pub fn key_name(index: u32) -> String {
    format!("user{index}")
}

/// A value of `size` bytes (at least the id's length) that starts with the
/// write's unique id, so any value found on a replica names its write.
pub fn value(write_id: &str, size: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(size.max(write_id.len() + 1));
    bytes.extend_from_slice(write_id.as_bytes());
    bytes.push(b' ');
    bytes.resize(size.max(bytes.len()), b'.');
    Bytes::from(bytes)
}

/// The id of the write that made `value` (what [`value`] put before the
/// first space); the whole value, lossily, when it has no space.
pub fn value_id(value: &[u8]) -> String {
    let id = value.split(|b| *b == b' ').next().unwrap_or_default();
    String::from_utf8_lossy(id).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_asked_size_and_start_with_their_id() {
        let v = value("c3-17", 100);
        assert_eq!(v.len(), 100);
        assert!(v.starts_with(b"c3-17 "));
        assert_eq!(value("c12345-678", 4).len(), 11, "never shorter than the id");
        assert_eq!(value_id(&v), "c3-17");
    }
}
