//! Post-repair: after the failure is healed and the workload has stopped,
//! count the repair rounds each key needs until its live replicas agree.
//!
//! Background anti-entropy and hint delivery are switched off first, so
//! that only the counted rounds repair (the hints still pending then are
//! reported; they are handed off after the rounds, before the lost-write
//! checker looks, since an acknowledged write may live in a hint). Rounds are staged
//! (`{"staged": true}`, then `repair/commit` on every node): each exchange
//! of a round sees the state from before the round, so the number of rounds
//! depends on the seed alone, not on the order the nodes ran in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster::ClusterView;
use super::holdings;
use crate::api::admin::RepairRound;
use crate::api::status::Switches;

/// The longest wait for pending hints to reach their owners.
const HINT_DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long the pending count may stay put before the wait ends.
const HINT_STALL: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize)]
pub struct RoundLog {
    pub round: u32,
    pub duration_ms: u64,
    /// Keys converged after this round (cumulative).
    pub converged: usize,
    /// The nodes' statistics, summed (partitions, exchanges, keys, bytes, …).
    pub totals: BTreeMap<String, u64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Repair {
    /// Hints the nodes held when the rounds began.
    pub hints_pending: u64,
    pub rounds: Vec<RoundLog>,
    /// Key → rounds until its live replicas agreed; `None` if not within the limit.
    #[serde(skip)]
    pub keys: BTreeMap<u32, Option<u32>>,
}

impl Repair {
    /// How many keys needed each number of rounds (`null`: never).
    pub fn distribution(&self) -> BTreeMap<Option<u32>, usize> {
        let mut counts = BTreeMap::new();
        for rounds in self.keys.values() {
            *counts.entry(*rounds).or_default() += 1;
        }
        counts
    }
}

/// Switches background repair and hint delivery off and runs up to
/// `max_rounds` rounds over `live` nodes, checking `keys` after each.
pub async fn run(
    cluster: &ClusterView,
    live: &[usize],
    keys: &[u32],
    max_rounds: u32,
    seed: u64,
) -> anyhow::Result<Repair> {
    cluster.switch(live, Switches { hint_delivery: false, anti_entropy: false, read_repair: false }).await?;
    let hints_pending = hints_pending(cluster, live).await;
    let mut outcome = Repair { hints_pending, rounds: Vec::new(), keys: BTreeMap::new() };
    let mut pending: Vec<u32> = keys.to_vec();
    settle(cluster, live, &mut pending, &mut outcome, 0).await?;
    for round in 1..=max_rounds {
        if pending.is_empty() {
            break;
        }
        let started = Instant::now();
        let request = RepairRound {
            seed: seed.wrapping_mul(1000).wrapping_add(round as u64),
            staged: true,
            ..Default::default()
        };
        let rounds = cluster.admin_on(live, "repair/round", |mut c| async move { c.repair_round(request).await }).await;
        let commits = cluster.admin_on(live, "repair/commit", |mut c| async move { c.repair_commit().await }).await;
        let mut totals = BTreeMap::new();
        let mut errors = Vec::new();
        let answers = rounds.into_iter().map(|r| r.map(numbers)).chain(commits.into_iter().map(|c| c.map(numbers)));
        for answer in answers {
            match answer {
                Ok(numbers) => numbers.into_iter().for_each(|(name, n)| *totals.entry(name).or_default() += n),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        settle(cluster, live, &mut pending, &mut outcome, round).await?;
        let duration_ms = started.elapsed().as_millis() as u64;
        outcome.rounds.push(RoundLog { round, duration_ms, converged: outcome.keys.len(), totals, errors });
    }
    outcome.keys.extend(pending.into_iter().map(|k| (k, None)));
    Ok(outcome)
}

/// Moves the keys of `pending` whose replicas agree into the outcome, at `round`.
async fn settle(
    cluster: &ClusterView,
    live: &[usize],
    pending: &mut Vec<u32>,
    outcome: &mut Repair,
    round: u32,
) -> anyhow::Result<()> {
    let held = holdings::read(cluster, live, pending).await?;
    pending.retain(|key| {
        let converged = held.get(key).is_some_and(|h| h.converged());
        if converged {
            outcome.keys.insert(*key, Some(round));
        }
        !converged
    });
    Ok(())
}

async fn hints_pending(cluster: &ClusterView, live: &[usize]) -> u64 {
    let statuses = cluster.statuses().await;
    live.iter().filter_map(|&i| statuses[i].as_ref().ok()).map(|s| s.hints_pending).sum()
}

/// Switches hint delivery on and waits until no live node holds a hint,
/// nudging delivery; gives up when the count stops falling (hints for a
/// node left down never drain) or at the limit. Returns the hints left.
pub async fn drain_hints(cluster: &ClusterView, live: &[usize]) -> anyhow::Result<u64> {
    cluster.switch(live, Switches { hint_delivery: true, anti_entropy: false, read_repair: true }).await?;
    let started = Instant::now();
    let mut last_progress = (u64::MAX, Instant::now());
    loop {
        let pending = hints_pending(cluster, live).await;
        if pending < last_progress.0 {
            last_progress = (pending, Instant::now());
        }
        if pending == 0 || last_progress.1.elapsed() > HINT_STALL || started.elapsed() > HINT_DRAIN_LIMIT {
            return Ok(pending);
        }
        let _ = cluster.admin_on(live, "handoff", |mut c| async move { c.handoff().await }).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An admin answer's numbers by field name, for the round's totals.
fn numbers(answer: impl Serialize) -> Vec<(String, u64)> {
    let fields = match serde_json::to_value(answer) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    fields.into_iter().filter_map(|(name, value)| Some((name, value.as_u64()?))).collect()
}
