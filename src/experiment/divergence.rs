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
use std::time::{Duration, Instant};

use super::cluster::ClusterView;
use super::polling::Polling;
use crate::api::admin::{MerkleLeaves, MerkleRoots};
use crate::api::run::{DivergenceSample, DivergenceSummary, EventLog};
use crate::api::status::Status;
use crate::client::Client;

/// Twice a second, so that a heal-to-zero time is good to half a second.
const EVERY: Duration = Duration::from_millis(500);
/// A node that has not answered by then is not live for that sample.
const ANSWER_WITHIN: Duration = Duration::from_millis(400);

/// What one live node said in one sample.
struct NodeAnswer {
    status: Status,
    roots: MerkleRoots,
}

/// The sampling thread; stopped by [`Sampler::finish`] or when dropped.
pub struct Sampler(Polling<DivergenceSample>);

impl Sampler {
    /// Samples from now on, timed from `t0`.
    pub fn start(cluster: Arc<ClusterView>, t0: Instant) -> Sampler {
        Sampler(Polling::start(cluster, move |view, stop| poll(view, t0, stop)))
    }

    /// Stops after the sample under way and returns them all.
    pub fn finish(self) -> anyhow::Result<Vec<DivergenceSample>> {
        self.0.finish().unwrap_or_else(|p| std::panic::resume_unwind(p))
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
        samples.push(take_sample(&mut clients, t0).await);
    }
    Ok(samples)
}

/// Asks every node for its roots, then the live replicas of the partitions
/// whose roots differ for their leaves there: a partition counts when its
/// replicas still differ at that second look, so that a write caught on its
/// way to the replicas (held by some, a few ms later by all) does not.
async fn take_sample(clients: &mut [Client], t0: Instant) -> DivergenceSample {
    let asked = futures::future::join_all(clients.iter_mut().map(ask)).await;
    let (live, answers): (Vec<usize>, Vec<NodeAnswer>) =
        asked.into_iter().enumerate().filter_map(|(i, answer)| Some((i, answer?))).unzip();
    let divergent = divergent_partitions(&answers);
    let leaf_calls =
        clients.iter_mut().enumerate().filter(|(i, _)| live.contains(i)).zip(&answers).map(|((_, client), answer)| {
            let wanted: Vec<u32> = divergent
                .iter()
                .filter(|(_, replicas)| replicas.contains(&answer.roots.node.as_str()))
                .map(|(p, _)| *p)
                .collect();
            async move {
                if wanted.is_empty() {
                    return Some(MerkleLeaves { node: answer.roots.node.clone(), partitions: BTreeMap::new() });
                }
                client.merkle_leaves(&wanted).await.ok()
            }
        });
    // A node that answered its roots but not its leaves leaves the keys
    // uncounted, and the roots alone decide.
    let leaves: Option<Vec<MerkleLeaves>> = futures::future::join_all(leaf_calls).await.into_iter().collect();
    let t_us = t0.elapsed().as_micros() as i64;
    let differing = leaves.map(|leaves| differing_leaves(&divergent, &leaves));
    let sum = |count: fn(&Status) -> u64| answers.iter().map(|a| count(&a.status)).sum();
    DivergenceSample {
        t_us,
        divergent_partitions: differing
            .as_ref()
            .map_or(divergent.len(), |by_partition| by_partition.values().filter(|&&n| n > 0).count())
            as u64,
        divergent_keys: differing.map(|by_partition| by_partition.values().sum()),
        hints_pending: sum(|s| s.hints_pending),
        read_repairs: sum(|s| s.counters.get("read_repairs")),
        ae_repairs: sum(|s| s.counters.get("ae_keys_received")),
    }
}

/// A node's status and roots, or nothing when it does not answer in time.
async fn ask(client: &mut Client) -> Option<NodeAnswer> {
    let status = client.status().await.ok()?;
    let roots = client.merkle_roots().await.ok()?;
    Some(NodeAnswer { status, roots })
}

/// The partitions whose live preference-list replicas — those that
/// answered with a root for it — do not all hold the same root, each with
/// those replicas. A partition with fewer than two live replicas cannot
/// disagree. The ring is the first answering node's view.
fn divergent_partitions(answers: &[NodeAnswer]) -> BTreeMap<u32, Vec<&str>> {
    let Some(first) = answers.first() else { return BTreeMap::new() };
    let Ok(ring) = ClusterView::ring(&first.status) else { return BTreeMap::new() };
    let n = first.status.ring.n;
    let roots: BTreeMap<&str, &BTreeMap<u32, String>> =
        answers.iter().map(|a| (a.roots.node.as_str(), &a.roots.partitions)).collect();
    (0..ring.partitions())
        .filter_map(|p| {
            let live: Vec<(&str, &String)> = ring
                .preference_list(p, n)
                .into_iter()
                .filter_map(|node| {
                    let (&node, partitions) = roots.get_key_value(node)?;
                    Some((node, partitions.get(&p)?))
                })
                .collect();
            let disagree = live.iter().any(|(_, root)| *root != live[0].1);
            disagree.then(|| (p, live.into_iter().map(|(node, _)| node).collect()))
        })
        .collect()
}

