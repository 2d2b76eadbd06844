//! The lost-write checker: on converged replicas, every acknowledged write
//! must be present in, or causally superseded by, what the replicas hold.
//! A write that timed out was never acknowledged, so it is never counted.

use super::cluster::ClusterView;
use super::holdings;
use crate::api::run::LostWrites;
use crate::workload::ops::key_name;
use crate::workload::staleness::AckedWrites;

/// At most this many lost writes are listed by name.
const LISTED: usize = 20;

pub async fn check(cluster: &ClusterView, live: &[usize], acked: &AckedWrites) -> anyhow::Result<LostWrites> {
    let mut by_key: Vec<(u32, Vec<crate::api::dot::Dot>)> = acked.dots().collect();
    by_key.sort_by_key(|(key, _)| *key);
    let keys: Vec<u32> = by_key.iter().map(|(key, _)| *key).collect();
    let held = holdings::read(cluster, live, &keys).await?;
    let mut verdict = LostWrites { acknowledged: acked.len(), ..LostWrites::default() };
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
