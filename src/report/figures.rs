//! The report's figures: each a PNG and, beside it, the CSV of the numbers
//! drawn, so anyone can re-plot them. Per run: latency over time (every
//! request a dot, p50/p99 per second, the failure window shaded and the
//! fault events marked, as Jepsen draws them), throughput and clock size
//! over time, the latency CDF on a nines axis, the repair-rounds histogram,
//! and how far the replicas diverged over time (partitions, hints pending).
//! Per matrix:
//! throughput and p99 against concurrency for each row, and staleness,
//! siblings and clock size per cell.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::plot::{self, Annotations, Chart, Scale, Series};
use super::run::{RunData, Window};
use super::Entry;
use crate::api::run::{ClockSecond, DivergenceSample, Summary};

/// What the plots of a run over time shade and mark: each fault's window
/// in force (shaded), its apply's start and its heal's end (marked), from
/// `faults_<stamp>.json`.
pub fn annotations(windows: &[Window]) -> Annotations {
    Annotations {
        shaded: windows.iter().map(|w| (w.start_s, w.end_s)).collect(),
        marks: windows
            .iter()
            .flat_map(|w| [(w.apply_started_s, w.label.clone()), (w.healed_s, "healed".to_owned())])
            .collect(),
    }
}

/// Writes a run's figures into `dir`; returns the PNGs.
pub fn run_figures(run: &RunData, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let windows = run.windows();
    write_csv(
        &dir.join("windows.csv"),
        &["apply_started_s", "in_force_s", "heal_started_s", "healed_s", "fault"],
        windows.iter().map(|w| {
            [w.apply_started_s, w.start_s, w.end_s, w.healed_s]
                .map(|s| s.to_string())
                .into_iter()
                .chain([w.label.clone()])
                .collect()
        }),
    )?;
    let notes = annotations(&windows);
    Ok(vec![
        latency_over_time(run, dir, &notes)?,
        throughput_over_time(run, dir, &notes)?,
        clock_over_time(run, dir, &notes)?,
        cdf(run, dir)?,
        repair_histogram(run, dir)?,
        divergence_over_time(run, dir, &notes)?,
        hints_over_time(run, dir, &notes)?,
    ])
}

fn latency_over_time(run: &RunData, dir: &Path, notes: &Annotations) -> anyhow::Result<PathBuf> {
    let ok: Vec<(f64, f64)> = run.requests.iter().filter(|r| r.ok).map(|r| (r.t_s, r.latency_ms)).collect();
    let seconds = per_second(&ok);
    let quantile_line = |q: f64, label: &str| Series {
        label: label.to_owned(),
        points: seconds.iter().map(|(s, lat)| (*s as f64 + 0.5, quantile(lat, q))).collect(),
    };
    let lines = [quantile_line(0.5, "p50"), quantile_line(0.99, "p99")];
    write_csv(
        &dir.join("latency.csv"),
        &["second", "requests", "p50_ms", "p99_ms"],
        seconds.iter().map(|(s, lat)| {
            vec![s.to_string(), lat.len().to_string(), fmt(quantile(lat, 0.5)), fmt(quantile(lat, 0.99))]
        }),
    )?;
    let path = dir.join("latency.png");
    let chart = Chart {
        title: "latency of every successful request",
        x_label: "seconds since the start of warmup",
        y_label: "latency (ms)",
        x_scale: Scale::Linear,
        y_scale: Scale::Log,
        annotations: notes,
    };
    plot::scatter_with_lines(&path, &chart, &ok, &lines)?;
    Ok(path)
}

fn throughput_over_time(run: &RunData, dir: &Path, notes: &Annotations) -> anyhow::Result<PathBuf> {
    // [ok, failed] requests started in each whole second.
    let seconds = run.requests.iter().map(|r| r.t_s.max(0.0) as usize + 1).max().unwrap_or(0);
    let mut counts = vec![[0usize; 2]; seconds];
    for r in &run.requests {
        counts[r.t_s.max(0.0) as usize][usize::from(!r.ok)] += 1;
    }
    write_csv(
        &dir.join("throughput.csv"),
        &["second", "ok_per_s", "failed_per_s"],
        counts.iter().enumerate().map(|(s, [ok, failed])| vec![s.to_string(), ok.to_string(), failed.to_string()]),
    )?;
    let series = |label: &str, column: usize| Series {
        label: label.to_owned(),
        points: counts.iter().enumerate().map(|(s, c)| (s as f64 + 0.5, c[column] as f64)).collect(),
    };
    let path = dir.join("throughput.png");
    let chart = Chart {
        title: "throughput",
        x_label: "seconds since the start of warmup",
        y_label: "requests per second",
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        annotations: notes,
    };
    plot::lines(&path, &chart, &[series("ok", 0), series("failed", 1)])?;
    Ok(path)
}

