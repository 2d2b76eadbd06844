//! Divergence over time: from t0 until the repair rounds end, the driver
//! asks every node for its Merkle roots and counters twice a second and
//! counts the ring partitions whose live replicas disagree — how far a
//! failure pushed the replicas apart, and which mechanism brought them
//! back how fast. Looking repairs nothing: the roots come from the admin
//! API, not from reads. The sampling runs on its own thread and runtime, so
//! a slow node delays the next sample, never the workload.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cluster::ClusterView;
use crate::api::admin::MerkleRoots;
use crate::api::run::{DivergenceSample, DivergenceSummary, EventLog};
use crate::api::status::Status;
use crate::client::Client;

/// Twice a second, so that a heal-to-zero time is good to half a second.
const EVERY: Duration = Duration::from_millis(500);
/// A node that has not answered by then is not live for that sample.
const ANSWER_WITHIN: Duration = Duration::from_millis(400);

/// What one live node said in one sample.
pub struct NodeAnswer {
    pub status: Status,
    pub roots: MerkleRoots,
}

/// The sampling thread; stopped by [`Sampler::finish`] or when dropped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<Vec<DivergenceSample>>>>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Sampler {
    /// Samples from now on, timed from `t0`.
    pub fn start(cluster: Arc<ClusterView>, t0: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let view = cluster.clone();
            cluster.reach(move || poll(view, t0, flag))
        });
        Sampler { stop, thread: Some(thread) }
    }

    /// Stops after the sample under way and returns them all.
    pub fn finish(mut self) -> anyhow::Result<Vec<DivergenceSample>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

async fn poll(cluster: Arc<ClusterView>, t0: Instant, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<DivergenceSample>> {
    let mut clients: Vec<Client> =
        (0..cluster.ids.len()).map(|i| cluster.admin(i).with_timeout(ANSWER_WITHIN)).collect();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let answers: Vec<NodeAnswer> =
            futures::future::join_all(clients.iter_mut().map(ask)).await.into_iter().flatten().collect();
        samples.push(sample(t0.elapsed().as_micros() as i64, &answers));
    }
    Ok(samples)
}

/// A node's status and roots, or nothing when it does not answer in time.
async fn ask(client: &mut Client) -> Option<NodeAnswer> {
    let status = client.status().await.ok()?;
    let roots = client.merkle_roots().await.ok()?;
    Some(NodeAnswer { status, roots })
}

/// One sample from the answers of the live nodes.
pub fn sample(t_us: i64, answers: &[NodeAnswer]) -> DivergenceSample {
    let sum = |count: fn(&Status) -> u64| answers.iter().map(|a| count(&a.status)).sum();
    DivergenceSample {
        t_us,
        divergent_partitions: divergent_partitions(answers).len() as u64,
        divergent_keys: None,
        hints_pending: sum(|s| s.hints_pending),
        read_repairs: sum(|s| s.counters.get("read_repairs")),
        ae_repairs: sum(|s| s.counters.get("ae_keys_received")),
    }
}

/// The partitions whose live preference-list replicas — those that
/// answered with a root for it — do not all hold the same root. A
/// partition with fewer than two live replicas cannot disagree. The ring
/// is the first answering node's view.
pub fn divergent_partitions(answers: &[NodeAnswer]) -> Vec<u32> {
    let Some(first) = answers.first() else { return Vec::new() };
    let Ok(ring) = ClusterView::ring(&first.status) else { return Vec::new() };
    let n = first.status.ring.n;
    let roots: BTreeMap<&str, &BTreeMap<u32, String>> =
        answers.iter().map(|a| (a.roots.node.as_str(), &a.roots.partitions)).collect();
    (0..ring.partitions())
        .filter(|&p| {
            let mut live = ring.preference_list(p, n).into_iter().filter_map(|node| roots.get(node)?.get(&p));
            let Some(first) = live.next() else { return false };
            live.any(|root| root != first)
        })
        .collect()
}

/// The summary's `divergence`: `heals` are the fault events (their last
/// heal start counts), `workload_end_us` when the clients stopped.
pub fn summarize(samples: &[DivergenceSample], events: &[EventLog], workload_end_us: i64) -> DivergenceSummary {
    let heal_us = events.iter().filter_map(|e| e.heal_started_us).max();
    let nearest = |at: i64| samples.iter().min_by_key(|s| (s.t_us - at).unsigned_abs()).map(|s| s.divergent_partitions);
    let peak = samples.iter().max_by_key(|s| (s.divergent_partitions, std::cmp::Reverse(s.t_us)));
    DivergenceSummary {
        samples: samples.len(),
        peak_partitions: peak.map_or(0, |s| s.divergent_partitions),
        peak_at_us: peak.map(|s| s.t_us),
        at_heal: heal_us.and_then(nearest),
        at_workload_end: nearest(workload_end_us),
        heal_to_zero_ms: heal_us.and_then(|heal| {
            let zero = samples.iter().find(|s| s.t_us >= heal && s.divergent_partitions == 0)?;
            Some((zero.t_us - heal) as f64 / 1000.0)
        }),
    }
}

const COLUMNS: [&str; 6] =
    ["t_us", "divergent_partitions", "divergent_keys", "hints_pending", "read_repairs", "ae_repairs"];

/// `divergence_<stamp>.csv`.
pub fn write_csv(path: &std::path::Path, samples: &[DivergenceSample]) -> anyhow::Result<()> {
    // The header by hand: a run too short for a sample still gets one.
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_path(path)?;
    writer.write_record(COLUMNS)?;
    samples.iter().try_for_each(|s| writer.serialize(s))?;
    Ok(writer.flush()?)
}