/// For each divergent partition, the leaves on which its live replicas do
/// not all agree (a leaf a replica does not list holds nothing there).
fn differing_leaves(divergent: &BTreeMap<u32, Vec<&str>>, leaves: &[MerkleLeaves]) -> BTreeMap<u32, u64> {
    let empty = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for (partition, replicas) in divergent {
        let held: Vec<&BTreeMap<u16, String>> = leaves
            .iter()
            .filter(|l| replicas.contains(&l.node.as_str()))
            .map(|l| l.partitions.get(partition).unwrap_or(&empty))
            .collect();
        let mut indices: Vec<u16> = held.iter().flat_map(|h| h.keys().copied()).collect();
        indices.sort_unstable();
        indices.dedup();
        let differ = indices.iter().filter(|i| held.iter().any(|h| h.get(i) != held[0].get(i))).count();
        counts.insert(*partition, differ as u64);
    }
    counts
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fault::{Kind, Layer};
    use crate::api::ring::Ring;
    use crate::api::status::{Counters, RingView, Switches};

    const MEMBERS: [&str; 4] = ["node1", "node2", "node3", "node4"];
    const PARTITIONS: u32 = 16;
    const N: usize = 3;

    fn ring() -> Ring {
        Ring::new(MEMBERS.map(str::to_owned), PARTITIONS).unwrap()
    }

    /// `node`'s answer: root `"same"` for every partition it replicates,
    /// `"own"` for those in `differs`.
    fn answer(node: &str, differs: &[u32], hints: u64) -> NodeAnswer {
        let partitions = ring().replicated_partitions(node, N);
        let root = |p: u32| if differs.contains(&p) { format!("{node}-own") } else { "same".to_owned() };
        NodeAnswer {
            status: Status {
                id: node.into(),
                pid: 1,
                actor: node.into(),
                members: Vec::new(),
                hints_pending: hints,
                hints_delivered: 0,
                counters: Counters::from_iter([("read_repairs", 2)]),
                ring: RingView { partitions: PARTITIONS, n: N, members: MEMBERS.map(str::to_owned).to_vec() },
                storage: "memory".into(),
                storage_lost_records: None,
                storage_failure: None,
                switches: Switches { hint_delivery: true, anti_entropy: false, read_repair: true },
                clock: None,
            },
            roots: MerkleRoots { node: node.into(), partitions: partitions.iter().map(|&p| (p, root(p))).collect() },
        }
    }

    fn node1_only(node: &str, p: u32) -> Vec<u32> {
        if node == "node1" {
            vec![p]
        } else {
            Vec::new()
        }
    }

    /// A partition node1 replicates, and the other replicas of it.
    fn of_node1() -> (u32, Vec<String>) {
        let ring = ring();
        let p = ring.replicated_partitions("node1", N)[0];
        let others = ring.preference_list(p, N).into_iter().filter(|n| *n != "node1").map(str::to_owned).collect();
        (p, others)
    }

    #[test]
    fn replicas_that_agree_do_not_diverge() {
        let answers: Vec<NodeAnswer> = MEMBERS.iter().map(|m| answer(m, &[], 0)).collect();
        assert!(divergent_partitions(&answers).is_empty());
        assert!(divergent_partitions(&[]).is_empty(), "no live node, nothing to compare");
    }

    #[test]
    fn a_root_that_differs_makes_its_partition_divergent_with_its_live_replicas() {
        let (p, others) = of_node1();
        let answers: Vec<NodeAnswer> = MEMBERS.iter().map(|m| answer(m, &node1_only(m, p), 0)).collect();
        let divergent = divergent_partitions(&answers);
        assert_eq!(divergent.keys().copied().collect::<Vec<_>>(), [p]);
        let mut replicas = divergent[&p].clone();
        replicas.sort_unstable();
        let mut expected: Vec<&str> = others.iter().map(String::as_str).chain(["node1"]).collect();
        expected.sort_unstable();
        assert_eq!(replicas, expected);
    }

    #[test]
    fn a_missing_node_is_not_live_and_a_lone_live_replica_cannot_disagree() {
        let (p, others) = of_node1();
        // node1 differs but does not answer: what the others hold agrees.
        let without_node1: Vec<NodeAnswer> =
            MEMBERS.iter().filter(|m| **m != "node1").map(|m| answer(m, &[], 0)).collect();
        assert!(divergent_partitions(&without_node1).is_empty());
        // node1 differs and answers, but the other replicas of p do not:
        // one live replica has nothing to disagree with.
        let alone: Vec<NodeAnswer> =
            MEMBERS.iter().filter(|m| !others.contains(&m.to_string())).map(|m| answer(m, &[p], 0)).collect();
        assert!(!divergent_partitions(&alone).contains_key(&p));
        // With one of the others back, two live replicas disagree.
        let two: Vec<NodeAnswer> =
            MEMBERS.iter().filter(|m| **m != others[1]).map(|m| answer(m, &node1_only(m, p), 0)).collect();
        assert_eq!(divergent_partitions(&two)[&p].len(), 2);
    }

    #[test]
    fn leaves_count_where_any_live_replica_differs() {
        let leaves = |node: &str, held: &[(u16, &str)]| MerkleLeaves {
            node: node.into(),
            partitions: BTreeMap::from([(7, held.iter().map(|(i, h)| (*i, h.to_string())).collect())]),
        };
        let divergent = BTreeMap::from([(7, vec!["a", "b", "c"]), (8, vec!["a", "b"])]);
        let answers = [
            leaves("a", &[(1, "x"), (2, "y"), (3, "z")]),
            leaves("b", &[(1, "x"), (2, "other")]),
            leaves("c", &[(1, "x"), (2, "y"), (3, "z"), (9, "new")]),
            // Not a live replica of partition 7 in this sample: ignored.
            leaves("d", &[(1, "elsewhere")]),
        ];
        // Leaf 2 differs on b, leaf 3 is missing on b, leaf 9 only c holds;
        // partition 8 agreed by the time its leaves were asked for.
        assert_eq!(differing_leaves(&divergent, &answers), BTreeMap::from([(7, 3), (8, 0)]));
    }

    fn samples(counts: &[(i64, u64)]) -> Vec<DivergenceSample> {
        counts
            .iter()
            .map(|&(t_us, divergent_partitions)| DivergenceSample {
                t_us,
                divergent_partitions,
                divergent_keys: None,
                hints_pending: 0,
                read_repairs: 0,
                ae_repairs: 0,
            })
            .collect()
    }

    fn healed_at(us: i64) -> EventLog {
        let event = serde_json::json!({
            "event": 0, "kind": Kind::Partition, "targets": ["node3"], "layer": Layer::App,
            "planned_at_s": 1.0, "planned_duration_s": 2.0, "apply_started_us": 900_000, "applied_us": 1_000_000,
            "heal_started_us": us, "healed_us": us + 1000, "faults": [],
        });
        serde_json::from_value(event).unwrap()
    }

    #[test]
    fn the_summary_finds_the_peak_the_heal_the_end_and_the_first_zero_after_the_heal() {
        let s = samples(&[
            (0, 0),
            (500_000, 0),
            (1_000_000, 40),
            (1_500_000, 90),
            (2_000_000, 90),
            (3_100_000, 60),
            (3_600_000, 0),
            (4_100_000, 3),
        ]);
        let summary = summarize(&s, &[healed_at(3_000_000)], 4_000_000);
        assert_eq!((summary.samples, summary.peak_partitions, summary.peak_at_us), (8, 90, Some(1_500_000)));
        assert_eq!((summary.at_heal, summary.at_workload_end), (Some(60), Some(3)));
        assert_eq!(summary.heal_to_zero_ms, Some(600.0), "the zeros before the heal do not count");

        let never = summarize(&s[..6], &[healed_at(3_000_000)], 3_000_000);
        assert_eq!(never.heal_to_zero_ms, None);
        let unhealed = summarize(&s, &[], 4_000_000);
        assert_eq!((unhealed.at_heal, unhealed.heal_to_zero_ms), (None, None));
        let empty = summarize(&[], &[], 0);
        assert_eq!((empty.peak_partitions, empty.peak_at_us, empty.at_workload_end), (0, None, None));
    }

    #[test]
    fn the_csv_has_its_header_even_without_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("divergence.csv");
        write_csv(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", COLUMNS.join(",")));
        write_csv(&path, &samples(&[(-3, 2)])).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().nth(1), Some("-3,2,,0,0,0"));
    }
}