/// Clock entries of successful requests per second (p50 and max), from the summary.
fn clock_over_time(run: &RunData, dir: &Path, notes: &Annotations) -> anyhow::Result<PathBuf> {
    let seconds = &run.summary.clock_growth.per_second;
    write_csv(
        &dir.join("clock.csv"),
        &["second", "requests", "p50_entries", "max_entries"],
        seconds
            .iter()
            .map(|s| vec![s.second.to_string(), s.requests.to_string(), s.p50.to_string(), s.max.to_string()]),
    )?;
    let line = |label: &str, pick: fn(&ClockSecond) -> u16| Series {
        label: label.to_owned(),
        points: seconds.iter().map(|s| (s.second as f64 + 0.5, f64::from(pick(s)))).collect(),
    };
    let series = [line("p50", |s| s.p50), line("max", |s| s.max)];
    over_time(dir.join("clock.png"), "vector clock size of successful requests", "clock entries", notes, &series)
}

fn divergence_over_time(run: &RunData, dir: &Path, notes: &Annotations) -> anyhow::Result<PathBuf> {
    write_csv(
        &dir.join("divergence.csv"),
        &["t_s", "divergent_partitions", "divergent_keys", "hints_pending", "read_repairs", "ae_repairs"],
        run.divergence.iter().map(|s| {
            vec![
                fmt(s.t_us as f64 / 1e6),
                s.divergent_partitions.to_string(),
                s.divergent_keys.map_or(String::new(), |k| k.to_string()),
                s.hints_pending.to_string(),
                s.read_repairs.to_string(),
                s.ae_repairs.to_string(),
            ]
        }),
    )?;
    let mut series = vec![sampled("divergent partitions", run, |s| Some(s.divergent_partitions))];
    if run.divergence.iter().any(|s| s.divergent_keys.is_some()) {
        series.push(sampled("divergent keys (at least)", run, |s| s.divergent_keys));
    }
    over_time(dir.join("divergence.png"), "replicas that disagree", "count", notes, &series)
}

fn hints_over_time(run: &RunData, dir: &Path, notes: &Annotations) -> anyhow::Result<PathBuf> {
    let series = [sampled("hints pending", run, |s| Some(s.hints_pending))];
    over_time(dir.join("hints.png"), "hints waiting for their owner", "hints", notes, &series)
}

/// One column of the divergence samples against the run's clock.
fn sampled(label: &str, run: &RunData, value: fn(&DivergenceSample) -> Option<u64>) -> Series {
    Series {
        label: label.to_owned(),
        points: run.divergence.iter().filter_map(|s| Some((s.t_us as f64 / 1e6, value(s)? as f64))).collect(),
    }
}

/// Lines over the run's clock with the fault windows shaded.
fn over_time(
    path: PathBuf,
    title: &str,
    y_label: &str,
    notes: &Annotations,
    series: &[Series],
) -> anyhow::Result<PathBuf> {
    let chart = Chart {
        title,
        x_label: "seconds since the start of warmup",
        y_label,
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        annotations: notes,
    };
    plot::lines(&path, &chart, series)?;
    Ok(path)
}

fn cdf(run: &RunData, dir: &Path) -> anyhow::Result<PathBuf> {
    let sorted = |read: bool| {
        let mut latencies: Vec<f64> = run
            .requests
            .iter()
            .filter(|r| r.ok && if read { r.read } else { r.update })
            .map(|r| r.latency_ms)
            .collect();
        latencies.sort_by(f64::total_cmp);
        latencies
    };
    let series: Vec<Series> = [("read", sorted(true)), ("update", sorted(false))]
        .into_iter()
        .map(|(label, lat)| Series { label: label.to_owned(), points: lat.into_iter().map(|l| (0.0, l)).collect() })
        .collect();
    let nines = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0];
    write_csv(
        &dir.join("cdf.csv"),
        &["op", "quantile", "latency_ms"],
        series.iter().flat_map(|s| {
            let lat: Vec<f64> = s.points.iter().map(|p| p.1).collect();
            nines.iter().map(move |q| vec![s.label.clone(), q.to_string(), fmt(quantile(&lat, *q))]).collect::<Vec<_>>()
        }),
    )?;
    let path = dir.join("cdf.png");
    plot::latency_cdf(&path, "latency distribution (successful requests)", &series)?;
    Ok(path)
}

fn repair_histogram(run: &RunData, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut bars: Vec<(String, f64)> =
        run.summary.repair.keys_by_rounds.iter().map(|(rounds, keys)| (rounds.clone(), *keys as f64)).collect();
    bars.sort_by_key(|(rounds, _)| rounds.parse::<u32>().unwrap_or(u32::MAX));
    write_csv(&dir.join("repair.csv"), &["rounds", "keys"], bars.iter().map(|(r, k)| vec![r.clone(), k.to_string()]))?;
    let path = dir.join("repair.png");
    plot::bars(&path, "keys by repair rounds needed to converge", "keys", &bars)?;
    Ok(path)
}

