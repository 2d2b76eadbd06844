//! `manifest_<stamp>.json`: what a run was — its resolved settings, seeds,
//! plan, backends, cluster, machine and software — so that a result can be
//! traced back and the run repeated.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::timeline::Timeline;
use super::Setup;

impl Setup {
    /// `manifest_<stamp>.json`: what ran, with what, where.
    pub(super) fn manifest(&self, timeline: &Timeline, t0_wall: SystemTime, files: &Value) -> Value {
        let (settings, cluster, plan, notes, statuses) =
            (&self.settings, &self.cluster, &self.plan, &self.notes, &self.statuses);
        let stamp = &self.outputs.stamp;
        let backends: Vec<&str> =
            timeline.log().iter().flat_map(|e| e.faults.iter().map(|f| f.backend.as_str())).collect();
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        json!({
            "tool": "dynabed experiment",
            "version": env!("CARGO_PKG_VERSION"),
            "git_revision": env!("DYNABED_GIT_REVISION"),
            "command_line": std::env::args().collect::<Vec<_>>(),
            "stamp": stamp,
            "t0_wall": humantime::format_rfc3339_micros(t0_wall).to_string(),
            "clock": "every time in the run's files is µs since t0, the start of warmup; the preload runs before it",
            "settings": settings,
            "seeds": {
                "seed": settings.seed,
                "target": "drawn from seed when --target is not given",
                "clients": "client i draws from SmallRng(seed × 0x9E3779B97F4A7C15 XOR i)",
                "repair_round": "seed × 1000 + round",
            },
            "key_chooser": match settings.dist {
                crate::workload::keys::KeyDistribution::Uniform => "uniform",
                crate::workload::keys::KeyDistribution::Zipf => "YCSB scrambled zipfian, θ = 0.99, FNV-1a 64 over 10^10 items",
                crate::workload::keys::KeyDistribution::ZipfExact => "rand_distr Zipf, s = 0.99",
            },
            "plan": plan,
            "plan_notes": notes,
            "failure_phase": if plan.is_empty() { "nominal: no fault is applied; the failure phase is the flags' window" } else { "from the first fault's apply until no fault is in force" },
            "backends": backends,
            "timeouts": { "op_timeout_ms": settings.op_timeout_ms, "backoff_ms": settings.backoff_ms },
            "quorum": { "n": settings.n, "r": settings.r, "w": settings.w },
            "anti_entropy_during_run": settings.anti_entropy,
            "hint_delivery_during_run": settings.hint_delivery,
            "cluster": {
                "mode": cluster.meta.mode,
                "prefix": cluster.meta.prefix,
                "partitions": cluster.meta.partitions,
                "nodes": cluster.ids,
                "client_netns": cluster.meta.client_netns,
                "storage": statuses.first().map(|s| s.storage.clone()),
                "node_command_lines": cluster.meta.nodes.iter().map(|(id, n)| (id.clone(), n.argv.clone())).collect::<BTreeMap<_, _>>(),
            },
            "machine": {
                "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "memory_kib": memory_kib,
                "kernel": read("/proc/sys/kernel/osrelease").trim(),
            },
            "files": files,
        })
    }
}
