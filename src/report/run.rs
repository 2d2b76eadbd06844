//! One experiment's files, read back for the report: the summary, the
//! fault record, the manifest, the per-request CSV (the measured phases, in
//! compact form) and the nodes' counters before and after.

use std::path::Path;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;

use crate::api::run::{DivergenceSample, FaultsFile, Manifest, NodeSnapshot, NodeSnapshots, Summary};

/// One measured request.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub t_s: f64,
    pub latency_ms: f64,
    /// A workload read (an update's own read, `update_read`, is not one).
    pub read: bool,
    /// A workload update (its PUT).
    pub update: bool,
    pub ok: bool,
    /// Started in the `failure` phase: a fault verified in force, its heal not begun.
    pub in_failure: bool,
}

pub struct RunData {
    pub summary: Summary,
    pub faults: FaultsFile,
    pub manifest: Manifest,
    pub requests: Vec<Request>,
    /// Node counters summed over nodes, over the measured run (t0 to the
    /// workload's end; a restarted node counts from zero).
    pub counters: Vec<(String, u64)>,
    /// The divergence samples; none for a run made before they were taken.
    pub divergence: Vec<DivergenceSample>,
}

/// A fault's interval on the run's clock, and what it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The start of its apply.
    pub apply_started_s: f64,
    /// In force: verified (`start_s`) until its heal began (`end_s`).
    pub start_s: f64,
    pub end_s: f64,
    /// The end of its heal.
    pub healed_s: f64,
    pub label: String,
}

impl RunData {
    /// Reads the newest run in `dir` (the one whose summary sorts last).
    pub fn load(dir: &Path) -> anyhow::Result<RunData> {
        let stamp = newest_stamp(dir)?;
        let file = |kind: &str| dir.join(format!("{kind}_{stamp}.json"));
        // A run whose nodes could not be asked has no counters, not no report.
        let nodes = |which: &str| -> NodeSnapshots {
            read_json(&dir.join(format!("nodes_{stamp}")).join(which)).unwrap_or_default()
        };
        Ok(RunData {
            requests: requests(&dir.join(format!("workload_{stamp}.csv")))?,
            counters: counter_deltas(&nodes("at_t0.json"), &nodes("at_end.json")),
            divergence: divergence(&dir.join(format!("divergence_{stamp}.csv")))?,
            summary: read_json(&file("summary"))?,
            faults: read_json(&file("faults"))?,
            manifest: read_json(&file("manifest"))?,
        })
    }

    /// Each fault event: in force from its verification to the start of
    /// its heal (the run's end when it was never healed), within its apply
    /// and heal.
    pub fn windows(&self) -> Vec<Window> {
        let end_s = self.summary.duration_s;
        let seconds = |us: i64| us as f64 / 1e6;
        self.faults
            .events
            .iter()
            .filter_map(|e| {
                let apply_started_s = seconds(e.apply_started_us?);
                Some(Window {
                    apply_started_s,
                    start_s: e.applied_us.map_or(apply_started_s, seconds),
                    end_s: e.heal_started_us.map_or(end_s, seconds),
                    healed_s: e.healed_us.map_or(end_s, seconds),
                    label: format!("{} {} ({})", e.kind.as_str(), e.targets.join(","), e.layer.as_str()),
                })
            })
            .collect()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("{} is not the expected JSON", path.display()))
}

fn newest_stamp(dir: &Path) -> anyhow::Result<String> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut stamps: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some(name.strip_prefix("summary_")?.strip_suffix(".json")?.to_owned())
        })
        .collect();
    // `20261125_101500-10` is newer than `…-2`: compare the suffix as a number.
    stamps.sort_by_key(|stamp| match stamp.split_once('-') {
        Some((base, n)) => (base.to_owned(), n.parse::<u32>().unwrap_or(0)),
        None => (stamp.clone(), 1),
    });
    match stamps.pop() {
        Some(stamp) => Ok(stamp),
        None => bail!("{} holds no experiment (no summary_<stamp>.json)", dir.display()),
    }
}

fn requests(csv_path: &Path) -> anyhow::Result<Vec<Request>> {
    #[derive(serde::Deserialize)]
    struct Row {
        t_start_us: i64,
        latency_us: i64,
        op: String,
        ok: bool,
        phase: String,
    }
    let mut reader = csv::Reader::from_path(csv_path).with_context(|| format!("reading {}", csv_path.display()))?;
    let mut requests = Vec::new();
    for row in reader.deserialize::<Row>() {
        let row = row.with_context(|| format!("in {}", csv_path.display()))?;
        if row.phase != "load" {
            requests.push(Request {
                t_s: row.t_start_us as f64 / 1e6,
                latency_ms: row.latency_us as f64 / 1e3,
                read: row.op == "read",
                update: row.op == "update",
                ok: row.ok,
                in_failure: row.phase == "failure",
            });
        }
    }
    Ok(requests)
}

fn divergence(csv_path: &Path) -> anyhow::Result<Vec<DivergenceSample>> {
    if !csv_path.exists() {
        return Ok(Vec::new());
    }
    let mut reader = csv::Reader::from_path(csv_path).with_context(|| format!("reading {}", csv_path.display()))?;
    reader.deserialize().collect::<Result<_, _>>().with_context(|| format!("in {}", csv_path.display()))
}

fn counter_deltas(before: &NodeSnapshots, after: &NodeSnapshots) -> Vec<(String, u64)> {
    let counters = |snapshot: Option<&NodeSnapshot>| match snapshot {
        Some(NodeSnapshot::Status(status)) => Some(status.counters.clone()),
        _ => None,
    };
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    for (node, snapshot) in after {
        let Some(now) = counters(Some(snapshot)) else { continue };
        let then = counters(before.get(node)).unwrap_or_default();
        for (name, value) in now.iter() {
            let was = then.get(name);
            // A restarted node counts from zero again.
            *totals.entry(name.to_owned()).or_default() += if value >= was { value - was } else { value };
        }
    }
    totals.into_iter().collect()
}
