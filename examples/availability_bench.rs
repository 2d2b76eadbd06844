//! The `faults-availability` section of `scripts/bench`: how much of the
//! cluster one broken node takes down with it, read from the files of
//! `dynabed experiment` runs.
//!
//! It reads only the request log (`workload_<stamp>.csv`) and the fault
//! timeline (`faults_<stamp>.json`), not the summary, so its figures stay
//! comparable while the summary's fields change. The failure window is
//! [apply start, heal start] of the first fault event; the baseline is the
//! warmup before it, [0, apply start). For each run directory it prints one
//! row:
//!
//! - the longest stretch of the window in which no successful request
//!   completed anywhere (the window's edges bound the first and last gap),
//!   and where it began, after the apply started;
//! - successful requests/s in the window as a fraction of the baseline's;
//! - the p99 latency of successful requests ending in the baseline and in
//!   the window;
//! - failed requests ending in the window, and in the whole measured run.
//!
//! Rows of the `load` phase (the preload) are ignored; other phase names
//! and extra columns are tolerated, since both change.
//!
//!   availability_bench [--no_header] RUN_DIR...

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(about = "Availability of a cluster while one node is broken, from experiment run files")]
struct Args {
    /// Leave out the header line (for appending to a table).
    #[arg(long = "no_header", alias = "no-header")]
    no_header: bool,
    /// Output directories of `dynabed experiment` runs, one run each.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
}

/// The columns of a workload CSV row this analysis needs (serde skips the rest).
#[derive(Debug, Deserialize)]
struct Request {
    t_end_us: i64,
    latency_us: i64,
    ok: bool,
    phase: String,
}

/// The first fault of a run, on the run's clock (µs since the start of warmup).
#[derive(Debug, Clone, PartialEq)]
struct Fault {
    kind: String,
    layer: String,
    apply_started_us: i64,
    heal_started_us: i64,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
struct Availability {
    longest_stall_us: i64,
    stall_from_apply_us: i64,
    ok_per_s_before: f64,
    ok_per_s_during: f64,
    p99_before_us: Option<i64>,
    p99_during_us: Option<i64>,
    failed_during: u64,
    failed_all: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.no_header {
        println!(
            "{:<10} {:<7} | {:>9} {:>8} | {:>8} {:>8} {:>6} | {:>8} {:>8} | {:>11}",
            "fault",
            "layer",
            "stall ms",
            "at +ms",
            "ok/s bef",
            "ok/s dur",
            "ratio",
            "p99 bef",
            "p99 dur",
            "failed w/all"
        );
    }
    for run in &args.runs {
        let fault = read_fault(&only_file(run, "faults_", ".json")?)?;
        let requests = read_requests(&only_file(run, "workload_", ".csv")?)?;
        println!("{}", row(&fault, &measure(&fault, &requests)?));
    }
    Ok(())
}

/// The one file of `dir` named `<prefix>…<suffix>`.
fn only_file(dir: &Path, prefix: &str, suffix: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            found.push(dir.join(name.as_ref()));
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("{} has {} {prefix}*{suffix} files, not one", dir.display(), found.len()),
    }
}

fn read_fault(path: &Path) -> anyhow::Result<Fault> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_reader(BufReader::new(file)).with_context(|| format!("parsing {}", path.display()))?;
    fault_of(&json).with_context(|| format!("reading the first fault event of {}", path.display()))
}

fn fault_of(json: &serde_json::Value) -> anyhow::Result<Fault> {
    let event = json.pointer("/events/0").context("no events")?;
    let text = |name: &str| event[name].as_str().map(str::to_owned).with_context(|| format!("no {name}"));
    let time = |name: &str| event[name].as_i64().with_context(|| format!("no {name} (the fault never got there?)"));
    let fault = Fault {
        kind: text("kind")?,
        layer: text("layer")?,
        apply_started_us: time("apply_started_us")?,
        heal_started_us: time("heal_started_us")?,
    };
    ensure!(
        0 < fault.apply_started_us && fault.apply_started_us < fault.heal_started_us,
        "apply started at {} µs and heal at {} µs: no warmup or no failure window",
        fault.apply_started_us,
        fault.heal_started_us
    );
    Ok(fault)
}

fn read_requests(path: &Path) -> anyhow::Result<Vec<Request>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    let rows = reader.deserialize::<Request>().enumerate();
    rows.map(|(line, row)| row.with_context(|| format!("{} row {}", path.display(), line + 1))).collect()
}

/// The figures of one run; the preload's requests (phase `load`) do not count.
fn measure(fault: &Fault, all: &[Request]) -> anyhow::Result<Availability> {
    let requests: Vec<&Request> = all.iter().filter(|r| r.phase != "load").collect();
    let (apply, heal) = (fault.apply_started_us, fault.heal_started_us);
    let before = |r: &&Request| (0..apply).contains(&r.t_end_us);
    let during = |r: &&Request| (apply..=heal).contains(&r.t_end_us);
    let ok_before: Vec<&Request> = requests.iter().copied().filter(|r| r.ok).filter(before).collect();
    let ok_during: Vec<&Request> = requests.iter().copied().filter(|r| r.ok).filter(during).collect();
    ensure!(!ok_before.is_empty(), "no successful request in the warmup: nothing to compare with");
    let (longest_stall_us, stall_start_us) = longest_gap(apply, heal, ok_during.iter().map(|r| r.t_end_us));
    Ok(Availability {
        longest_stall_us,
        stall_from_apply_us: stall_start_us - apply,
        ok_per_s_before: per_second(ok_before.len(), apply),
        ok_per_s_during: per_second(ok_during.len(), heal - apply),
        p99_before_us: p99(ok_before.iter().map(|r| r.latency_us)),
        p99_during_us: p99(ok_during.iter().map(|r| r.latency_us)),
        failed_during: requests.iter().copied().filter(|r| !r.ok).filter(during).count() as u64,
        failed_all: requests.iter().filter(|r| !r.ok).count() as u64,
    })
}

