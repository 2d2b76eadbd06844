//! The body of `GET /status`.
//!
//! The node serves it, and the driver, `cluster status` and the readiness
//! check read it back; the experiment also writes it into its nodes folder
//! unchanged. Fields appear in the order the node has always sent them, and
//! counters in the node's declaration order, so a status read and written
//! again is byte for byte what the node sent.

use std::fmt;
use std::path::PathBuf;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub pid: u32,
    /// The name this node's writes are stamped with (its dots' actor).
    pub actor: String,
    pub members: Vec<MemberView>,
    pub hints_pending: u64,
    pub hints_delivered: u64,
    pub counters: Counters,
    pub ring: RingView,
    /// The storage engine (`fjall` or `memory`).
    pub storage: String,
    pub storage_lost_records: Option<LostRecords>,
    /// The first write failure, after which the node stops.
    pub storage_failure: Option<String>,
    pub switches: Switches,
    /// The node's own clock, which its time-based parts read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockReading>,
}

/// What the node's clock read while it answered, and the skew in force
/// (zero when none), so a probe can compare it with the host's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// Milliseconds since the Unix epoch, skew included.
    pub now_ms: u64,
    pub offset_ms: i64,
    pub drift_ppm: i64,
    /// The host's clock when the skew was set (the drift counts from
    /// then); 0 when no skew is in force.
    pub set_at_ms: u64,
}

impl Status {
    /// Members this node believes down.
    pub fn down(&self) -> impl Iterator<Item = &str> {
        self.members.iter().filter(|m| !m.alive).map(|m| m.id.as_str())
    }
}

/// A member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    /// Its client address, `host:port`.
    pub addr: String,
    /// What this node's failure detector believes.
    pub alive: bool,
    /// A request to it failed since its heartbeat last advanced: requests
    /// go elsewhere first (it may still be alive).
    #[serde(default)]
    pub suspect: bool,
    /// Left the cluster for good.
    pub left: bool,
}

/// The ring this node places keys on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingView {
    pub partitions: u32,
    pub n: usize,
    pub members: Vec<String>,
}

/// Run-time switches an experiment flips through `POST /admin/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switches {
    pub hint_delivery: bool,
    pub anti_entropy: bool,
    pub read_repair: bool,
}

/// Records the engine lost: it holds an older checkpoint than the identity
/// file recorded, or journals had to be moved aside to open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRecords {
    pub checkpoint_recorded: u64,
    pub checkpoint_found: u64,
    pub quarantined_journals: Vec<PathBuf>,
}

/// The node's counters by name, in the node's order (a JSON object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(Vec<(String, u64)>);

impl Counters {
    /// A counter's value; 0 for a name this node does not count.
    pub fn get(&self, name: &str) -> u64 {
        self.0.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(n, v)| (n.as_str(), *v))
    }
}

impl<N: Into<String>> FromIterator<(N, u64)> for Counters {
    fn from_iter<I: IntoIterator<Item = (N, u64)>>(iter: I) -> Self {
        Counters(iter.into_iter().map(|(n, v)| (n.into(), v)).collect())
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Counters;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of counter names to numbers")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counters, A::Error> {
                let mut counters = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    counters.push(entry);
                }
                Ok(Counters(counters))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_back_as_it_was_sent() {
        let sent = r#"{"id":"node1","pid":42,"actor":"node1.ab12","members":[{"id":"node1","addr":"10.0.0.1:7000","alive":true,"suspect":false,"left":false},{"id":"node2","addr":"10.0.0.2:7000","alive":false,"suspect":false,"left":false}],"hints_pending":3,"hints_delivered":7,"counters":{"puts":5,"gets":2,"hints_delivered":7},"ring":{"partitions":256,"n":3,"members":["node1","node2"]},"storage":"fjall","storage_lost_records":{"checkpoint_recorded":2,"checkpoint_found":1,"quarantined_journals":["/d/j1"]},"storage_failure":null,"switches":{"hint_delivery":true,"anti_entropy":false,"read_repair":true}}"#;
        let status: Status = serde_json::from_str(sent).unwrap();
        assert_eq!(serde_json::to_string(&status).unwrap(), sent);
        assert_eq!((status.counters.get("gets"), status.counters.get("nothing")), (2, 0));
        assert_eq!(status.down().collect::<Vec<_>>(), ["node2"]);
    }
}
