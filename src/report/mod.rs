//! Reports people can read: for a matrix (`dynabed matrix`) or for any run
//! folders (`dynabed report DIR...`), a self-contained `report.html` with
//! the table of runs, the plots and each run's manifest, a Markdown summary
//! beside it, and the kernel-versus-application comparison.

mod compare;
mod figures;
mod html;
mod markdown;
pub mod plot;
mod run;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use self::run::RunData;
use crate::api::fault::Layer;
use crate::api::run::{Cell, CellFile, CellRecord, MatrixPlan, Settings};

/// One run in a report: a matrix cell (which may not have run yet) or a run folder.
pub struct Entry {
    pub name: String,
    pub cell: Option<Cell>,
    pub record: Option<CellRecord>,
    pub run: Option<RunData>,
    /// Why the run's files could not be read.
    pub problem: Option<String>,
    pub plots: Vec<PathBuf>,
}

impl Entry {
    fn settings(&self) -> Option<&Settings> {
        self.run.as_ref().map(|r| &r.manifest.settings)
    }

    pub fn failure_mode(&self) -> String {
        match (&self.cell, self.settings()) {
            (Some(cell), _) => cell.failure_mode.clone(),
            (None, Some(settings)) => settings.failure_mode.clone(),
            (None, None) => "?".to_owned(),
        }
    }

    /// `kernel`, `app`, or `-` for runs without a layer choice (no fault, crash).
    pub fn layer_label(&self) -> String {
        if matches!(self.failure_mode().as_str(), "none" | "crash") {
            return "-".to_owned();
        }
        match (&self.cell, self.settings()) {
            (Some(cell), _) => cell.layer.map_or("-", Layer::as_str).to_owned(),
            (None, Some(settings)) => settings.fault_layer.clone(),
            (None, None) => "-".to_owned(),
        }
    }

    pub fn concurrency(&self) -> Option<u32> {
        match &self.cell {
            Some(cell) => Some(cell.concurrency),
            None => self.settings().map(|s| s.concurrency),
        }
    }

    /// The row this run belongs to: workload / distribution / failure mode.
    pub fn row_title(&self) -> String {
        match &self.cell {
            Some(c) => format!("{} / {} / {}", c.workload, c.distribution, c.failure_mode),
            None => {
                let (workload, dist) = self.settings().map_or(("?", "?"), |s| (&s.workload, &s.dist));
                format!("{workload} / {dist} / {}", self.failure_mode())
            }
        }
    }

    /// The name without its layer suffix, to pair kernel and app runs.
    pub fn base_name(&self) -> String {
        let layer = format!("-{}", self.layer_label());
        self.name.strip_suffix(&layer).unwrap_or(&self.name).to_owned()
    }

    pub fn status(&self) -> String {
        match (&self.record, &self.run, &self.problem) {
            (Some(record), _, _) => record.status.clone(),
            (None, _, Some(_)) => "unreadable".to_owned(),
            (None, Some(run), None) if run.summary.clean() => "ok".to_owned(),
            (None, Some(_), None) => "failed".to_owned(),
            (None, None, None) => "not run".to_owned(),
        }
    }
}

