//! `dynabed matrix`: runs every cell of the evaluation matrix on one
//! cluster, each as an ordinary experiment in its own folder, then writes
//! the report. A cell is done when its folder holds `cell.json`, so an
//! interrupted matrix resumes from the first unfinished cell.

pub mod spec;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;

use crate::api::fault::Layer;
use crate::api::run::{Cell, CellFile, CellRecord, MatrixPlan, PlannedCell, Row};
use crate::experiment::args::ExperimentArgs;

/// Rough cost of a cell besides its measured seconds (preload, repair
/// rounds, the checker), for the estimate printed before a matrix starts.
const OVERHEAD_S: f64 = 5.0;

#[derive(Debug, Clone, clap::Args)]
pub struct MatrixArgs {
    #[arg(long = "cluster_procs", visible_alias = "cluster-procs", default_value = "cluster_procs.json")]
    pub cluster_procs: PathBuf,
    /// Another matrix: JSON or CSV with the seed's columns (workload, distribution, failure_mode, concurrency, notes).
    #[arg(long)]
    pub matrix: Option<PathBuf>,
    /// Fewer concurrency points (the ends of each range) and short runs.
    #[arg(long)]
    pub quick: bool,
    /// Fault layers to run every failure cell on.
    #[arg(long, value_delimiter = ',', default_value = "kernel")]
    pub layers: Vec<Layer>,
    /// Run cells again even when they already have results.
    #[arg(long)]
    pub force: bool,
    /// The matrix's folder (cells, plots, report.html, report.md).
    #[arg(long, default_value = "matrix")]
    pub out: PathBuf,
    /// Seconds per cell [default: 60; --quick: 10].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds before each cell's failure [default: 10; --quick: 2].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Seconds each failure lasts [default: 20; --quick: 5].
    #[arg(long = "failure_duration", visible_alias = "failure-duration")]
    pub failure_duration: Option<f64>,
    /// Cell i runs with seed + i.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long = "N", default_value_t = 3)]
    pub n: usize,
    #[arg(long, default_value_t = 1000)]
    pub keyspace: u32,
}

/// The experiment's command line, so that parsing it checks it like any other.
#[derive(Parser)]
#[command(name = "dynabed experiment")]
struct ExperimentCommand {
    #[command(flatten)]
    args: ExperimentArgs,
}

pub fn run(args: MatrixArgs) -> anyhow::Result<()> {
    let rows = match &args.matrix {
        Some(path) => spec::load(path)?,
        None => spec::seed(),
    };
    let cells = spec::cells(&rows, args.quick, &args.layers)?;
    let (duration, warmup, failure) = timings(&args);
    if warmup + failure > duration {
        bail!("--warmup {warmup} + --failure_duration {failure} is longer than --duration {duration}");
    }
    crate::cluster::running::Cluster::read(&args.cluster_procs)?;
    std::fs::create_dir_all(args.out.join("cells")).with_context(|| format!("creating {}", args.out.display()))?;
    let pending: Vec<&Cell> = cells.iter().filter(|c| args.force || !is_done(&c.dir(&args.out))).collect();
    let estimate_s = pending.len() as f64 * (duration + OVERHEAD_S);
    println!(
        "matrix: {} cells, {} already done, {} to run; estimated {:.0} min ({duration} s + ~{OVERHEAD_S} s each)",
        cells.len(),
        cells.len() - pending.len(),
        pending.len(),
        estimate_s / 60.0
    );
    write_plan(&args, &rows, &cells)?;
    crate::cluster::interrupt::install()?;
    let started = Instant::now();
    for (index, cell) in cells.iter().enumerate() {
        let dir = cell.dir(&args.out);
        if !pending.contains(&cell) {
            continue;
        }
        if crate::cluster::interrupt::requested() {
            bail!("interrupted before {}: run the same command again to resume", cell.name());
        }
        println!("\n== matrix cell {}/{}: {}", index + 1, cells.len(), cell.name());
        run_cell(&args, &rows[cell.row], cell, index, &dir)?;
    }
    println!("\nmatrix: {} cells ran in {:.1} min", pending.len(), started.elapsed().as_secs_f64() / 60.0);
    let report = crate::report::matrix(&args.out)?;
    println!("report: {}", report.display());
    Ok(())
}

