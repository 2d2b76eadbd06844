//! Running the experiment driver from tests and reading what it wrote.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::BIN;

/// The CSV's columns, in DESIGN.md's order.
pub const COLUMNS: [&str; 17] = [
    "t_start_us",
    "t_end_us",
    "latency_us",
    "client",
    "op",
    "key",
    "entry",
    "node",
    "ok",
    "status",
    "siblings",
    "siblings_after_write",
    "vclock_entries",
    "stale",
    "stale_versions",
    "stale_ms",
    "phase",
];

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Row {
    pub t_start_us: i64,
    pub t_end_us: i64,
    pub latency_us: i64,
    pub client: u32,
    pub op: String,
    pub key: String,
    pub entry: String,
    pub node: String,
    pub ok: bool,
    pub status: String,
    pub siblings: u32,
    pub siblings_after_write: Option<u32>,
    pub vclock_entries: u32,
    pub stale: Option<bool>,
    pub stale_versions: Option<u32>,
    pub stale_ms: Option<f64>,
    pub phase: String,
}

/// One run's files.
pub struct Run {
    pub output: Output,
    pub summary: Value,
    pub faults: Value,
    pub manifest: Value,
    pub rows: Vec<Row>,
    pub header: Vec<String>,
    pub repair_results: Option<Value>,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The first fault event's target and its window (applied .. heal started), µs.
    pub fn fault_window(&self) -> (String, i64, i64) {
        let event = &self.faults["events"][0];
        (
            event["targets"][0].as_str().expect("a target").to_owned(),
            event["applied_us"].as_i64().expect("applied"),
            event["heal_started_us"].as_i64().expect("healed"),
        )
    }

    /// Asserts what every finished run must show: the files, the CSV's
    /// columns, one row per request, and no lost write or leftover.
    /// Seconds the workload should run: --duration, or to the last planned
    /// heal when the run has no recovery phase.
    fn workload_end_s(&self) -> f64 {
        let settings = &self.manifest["settings"];
        let duration = settings["duration_s"].as_f64().expect("duration_s");
        let planned = |e: &Value| e["planned_at_s"].as_f64().unwrap() + e["planned_duration_s"].as_f64().unwrap();
        let last_heal = self.faults["events"].as_array().into_iter().flatten().map(planned).reduce(f64::max);
        match last_heal {
            Some(at_s) if settings["recovery"] == false => at_s.min(duration),
            _ => duration,
        }
    }

    pub fn assert_clean(&self) {
        assert!(self.output.status.success(), "the run failed: {}\n{}", self.stderr(), self.stdout());
        assert_eq!(self.header, COLUMNS, "the CSV's columns");
        let s = &self.summary;
        assert_eq!(s["rows_written"], s["requests_sent"], "one CSV row per request");
        assert_eq!(s["rows_written"].as_u64().unwrap() as usize, self.rows.len());
        assert_eq!(s["lost_writes"]["lost"], 0, "{}", self.stdout());
        assert_eq!(s["leftovers"].as_array().map(Vec::len), Some(0), "{}", s["leftovers"]);
        // However fast the machine, every client takes part, and the run is
        // measured to its end.
        let settings = &self.manifest["settings"];
        let clients = settings["concurrency"].as_u64().expect("concurrency") as usize;
        let active: HashSet<u32> = self.rows.iter().filter(|r| r.phase != "load").map(|r| r.client).collect();
        assert_eq!(active.len(), clients, "every client made measured requests");
        assert_eq!((s["duration_s"].as_f64(), &s["interrupted"]), (Some(self.workload_end_s()), &Value::Bool(false)));
        for line in ["[OVERALL], Throughput(ops/sec)", "[READ], 99thPercentileLatency(us)", "[CHECKER], LostWrites, 0"]
        {
            assert!(self.stdout().contains(line), "{line} in\n{}", self.stdout());
        }
    }
}

/// Writes a fault plan (JSON) into `dir`; returns its path for `--plan`.
pub fn plan_file(dir: &Path, plan: &str) -> String {
    let path = dir.join("plan.json");
    std::fs::write(&path, plan).unwrap();
    path.to_string_lossy().into_owned()
}

/// Runs `dynabed experiment` with `args` plus `--cluster_procs` and
/// `--out`; reads the files when the run wrote them.
pub fn drive(procs: &Path, out: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command.arg("experiment").arg("--cluster_procs").arg(procs);
    drive_with(command, out, args)
}

/// Runs `command` (the driver, however invoked) with `args` and `--out`.
pub fn drive_with(mut command: Command, out: &Path, args: &[&str]) -> Run {
    let output = command.args(args).arg("--out").arg(out).output().expect("running the experiment driver");
    let find = |kind: &str| -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(out)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{kind}_")))
            .collect();
        // Newest last: `…-10` after `…-2`, and a suffixed name after the plain one.
        found.sort_by_key(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let suffix = stem.rsplit_once('-').and_then(|(_, n)| n.parse::<u32>().ok()).unwrap_or(1);
            (stem.split('-').next().unwrap_or_default().to_owned(), suffix)
        });
        found.pop()
    };
    let json = |kind: &str| -> Value {
        find(kind).map_or(Value::Null, |p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
    };
    let (header, rows) = match find("workload") {
        Some(csv_path) => {
            let mut reader = csv::Reader::from_path(csv_path).unwrap();
            let header = reader.headers().unwrap().iter().map(str::to_owned).collect();
            (header, reader.deserialize().map(|r| r.expect("a well-formed row")).collect())
        }
        None => (Vec::new(), Vec::new()),
    };
    let repair_results =
        std::fs::read(out.join("repair_results.json")).ok().map(|b| serde_json::from_slice(&b).unwrap());
    Run {
        output,
        summary: json("summary"),
        faults: json("faults"),
        manifest: json("manifest"),
        rows,
        header,
        repair_results,
    }
}
