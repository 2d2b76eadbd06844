//! The lost-write checker: on converged replicas, every acknowledged write
//! must be present in, or causally superseded by, what the replicas hold.
//! A write that timed out was never acknowledged, so it is never counted.
//! The same judgment runs offline on a history (`dynabed check`).

use std::collections::HashMap;

use super::cluster::ClusterView;
use super::holdings::{self, Holding};
use crate::api::dot::Dot;
use crate::api::run::LostWrites;
use crate::workload::ops::key_name;
use crate::workload::staleness::AckedWrites;

/// At most this many lost writes are listed by name.
const LISTED: usize = 20;

/// The checks found acknowledged writes lost: a consistency violation of
/// the store, not a failure of the tool (`dynabed` exits with
/// [`Violation::EXIT_CODE`] for it, so scripts can tell the two apart).
#[derive(Debug, thiserror::Error)]
#[error("{lost} of {acknowledged} acknowledged writes were lost (e.g. {})", examples.join(", "))]
pub struct Violation {
    pub lost: u64,
    pub acknowledged: u64,
    pub examples: Vec<String>,
}

impl Violation {
    /// 1 is any error of the tool, 2 a command line clap refused.
    pub const EXIT_CODE: i32 = 3;

    /// The violation `verdict` records, if any.
    pub fn of(verdict: &LostWrites) -> Option<Violation> {
        (verdict.lost > 0).then(|| Violation {
            lost: verdict.lost,
            acknowledged: verdict.acknowledged,
            examples: verdict.examples.clone(),
        })
    }
}

/// The verdict, and what the replicas held (the history's final reads).
pub struct Checked {
    pub verdict: LostWrites,
    pub held: HashMap<u32, Holding>,
}

pub async fn check(cluster: &ClusterView, live: &[usize], acked: &AckedWrites) -> anyhow::Result<Checked> {
    let mut keys: Vec<u32> = acked.dots().map(|(key, _)| key).collect();
    keys.sort_unstable();
    let held = holdings::read(cluster, live, &keys).await?;
    Ok(Checked { verdict: judge(acked, &held), held })
}

/// Each acknowledged write against what the replicas of its key hold: lost
/// when no copy covers it, unverified when none does but some replica (or
/// the key) could not be read.
pub fn judge(acked: &AckedWrites, held: &HashMap<u32, Holding>) -> LostWrites {
    let mut by_key: Vec<(u32, Vec<Dot>)> = acked.dots().collect();
    by_key.sort_by_key(|(key, _)| *key);
    let mut verdict = LostWrites { acknowledged: acked.len(), ..LostWrites::default() };
    for (key, mut dots) in by_key {
        dots.sort();
        let copies = held.get(&key).map(|h| h.copies.as_slice()).unwrap_or_default();
        let unreadable = held.get(&key).is_none_or(|h| !h.unreadable.is_empty());
        for dot in &dots {
            let holders = copies.iter().filter(|c| c.covers(dot)).count();
            if holders == 0 && unreadable {
                verdict.unverified += 1;
            } else if holders == 0 {
                verdict.lost += 1;
                if verdict.examples.len() < LISTED {
                    verdict.examples.push(format!("{} {dot}", key_name(key)));
                }
            } else if holders < copies.len() {
                verdict.missing_somewhere += 1;
            }
        }
    }
    verdict
}
