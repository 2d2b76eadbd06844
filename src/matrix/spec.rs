//! The evaluation matrix as data: the seed's table (section 5) by default,
//! or another one from a JSON or CSV file with the same columns, expanded
//! into cells — one experiment each.

use std::path::Path;

use anyhow::{bail, Context};

use crate::api::fault::Layer;
use crate::api::run::{Cell, Row};

/// The seed's evaluation matrix.
pub fn seed() -> Vec<Row> {
    let row = |w: &str, d: &str, f: &str, c: &str, n: &str| Row {
        workload: w.into(),
        distribution: d.into(),
        failure_mode: f.into(),
        concurrency: c.into(),
        notes: n.into(),
        without: String::new(),
    };
    // Hints and read repair would heal the partition's divergence before
    // the repair rounds start: without them the rounds measure
    // anti-entropy alone on what the partition left.
    let divergence = Row {
        without: "hint_delivery read_repair".into(),
        ..row("A", "uniform", "partition", "16–128", "divergence & repair")
    };
    vec![
        row("A", "uniform", "none", "1–256", "baseline"),
        row("A", "zipf", "slow", "1–64", "hotspot behavior"),
        divergence,
        row("B", "uniform", "crash", "1–64", "write conflict rates"),
        row("B", "zipf", "partition", "32", "vector clock growth"),
    ]
}

/// Reads a matrix: a JSON list of rows, or a CSV with the seed's columns
/// (`workload,distribution,failure_mode,concurrency,notes`, and optionally
/// `without`).
pub fn load(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the matrix {}", path.display()))?;
    let rows: Vec<Row> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).with_context(|| format!("{}: a JSON matrix is a list of rows", path.display()))?
    } else {
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
        reader
            .deserialize()
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: a CSV matrix has the columns {}", path.display(), CSV_COLUMNS))?
    };
    if rows.is_empty() {
        bail!("{}: the matrix has no rows", path.display());
    }
    Ok(rows)
}

const CSV_COLUMNS: &str = "workload,distribution,failure_mode,concurrency,notes";

/// The cells of `rows`: every concurrency of each row (only the ends of a
/// range when `quick`), on each of `layers` for rows with a network or
/// node fault.
pub fn cells(rows: &[Row], quick: bool, layers: &[Layer]) -> anyhow::Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        check(row).with_context(|| format!("matrix row {}", index + 1))?;
        let levels =
            concurrency_levels(&row.concurrency, quick).with_context(|| format!("matrix row {}", index + 1))?;
        let row_layers: Vec<Option<Layer>> = match row.failure_mode.as_str() {
            "none" | "crash" => vec![None],
            _ => layers.iter().copied().map(Some).collect(),
        };
        for concurrency in levels {
            for layer in &row_layers {
                cells.push(Cell {
                    row: index,
                    workload: row.workload.to_uppercase(),
                    distribution: row.distribution.clone(),
                    failure_mode: row.failure_mode.clone(),
                    concurrency,
                    layer: *layer,
                });
            }
        }
    }
    let mut names: Vec<String> = cells.iter().map(Cell::name).collect();
    names.sort();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "the matrix makes cell {} twice: rows must differ in workload, distribution, failure mode or concurrency",
            twice[0]
        );
    }
    Ok(cells)
}

fn check(row: &Row) -> anyhow::Result<()> {
    if !["a", "b"].contains(&row.workload.to_lowercase().as_str()) {
        bail!("workload {:?}: A or B", row.workload);
    }
    if !["uniform", "zipf", "zipf-exact"].contains(&row.distribution.as_str()) {
        bail!("distribution {:?}: uniform, zipf or zipf-exact", row.distribution);
    }
    let modes = ["none", "crash", "slow", "single_partition", "partition", "pause", "loss"];
    if !modes.contains(&row.failure_mode.as_str()) {
        bail!("failure mode {:?}: one of {}", row.failure_mode, modes.join(", "));
    }
    if let Some(other) = row.mechanisms_off().find(|m| !MECHANISMS_OFF.contains(m)) {
        bail!("without {other:?}: the repair mechanisms a row can turn off are {}", MECHANISMS_OFF.join(", "));
    }
    Ok(())
}

/// What a row's `without` may name: driver flags `--<name> off`.
pub const MECHANISMS_OFF: [&str; 2] = ["hint_delivery", "read_repair"];