/// The report of the matrix in `out` (see `dynabed matrix`); returns report.html's path.
pub fn matrix(out: &Path) -> anyhow::Result<PathBuf> {
    let plan: MatrixPlan = serde_json::from_slice(
        &std::fs::read(out.join("matrix.json")).with_context(|| format!("{} holds no matrix.json", out.display()))?,
    )
    .context("reading matrix.json")?;
    let mut entries = Vec::new();
    for cell in plan.cells.into_iter().map(|planned| planned.cell) {
        let dir = cell.dir(out);
        let record = std::fs::read(dir.join("cell.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<CellFile>(&b).ok())
            .map(|file| file.record);
        let mut entry = load_entry(cell.name(), &dir, record.is_some());
        entry.cell = Some(cell);
        entry.record = record;
        entries.push(entry);
    }
    write(out, entries)
}

/// The report of run folders (each holding one or more experiments; the
/// newest is shown) into `out`.
pub fn runs(dirs: &[PathBuf], out: &Path) -> anyhow::Result<PathBuf> {
    let entries = dirs
        .iter()
        .map(|dir| {
            let name = dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
            load_entry(name.unwrap_or_else(|| dir.display().to_string()), dir, true)
        })
        .collect::<Vec<Entry>>();
    if entries.iter().all(|e| e.run.is_none()) {
        let problems: Vec<String> = entries.iter().filter_map(|e| e.problem.clone()).collect();
        bail!("no experiment run to report: {}", problems.join("; "));
    }
    write(out, entries)
}

fn load_entry(name: String, dir: &Path, expected: bool) -> Entry {
    let (run, problem) = match RunData::load(dir) {
        Ok(run) => (Some(run), None),
        Err(e) if expected => (None, Some(format!("{e:#}"))),
        Err(_) => (None, None),
    };
    Entry { name, cell: None, record: None, run, problem, plots: Vec::new() }
}

fn write(out: &Path, mut entries: Vec<Entry>) -> anyhow::Result<PathBuf> {
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    for entry in &mut entries {
        if let Some(run) = &entry.run {
            entry.plots = figures::run_figures(run, &plots.join(&entry.name))?;
        }
    }
    let mut titles: Vec<String> = Vec::new();
    for title in entries.iter().map(Entry::row_title) {
        if !titles.contains(&title) {
            titles.push(title);
        }
    }
    let mut rows: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for title in titles {
        let members: Vec<&Entry> = entries.iter().filter(|e| e.row_title() == title && e.run.is_some()).collect();
        if !members.is_empty() {
            rows.push((title, figures::row_figures(rows.len(), &members, &plots)?));
        }
    }
    let consistency = figures::consistency_figures(&entries, &plots)?;
    let pairs = compare::pairs(&entries);
    let report = Report { entries: &entries, rows: &rows, consistency: &consistency, pairs: &pairs };
    std::fs::write(out.join("report.md"), markdown::render(&report, out)).context("writing report.md")?;
    let html = out.join("report.html");
    std::fs::write(&html, html::render(&report)?).context("writing report.html")?;
    Ok(html)
}

/// Everything a rendering needs.
pub struct Report<'a> {
    pub entries: &'a [Entry],
    /// Per matrix row: its title and its figures.
    pub rows: &'a [(String, Vec<PathBuf>)],
    pub consistency: &'a [PathBuf],
    pub pairs: &'a [compare::Pair<'a>],
}

/// A column of the table of runs.
pub struct Column {
    pub name: &'static str,
    pub value: fn(&RunData) -> String,
}

pub const COLUMNS: &[Column] = &[
    Column { name: "ops/s", value: |r| number(r.summary.throughput_ops_s, 0) },
    Column { name: "read p50 ms", value: |r| number(read_latency(r).map(|q| q.p50), 2) },
    Column { name: "read p99 ms", value: |r| number(read_latency(r).map(|q| q.p99), 2) },
    Column { name: "read p99.9 ms", value: |r| number(read_latency(r).map(|q| q.p999), 2) },
    Column { name: "update p99 ms", value: |r| number(r.summary.operations.update.latency_ms.map(|q| q.p99), 2) },
    Column { name: "avail. in failure %", value: |r| percent(r.summary.availability.failure) },
    Column { name: "avail. outside %", value: |r| percent(r.summary.availability.outside_failure) },
    Column { name: "stale reads %", value: |r| percent(r.summary.staleness.stale_rate) },
    Column { name: "reads with siblings %", value: |r| percent(r.summary.siblings.rate) },
    Column { name: "write conflicts %", value: |r| percent(r.summary.write_conflicts.overall.rate) },
    Column { name: "write conflicts in failure %", value: |r| percent(compare::conflicts_in_failure(r)) },
    Column { name: "longest stall in failure ms", value: |r| number(compare::stall_in_failure_ms(r), 0) },
    Column { name: "worst entry avail. in failure %", value: |r| percent(compare::worst_entry_in_failure(r)) },
    Column { name: "lost writes", value: |r| number(Some(r.summary.lost_writes.lost as f64), 0) },
    Column {
        name: "repair rounds (max)",
        value: |r| {
            let most = r.summary.repair.keys_by_rounds.keys().max_by_key(|k| k.parse::<u32>().unwrap_or(u32::MAX));
            most.cloned().unwrap_or_else(|| "-".into())
        },
    },
    Column {
        name: "peak divergent partitions",
        value: |r| number(r.summary.divergence.as_ref().map(|d| d.peak_partitions as f64), 0),
    },
    Column {
        name: "heal to no divergence ms",
        value: |r| number(r.summary.divergence.as_ref().and_then(|d| d.heal_to_zero_ms), 0),
    },
    Column { name: "CPU saturated", value: |r| if r.summary.cpu.saturated { "yes".into() } else { "no".into() } },
];

fn read_latency(run: &RunData) -> Option<crate::api::run::Quantiles> {
    run.summary.operations.read.latency_ms
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{:.2}", v * 100.0))
}
