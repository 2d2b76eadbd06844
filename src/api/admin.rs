//! Request and answer bodies of the `/admin/*` routes.
//!
//! The node parses the requests and sends the answers as these types, and
//! the client's admin methods speak them, so the driver never spells a
//! field name. Requests refuse unknown fields: a misspelt switch is an
//! error, not a silent no-op.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::status::Switches;

/// `POST /admin/config`: the switches to change; the answer is [`Switches`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint_delivery: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anti_entropy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_repair: Option<bool>,
}

impl From<Switches> for SwitchChange {
    fn from(to: Switches) -> Self {
        SwitchChange {
            hint_delivery: Some(to.hint_delivery),
            anti_entropy: Some(to.anti_entropy),
            read_repair: Some(to.read_repair),
        }
    }
}

/// `POST /admin/repair/round`: one anti-entropy round over every partition
/// this node replicates; an empty body is the default round. The answer is
/// [`SyncStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairRound {
    /// Picks each partition's partner (with [`Fanout::One`]).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub fanout: Fanout,
    /// Keep what the round learns until `POST /admin/repair/commit`, so
    /// every exchange of a round sees the state from before it.
    #[serde(default)]
    pub staged: bool,
}

/// With whom a repair round reconciles each partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fanout {
    /// One other replica, drawn from the round's seed (DESIGN.md's round).
    #[default]
    One,
    /// Every other replica.
    All,
}

/// What one round (or one exchange) did, as `POST /admin/repair/round` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStats {
    pub partitions: u64,
    pub exchanges: u64,
    pub in_sync: u64,
    pub differing_leaves: u64,
    pub keys_sent: u64,
    pub keys_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub tombstones_reaped: u64,
    pub failed: u64,
    pub skipped: u64,
    pub duration_ms: u64,
}

/// `POST /admin/repair/commit`: the staged objects merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub merged: usize,
}

/// `POST /admin/handoff`: the hints handed to their owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedOff {
    pub delivered: usize,
}

/// `POST /admin/leave`: what the node did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveStats {
    /// Members told directly that this node left.
    pub told: usize,
    pub keys: usize,
    /// Replica writes that landed.
    pub writes: usize,
    pub failed_writes: usize,
    pub hints_passed_on: usize,
}

/// `GET /admin/merkle`: the Merkle root of every partition the node
/// replicates, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleRoots {
    pub node: String,
    pub partitions: BTreeMap<u32, String>,
}

/// `GET /admin/merkle/leaves?partitions=3,17`: the leaves of the asked
/// partitions that the node replicates, so that a watcher can tell how
/// many leaves two replicas differ on without reading a key. Only leaves
/// holding something are listed (by index, hash in hex): a partition of a
/// few keys answers in a few lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleLeaves {
    pub node: String,
    pub partitions: BTreeMap<u32, BTreeMap<u16, String>>,
}

/// `GET /admin/replicas/{key}`: what every preference-list replica of a key
/// holds, read directly (no read repair).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    /// The key, as UTF-8 (lossily).
    pub key: String,
    pub partition: u32,
    pub replicas: Vec<ReplicaCopy>,
}

/// One replica's copy of the key, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCopy {
    pub node: String,
    #[serde(flatten)]
    pub held: Held,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Held {
    /// Every sibling, tombstones included; empty when the key is absent.
    Versions {
        versions: Vec<StoredVersion>,
    },
    Unreadable {
        error: String,
    },
}

/// One sibling as a replica stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// Base64 of the value; `None` for a tombstone.
    pub value: Option<String>,
    /// Its dot, `actor:counter`.
    pub dot: String,
    /// The object's readable clock (`X-Dynamo-Clock` form).
    pub clock: String,
    pub tombstone: bool,
}

/// `POST /admin/fault` sets, `DELETE` heals and `GET` reads the
/// application-level faults in force (the answer of all three).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultState {
    /// Delay for every received message, in milliseconds (0 = none).
    #[serde(default)]
    pub slow_ms: u64,
    #[serde(default)]
    pub partition: Partition,
    /// The skew of the node's clock (none: it reads the host's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockSkew>,
}

/// A skewed node clock: `offset_ms` ahead of the host's clock (behind when
/// negative) from the moment it is set, gaining `drift_ppm` milliseconds
/// per million real ones after that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSkew {
    pub offset_ms: i64,
    #[serde(default)]
    pub drift_ppm: i64,
}

/// Peers whose messages the node drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    #[default]
    None,
    /// From every peer.
    All,
    /// From these peers only.
    Peers(BTreeSet<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_bodies_parse_in_their_admin_forms() {
        let slow: FaultState = serde_json::from_str(r#"{"slow_ms": 200}"#).unwrap();
        assert_eq!(slow.slow_ms, 200);
        let all: FaultState = serde_json::from_str(r#"{"partition": "all"}"#).unwrap();
        assert_eq!(all.partition, Partition::All);
        let some: FaultState = serde_json::from_str(r#"{"partition": {"peers": ["node2"]}}"#).unwrap();
        assert_eq!(some.partition, Partition::Peers(["node2".to_owned()].into()));
        assert!(serde_json::from_str::<FaultState>(r#"{"slow": 1}"#).is_err(), "unknown fields are refused");
        let skew: FaultState = serde_json::from_str(r#"{"clock": {"offset_ms": -5000}}"#).unwrap();
        assert_eq!(skew.clock, Some(ClockSkew { offset_ms: -5000, drift_ppm: 0 }));
        assert_eq!(
            serde_json::to_string(&slow).unwrap(),
            r#"{"slow_ms":200,"partition":"none"}"#,
            "no clock, no field"
        );
    }

    #[test]
    fn replica_copies_read_back_as_sent() {
        let sent = r#"{"key":"k","partition":9,"replicas":[{"node":"node1","versions":[{"value":"dg==","dot":"a:1","clock":"a:1","tombstone":false},{"value":null,"dot":"b:1","clock":"a:1","tombstone":true}]},{"node":"node2","versions":[]},{"node":"node3","error":"unreachable"}]}"#;
        let replicas: Replicas = serde_json::from_str(sent).unwrap();
        assert_eq!(replicas.replicas[2].held, Held::Unreadable { error: "unreachable".into() });
        assert_eq!(serde_json::to_string(&replicas).unwrap(), sent);
    }

    #[test]
    fn admin_requests_refuse_unknown_fields_and_take_defaults() {
        assert!(serde_json::from_str::<SwitchChange>(r#"{"hint_delivry": true}"#).is_err());
        let round: RepairRound = serde_json::from_str(r#"{"seed": 3, "staged": true}"#).unwrap();
        assert_eq!(round, RepairRound { seed: 3, fanout: Fanout::One, staged: true });
        let roots: MerkleRoots = serde_json::from_str(r#"{"node":"n","partitions":{"2":"ab","10":"cd"}}"#).unwrap();
        assert_eq!(serde_json::to_string(&roots).unwrap(), r#"{"node":"n","partitions":{"2":"ab","10":"cd"}}"#);
    }
}
