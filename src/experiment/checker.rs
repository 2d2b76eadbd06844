//! The lost-write checker: on converged replicas, every acknowledged write
//! must be present in, or causally superseded by, what the replicas hold.
//! A write that timed out was never acknowledged, so it is never counted.

use serde::Serialize;

use super::cluster::ClusterView;
use super::holdings;
use crate::workload::ops::key_name;
use crate::workload::staleness::AckedWrites;

/// At most this many lost writes are listed by name.
const LISTED: usize = 20;

#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub acknowledged: u64,
    /// Writes that no live replica holds or supersedes.
    pub lost: u64,
    /// Writes no answering replica holds while some replica could not be
    /// read: neither confirmed nor lost.
    pub unverified: u64,
    /// Writes present on some live replicas but missing from others (the
    /// replicas have not converged: not a loss, but not a clean end).
    pub missing_somewhere: u64,
    /// The first few lost writes, as `key dot`.
    pub examples: Vec<String>,
    /// Hints not delivered when the check ran (for a node left down).
    pub hints_left: u64,
}

pub async fn check(cluster: &ClusterView, live: &[usize], acked: &AckedWrites) -> anyhow::Result<Verdict> {
    let mut by_key: Vec<(u32, Vec<crate::api::dot::Dot>)> = acked.dots().collect();
    by_key.sort_by_key(|(key, _)| *key);
    let keys: Vec<u32> = by_key.iter().map(|(key, _)| *key).collect();
    let held = holdings::read(cluster, live, &keys).await?;
    let mut verdict = Verdict { acknowledged: acked.len(), ..Verdict::default() };
    for (key, dots) in &by_key {
        let copies = held.get(key).map(|h| h.copies.as_slice()).unwrap_or_default();
        let unreadable = held.get(key).is_none_or(|h| !h.unreadable.is_empty());
        for dot in dots {
            let holders = copies.iter().filter(|c| c.covers(dot)).count();
            if holders == 0 && unreadable {
                verdict.unverified += 1;
            } else if holders == 0 {
                verdict.lost += 1;
                if verdict.examples.len() < LISTED {
                    verdict.examples.push(format!("{} {dot}", key_name(*key)));
                }
            } else if holders < copies.len() {
                verdict.missing_somewhere += 1;
            }
        }
    }
    Ok(verdict)
}
