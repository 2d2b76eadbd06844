//! What the live replicas of each key hold, read directly through
//! `GET /admin/replicas/{key}` (no read repair): the ground truth for
//! convergence and for the lost-write checker.

use std::collections::{BTreeSet, HashMap};

use anyhow::Context;
use base64::Engine;

use super::cluster::ClusterView;
use crate::api::admin::{Held, Replicas};
use crate::api::dot::{Clock, Dot};
use crate::workload::ops::{self, key_name};

/// Replica reads in flight at once.
const READERS: usize = 16;

/// One replica's copy of a key.
#[derive(Debug)]
pub struct Copy {
    pub node: String,
    /// Each sibling as `dot` (with `~` for a tombstone), sorted.
    pub versions: BTreeSet<String>,
    pub clock: String,
    /// Each live sibling's value id, for the history's final reads.
    pub values: Vec<String>,
}

impl Copy {
    /// Whether this copy holds `dot` or a version that causally follows it.
    pub fn covers(&self, dot: &Dot) -> bool {
        let text = dot.to_string();
        self.versions.iter().any(|v| v.trim_end_matches('~') == text)
            || Clock::parse(&self.clock).is_ok_and(|c| c.covers(dot))
    }
}

/// A key on its live replicas.
#[derive(Debug)]
pub struct Holding {
    pub copies: Vec<Copy>,
    /// Live replicas (or the whole key) that could not be read, and why.
    pub unreadable: Vec<String>,
}

impl Holding {
    /// All live replicas answered and hold the same versions.
    pub fn converged(&self) -> bool {
        self.unreadable.is_empty()
            && self.copies.windows(2).all(|w| w[0].versions == w[1].versions && w[0].clock == w[1].clock)
    }
}

/// Reads `keys` on their replicas; `live` are the nodes expected to answer
/// (a replica on any other node is skipped).
pub async fn read(cluster: &ClusterView, live: &[usize], keys: &[u32]) -> anyhow::Result<HashMap<u32, Holding>> {
    anyhow::ensure!(!live.is_empty(), "no live node to read replicas through");
    let live_ids: Vec<&str> = live.iter().map(|&i| cluster.ids[i].as_str()).collect();
    let readers = (0..READERS.min(keys.len())).map(|reader| {
        let live_ids = &live_ids;
        async move {
            let mut client = cluster.admin(live[reader % live.len()]);
            let mut held = Vec::new();
            for &key in keys.iter().skip(reader).step_by(READERS) {
                // A key that cannot be read is reported as such, not fatal:
                // the run's other keys and its files still count.
                let holding = match read_one(&mut client, key).await {
                    Ok(body) => parse(&body, live_ids),
                    Err(e) => Holding { copies: Vec::new(), unreadable: vec![format!("{e:#}")] },
                };
                held.push((key, holding));
            }
            held
        }
    });
    Ok(futures::future::join_all(readers).await.into_iter().flatten().collect())
}

async fn read_one(client: &mut crate::client::Client, key: u32) -> anyhow::Result<Replicas> {
    client.replicas(&key_name(key)).await.with_context(|| format!("reading {}", key_name(key)))
}

fn parse(answer: &Replicas, live: &[&str]) -> Holding {
    let mut holding = Holding { copies: Vec::new(), unreadable: Vec::new() };
    for replica in answer.replicas.iter().filter(|r| live.contains(&r.node.as_str())) {
        let versions = match &replica.held {
            Held::Versions { versions } => versions,
            Held::Unreadable { .. } => {
                holding.unreadable.push(replica.node.clone());
                continue;
            }
        };
        let clock = versions.first().map(|v| v.clock.clone()).unwrap_or_default();
        let values = versions.iter().filter_map(|v| v.value.as_deref().map(value_id)).collect();
        let versions =
            versions.iter().map(|v| if v.tombstone { format!("{}~", v.dot) } else { v.dot.clone() }).collect();
        holding.copies.push(Copy { node: replica.node.clone(), versions, clock, values });
    }
    holding
}

/// The id of a stored value (base64 on the admin API).
fn value_id(base64: &str) -> String {
    match base64::engine::general_purpose::STANDARD.decode(base64) {
        Ok(bytes) => ops::value_id(&bytes),
        Err(_) => format!("undecodable:{base64}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::admin::{ReplicaCopy, StoredVersion};

    /// A replica holding one live version, `dot`, under the clock `dot`.
    fn holds(node: &str, dot: &str) -> ReplicaCopy {
        let version =
            StoredVersion { value: Some("dg==".into()), dot: dot.into(), clock: dot.into(), tombstone: false };
        ReplicaCopy { node: node.into(), held: Held::Versions { versions: vec![version] } }
    }

    fn replicas(copies: Vec<ReplicaCopy>) -> Replicas {
        Replicas { key: "k".into(), partition: 0, replicas: copies }
    }

    #[test]
    fn copies_are_compared_by_versions_and_clock_and_dead_nodes_are_skipped() {
        let unreachable = ReplicaCopy { node: "node3".into(), held: Held::Unreadable { error: "unreachable".into() } };
        let body = replicas(vec![holds("node1", "node1.a:2"), holds("node2", "node1.a:2"), unreachable]);
        let held = parse(&body, &["node1", "node2"]);
        assert!(held.converged(), "node3 is not live: skipped");
        assert_eq!(held.copies[1].node, "node2");
        assert_eq!(held.copies[0].values, ["v"], "the value's id: dg== is \"v\"");
        assert!(held.copies[0].covers(&"node1.a:1".parse().unwrap()), "superseded by the clock");
        assert!(!held.copies[0].covers(&"node2.b:1".parse().unwrap()));
        let held = parse(&body, &["node1", "node2", "node3"]);
        assert!(!held.converged(), "a live replica that does not answer is not converged");
        let behind = replicas(vec![holds("node1", "node1.a:2"), holds("node2", "node1.a:1")]);
        assert!(!parse(&behind, &["node1", "node2"]).converged());
    }
}
