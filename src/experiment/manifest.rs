//! `manifest_<stamp>.json` (an [`api::run::Manifest`]): what a run was —
//! its resolved settings, seeds, plan, backends, cluster, machine and
//! software — so that a result can be traced back and the run repeated.
//!
//! [`api::run::Manifest`]: crate::api::run::Manifest

use std::time::SystemTime;

use anyhow::Context;

use super::args::Resolved;
use super::Setup;
use crate::api::run::{ClusterRecord, Files, Machine, Manifest, Quorum, Seeds, Settings, Timeouts};
use crate::faults::runner::PlanRunner;
use crate::workload::keys::KeyDistribution;

impl Setup {
    /// `manifest_<stamp>.json`: what ran, with what, where.
    pub(super) fn manifest(
        &self,
        timeline: &PlanRunner,
        t0_wall: SystemTime,
        files: Files,
    ) -> anyhow::Result<Manifest> {
        let (settings, cluster, plan) = (&self.settings, &self.cluster, &self.plan);
        Ok(Manifest {
            tool: "dynabed experiment".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_revision: env!("DYNABED_GIT_REVISION").to_owned(),
            command_line: std::env::args().collect(),
            stamp: self.outputs.stamp.clone(),
            t0_wall: humantime::format_rfc3339_micros(t0_wall).to_string(),
            clock: "every time in the run's files is µs since t0, the start of warmup; the preload runs before it"
                .to_owned(),
            settings: recorded(settings)?,
            seeds: Seeds {
                seed: settings.seed,
                target: "drawn from seed when --target is not given".to_owned(),
                clients: "client i draws from SmallRng(seed × 0x9E3779B97F4A7C15 XOR i)".to_owned(),
                repair_round: "seed × 1000 + round".to_owned(),
            },
            key_chooser: key_chooser(settings.dist).to_owned(),
            plan: plan.clone(),
            plan_notes: self.notes.clone(),
            failure_phase: if plan.is_empty() {
                "nominal: no fault is applied; the failure phase is the flags' window"
            } else {
                "around each fault event: fault_apply from the start of its apply until it is verified in force, \
                 failure from then until its heal starts, fault_heal until the heal is done, then recovery"
            }
            .to_owned(),
            backends: timeline.log().iter().flat_map(|e| e.faults.iter().map(|f| f.backend)).collect(),
            timeouts: Timeouts { op_timeout_ms: settings.op_timeout_ms, backoff_ms: settings.backoff_ms },
            quorum: Quorum { n: settings.n, r: settings.r, w: settings.w },
            anti_entropy_during_run: settings.anti_entropy,
            hint_delivery_during_run: settings.hint_delivery,
            read_repair_during_run: settings.read_repair,
            cluster: ClusterRecord {
                mode: cluster.meta().mode,
                prefix: cluster.meta().prefix.clone(),
                partitions: cluster.meta().partitions,
                nodes: cluster.ids.clone(),
                client_netns: cluster.meta().client_netns.clone(),
                storage: self.statuses.first().map(|s| s.storage.clone()),
                node_command_lines: cluster.meta().nodes.iter().map(|(id, n)| (id.clone(), n.argv.clone())).collect(),
            },
            machine: machine(),
            files,
        })
    }
}

/// The settings as the manifest records them: the same fields, with each
/// choice by its flag value (the driver's enums serialize to exactly that).
fn recorded(settings: &Resolved) -> anyhow::Result<Settings> {
    serde_json::to_value(settings)
        .and_then(serde_json::from_value)
        .context("the resolved settings do not match the manifest's record of them")
}

fn key_chooser(dist: KeyDistribution) -> &'static str {
    match dist {
        KeyDistribution::Uniform => "uniform",
        KeyDistribution::Zipf => "YCSB scrambled zipfian, θ = 0.99, FNV-1a 64 over 10^10 items",
        KeyDistribution::ZipfExact => "rand_distr Zipf, s = 0.99",
    }
}

fn machine() -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let memory_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_kib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field added to the resolved settings but not to the manifest's
    /// record fails here, not at the end of a run.
    #[test]
    fn the_manifest_records_every_resolved_setting_as_it_serializes() {
        let line = ["--workload", "B", "--dist", "zipf-exact", "--update_mode", "rmw", "--fault_layer", "app"];
        let resolved = crate::experiment::args::parse(&line).resolve().unwrap();
        let settings = recorded(&resolved).unwrap();
        assert_eq!(serde_json::to_string(&settings).unwrap(), serde_json::to_string(&resolved).unwrap());
        assert_eq!((settings.workload.as_str(), settings.fault_layer.as_str()), ("B", "app"));
    }
}