/// Throughput and p99 against concurrency for the cells of one matrix row,
/// a line per fault layer.
pub fn row_figures(row: usize, entries: &[&Entry], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut layers: Vec<String> = entries.iter().map(|e| e.layer_label()).collect();
    layers.sort();
    layers.dedup();
    let series = |metric: &dyn Fn(&RunData) -> Option<f64>| -> Vec<Series> {
        layers
            .iter()
            .map(|layer| Series {
                label: layer.clone(),
                points: entries
                    .iter()
                    .filter(|e| &e.layer_label() == layer)
                    .filter_map(|e| Some((e.concurrency()? as f64, metric(e.run.as_ref()?)?)))
                    .collect(),
            })
            .collect()
    };
    let throughput = series(&|r| r.summary.throughput_ops_s);
    let p99 = series(&|r| r.summary.operations.read.latency_ms.map(|q| q.p99));
    write_csv(
        &dir.join(format!("row{row}.csv")),
        &["layer", "concurrency", "throughput_ops_s", "read_p99_ms"],
        throughput.iter().zip(&p99).flat_map(|(t, p)| {
            t.points.iter().map(move |(c, ops)| {
                let p99 = p.points.iter().find(|(pc, _)| pc == c).map_or(String::new(), |(_, v)| fmt(*v));
                vec![t.label.clone(), c.to_string(), fmt(*ops), p99]
            })
        }),
    )?;
    let none = Annotations { shaded: Vec::new(), marks: Vec::new() };
    let mut pngs = Vec::new();
    for (name, y_label, data) in [("throughput", "requests per second", &throughput), ("p99", "read p99 (ms)", &p99)] {
        let path = dir.join(format!("row{row}_{name}.png"));
        let title = format!("row {}: {name} against concurrency", row + 1);
        let chart = Chart {
            title: &title,
            x_label: "concurrency (clients)",
            y_label,
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            annotations: &none,
        };
        plot::lines(&path, &chart, data)?;
        pngs.push(path);
    }
    Ok(pngs)
}

/// Per cell: stale-read rate, how stale (p50, p99), sibling rate, clock size.
pub fn consistency_figures(entries: &[Entry], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    type Metric = fn(&Summary) -> Option<f64>;
    let metrics: [(&str, &str, Metric); 6] = [
        ("stale_rate", "stale reads (%)", |s| s.staleness.stale_rate.map(|r| r * 100.0)),
        ("stale_ms_p50", "staleness of stale reads, p50 (ms)", |s| s.staleness.stale_ms.map(|q| q.p50)),
        ("stale_ms_p99", "staleness of stale reads, p99 (ms)", |s| s.staleness.stale_ms.map(|q| q.p99)),
        ("sibling_rate", "reads with siblings (%)", |s| s.siblings.rate.map(|r| r * 100.0)),
        ("vclock_mean", "mean clock entries", |s| s.vclock_entries.mean),
        ("vclock_max", "most clock entries", |s| Some(s.vclock_entries.max as f64)),
    ];
    let runs: Vec<(&str, &RunData)> = entries.iter().filter_map(|e| Some((e.name.as_str(), e.run.as_ref()?))).collect();
    write_csv(
        &dir.join("consistency.csv"),
        &["cell", "stale_rate_pct", "stale_ms_p50", "stale_ms_p99", "sibling_rate_pct", "vclock_mean", "vclock_max"],
        runs.iter().map(|(name, run)| {
            std::iter::once(name.to_string())
                .chain(metrics.iter().map(|(_, _, m)| m(&run.summary).map_or(String::new(), fmt)))
                .collect()
        }),
    )?;
    let mut pngs = Vec::new();
    for (file, label, metric) in metrics {
        let bars: Vec<(String, f64)> =
            runs.iter().map(|(name, run)| (name.to_string(), metric(&run.summary).unwrap_or(0.0))).collect();
        let path = dir.join(format!("{file}.png"));
        plot::bars(&path, label, label, &bars)?;
        pngs.push(path);
    }
    Ok(pngs)
}

/// Values grouped by the whole second they started in.
fn per_second(points: &[(f64, f64)]) -> Vec<(i64, Vec<f64>)> {
    let mut seconds: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
    for (t, v) in points {
        seconds.entry(t.floor() as i64).or_default().push(*v);
    }
    seconds
        .into_iter()
        .map(|(s, mut v)| {
            v.sort_by(f64::total_cmp);
            (s, v)
        })
        .collect()
}

/// The `q` quantile of sorted values (nearest rank); NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        String::new()
    }
}

pub fn write_csv(path: &Path, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    writer.write_record(header)?;
    for row in rows {
        writer.write_record(&row)?;
    }
    writer.flush().with_context(|| format!("writing {}", path.display()))
}