/// `1–256` → 1, 2, 4, … 256 (`quick`: 1 and 256); `32` → 32; `1,8,64` as given.
fn concurrency_levels(text: &str, quick: bool) -> anyhow::Result<Vec<u32>> {
    let number = |s: &str| -> anyhow::Result<u32> {
        let n: u32 = s.trim().parse().with_context(|| format!("concurrency {s:?} is not a number"))?;
        if n == 0 {
            bail!("concurrency must be at least 1");
        }
        Ok(n)
    };
    let text = text.trim();
    let levels = if let Some((low, high)) = text.split_once(['–', '-']) {
        let (low, high) = (number(low)?, number(high)?);
        if low > high {
            bail!("concurrency range {text:?} runs backwards");
        }
        let mut levels: Vec<u32> =
            std::iter::successors(Some(low), |c| c.checked_mul(2)).take_while(|c| *c < high).collect();
        levels.push(high);
        levels
    } else {
        text.split(',').map(number).collect::<anyhow::Result<Vec<u32>>>()?
    };
    Ok(if quick && levels.len() > 2 { vec![levels[0], levels[levels.len() - 1]] } else { levels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_matrix_expands_to_its_cells() {
        let all = cells(&seed(), false, &[Layer::Kernel]).unwrap();
        let levels = |row: usize| all.iter().filter(|c| c.row == row).map(|c| c.concurrency).collect::<Vec<_>>();
        assert_eq!(levels(0), [1, 2, 4, 8, 16, 32, 64, 128, 256]);
        assert_eq!(levels(2), [16, 32, 64, 128]);
        assert_eq!(levels(4), [32]);
        assert_eq!(all.len(), 9 + 7 + 4 + 7 + 1);
        let quick = cells(&seed(), true, &[Layer::Kernel, Layer::App]).unwrap();
        let names: Vec<String> = quick.iter().map(Cell::name).collect();
        assert_eq!(
            names[..4],
            ["A-uniform-none-c1", "A-uniform-none-c256", "A-zipf-slow-c1-kernel", "A-zipf-slow-c1-app"]
        );
        assert!(names.contains(&"B-uniform-crash-c64".to_owned()), "crashes run once: {names:?}");
        assert_eq!(quick.len(), 2 + 4 + 4 + 2 + 2);
        let without = |row: usize| seed()[row].mechanisms_off().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(seed()[2].notes, "divergence & repair");
        assert_eq!(without(2), ["hint_delivery", "read_repair"], "the divergence row runs on anti-entropy alone");
        assert!([0, 1, 3, 4].iter().all(|&row| without(row).is_empty()), "every other row keeps every mechanism");
    }

    #[test]
    fn matrices_load_from_json_or_csv_and_bad_rows_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("m.csv");
        std::fs::write(&csv, "workload,distribution,failure_mode,concurrency,notes\nB, zipf ,slow,\"2,8\",mine\n")
            .unwrap();
        let rows = load(&csv).unwrap();
        assert_eq!(
            cells(&rows, false, &[Layer::App]).unwrap().iter().map(|c| c.concurrency).collect::<Vec<_>>(),
            [2, 8]
        );
        let json = dir.path().join("m.json");
        std::fs::write(
            &json,
            r#"[{"workload": "A", "distribution": "uniform", "failure_mode": "melt", "concurrency": "4"}]"#,
        )
        .unwrap();
        let err = format!("{:#}", cells(&load(&json).unwrap(), false, &[Layer::Kernel]).unwrap_err());
        assert!(err.contains("matrix row 1") && err.contains("melt"), "{err}");
        assert!(concurrency_levels("64-16", false).is_err());
        let twice = [seed()[4].clone(), seed()[4].clone()];
        assert!(format!("{:#}", cells(&twice, false, &[Layer::Kernel]).unwrap_err()).contains("twice"));
        let json = dir.path().join("w.json");
        std::fs::write(
            &json,
            r#"[{"workload": "A", "distribution": "uniform", "failure_mode": "crash", "concurrency": "4", "without": "gossip"}]"#,
        )
        .unwrap();
        let err = format!("{:#}", cells(&load(&json).unwrap(), false, &[Layer::Kernel]).unwrap_err());
        assert!(err.contains("\"gossip\"") && err.contains("hint_delivery, read_repair"), "{err}");
    }
}