fn timings(args: &MatrixArgs) -> (f64, f64, f64) {
    let (duration, warmup, failure) = if args.quick { (10.0, 2.0, 5.0) } else { (60.0, 10.0, 20.0) };
    (args.duration.unwrap_or(duration), args.warmup.unwrap_or(warmup), args.failure_duration.unwrap_or(failure))
}

fn is_done(dir: &Path) -> bool {
    dir.join("cell.json").exists()
}

/// Runs one cell from a clean folder; records it in `cell.json` unless
/// the run was interrupted (then the matrix stops, and resumes here).
fn run_cell(args: &MatrixArgs, row: &Row, cell: &Cell, index: usize, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let seed = args.seed + index as u64;
    let command_line = command_line(args, row, cell, seed, dir);
    let experiment = ExperimentCommand::try_parse_from(&command_line)
        .with_context(|| format!("cell {}: {}", cell.name(), command_line.join(" ")))?;
    let started = Instant::now();
    let outcome = crate::experiment::run(experiment.args);
    if crate::cluster::interrupt::requested() {
        bail!("interrupted during {}: run the same command again to resume from it", cell.name());
    }
    let record = CellRecord {
        name: cell.name(),
        seed,
        command_line,
        status: if outcome.is_ok() { "ok" } else { "failed" }.into(),
        error: outcome.err().map(|e| format!("{e:#}")),
        wall_s: started.elapsed().as_secs_f64(),
    };
    if let Some(error) = &record.error {
        eprintln!("matrix: cell {} failed: {error}", cell.name());
    }
    crate::experiment::write_json(&dir.join("cell.json"), &CellFile { cell: cell.clone(), record })
}

fn command_line(args: &MatrixArgs, row: &Row, cell: &Cell, seed: u64, dir: &Path) -> Vec<String> {
    let (duration, warmup, failure) = timings(args);
    let mut line: Vec<String> = [
        "dynabed experiment",
        "--cluster_procs",
        &args.cluster_procs.to_string_lossy(),
        "--workload",
        &cell.workload,
        "--dist",
        &cell.distribution,
        "--failure_mode",
        &cell.failure_mode,
        "--concurrency",
        &cell.concurrency.to_string(),
        "--duration",
        &duration.to_string(),
        "--warmup",
        &warmup.to_string(),
        "--failure_duration",
        &failure.to_string(),
        "--seed",
        &seed.to_string(),
        "--N",
        &args.n.to_string(),
        "--keyspace",
        &args.keyspace.to_string(),
        "--post_repair",
        "--out",
        &dir.to_string_lossy(),
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(layer) = cell.layer {
        line.extend(["--fault_layer".to_owned(), layer.as_str().to_owned()]);
    }
    for mechanism in row.mechanisms_off() {
        line.extend([format!("--{mechanism}"), "off".to_owned()]);
    }
    line
}

/// `matrix.json`: the rows and cells as planned, for the report.
fn write_plan(args: &MatrixArgs, rows: &[Row], cells: &[Cell]) -> anyhow::Result<()> {
    let (duration, warmup, failure) = timings(args);
    let plan = MatrixPlan {
        rows: rows.to_vec(),
        cells: cells.iter().map(|c| PlannedCell { name: c.name(), cell: c.clone() }).collect(),
        quick: args.quick,
        layers: args.layers.clone(),
        duration_s: duration,
        warmup_s: warmup,
        failure_duration_s: failure,
        seed: args.seed,
        cluster_procs: args.cluster_procs.clone(),
    };
    crate::experiment::write_json(&args.out.join("matrix.json"), &plan)
}