/// The longest stretch of [from, to] holding none of `ends`, and where it
/// starts; `ends` must lie within [from, to].
fn longest_gap(from: i64, to: i64, ends: impl Iterator<Item = i64>) -> (i64, i64) {
    let mut points: Vec<i64> = ends.collect();
    points.sort_unstable();
    points.insert(0, from);
    points.push(to);
    points.windows(2).map(|w| (w[1] - w[0], w[0])).max_by_key(|&(gap, start)| (gap, -start)).unwrap_or((0, from))
}

fn per_second(count: usize, span_us: i64) -> f64 {
    count as f64 * 1e6 / span_us as f64
}

/// Nearest-rank 99th percentile.
fn p99(values: impl Iterator<Item = i64>) -> Option<i64> {
    let mut values: Vec<i64> = values.collect();
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() as f64 * 0.99).ceil() as usize;
    Some(values[rank.max(1) - 1])
}

fn row(fault: &Fault, a: &Availability) -> String {
    let ms = |us: i64| format!("{:.1}", us as f64 / 1000.0);
    let opt_ms = |us: Option<i64>| us.map_or("-".to_string(), ms);
    format!(
        "{:<10} {:<7} | {:>9} {:>8} | {:>8.0} {:>8.0} {:>6.3} | {:>8} {:>8} | {:>11}",
        fault.kind,
        fault.layer,
        ms(a.longest_stall_us),
        ms(a.stall_from_apply_us),
        a.ok_per_s_before,
        a.ok_per_s_during,
        a.ok_per_s_during / a.ok_per_s_before,
        opt_ms(a.p99_before_us),
        opt_ms(a.p99_during_us),
        format!("{}/{}", a.failed_during, a.failed_all),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(t_end_us: i64, latency_us: i64, ok: bool, phase: &str) -> Request {
        Request { t_end_us, latency_us, ok, phase: phase.into() }
    }

    #[test]
    fn the_longest_gap_is_bounded_by_the_window_edges() {
        assert_eq!(longest_gap(100, 200, [110, 120, 130].into_iter()), (70, 130));
        assert_eq!(longest_gap(100, 200, [150, 190].into_iter()), (50, 100));
        assert_eq!(longest_gap(100, 200, std::iter::empty()), (100, 100));
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        assert_eq!(p99(1..=100), Some(99));
        assert_eq!(p99(1..=1000), Some(990));
        assert_eq!(p99([7].into_iter()), Some(7));
        assert_eq!(p99(std::iter::empty()), None);
    }

    #[test]
    fn measures_the_window_against_the_warmup_and_skips_the_preload() {
        let fault =
            Fault { kind: "crash".into(), layer: "kernel".into(), apply_started_us: 1_000, heal_started_us: 2_000 };
        let requests = vec![
            request(-50, 1, false, "load"),
            request(200, 10, true, "warmup"),
            request(600, 20, true, "warmup"),
            request(1_100, 30, true, "failure"),
            request(1_200, 40, false, "failure"),
            request(1_900, 50, true, "failure"),
            request(2_500, 60, false, "recovery"),
            request(2_600, 70, true, "a_phase_added_later"),
        ];
        let a = measure(&fault, &requests).unwrap();
        assert_eq!((a.longest_stall_us, a.stall_from_apply_us), (800, 100));
        assert_eq!((a.ok_per_s_before, a.ok_per_s_during), (2_000.0, 2_000.0));
        assert_eq!((a.p99_before_us, a.p99_during_us), (Some(20), Some(50)));
        assert_eq!((a.failed_during, a.failed_all), (1, 2));
    }

    #[test]
    fn reads_the_first_event_and_refuses_one_that_never_healed() {
        let json = serde_json::json!({"clock": "µs", "events": [{"kind": "pause", "layer": "kernel",
            "apply_started_us": 5, "applied_us": 6, "heal_started_us": 9, "healed_us": 10, "new_field": 1}]});
        let want = Fault { kind: "pause".into(), layer: "kernel".into(), apply_started_us: 5, heal_started_us: 9 };
        assert_eq!(fault_of(&json).unwrap(), want);
        let unhealed = serde_json::json!({"events": [{"kind": "crash", "layer": "kernel",
            "apply_started_us": 5, "heal_started_us": null}]});
        assert!(fault_of(&unhealed).is_err());
    }

    #[test]
    fn tolerates_extra_columns() {
        let text = "t_start_us,t_end_us,latency_us,op,ok,phase,new_column\n1,5,4,read,true,warmup,x\n";
        let rows: Vec<Request> =
            csv::Reader::from_reader(text.as_bytes()).deserialize().collect::<Result<_, _>>().unwrap();
        assert_eq!((rows[0].t_end_us, rows[0].latency_us, rows[0].ok, rows[0].phase.as_str()), (5, 4, true, "warmup"));
    }
}
