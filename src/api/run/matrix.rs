//! A matrix's files: `matrix.json`, the plan of rows and cells, and each
//! cell's `cells/<name>/cell.json`, written when the cell has run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::fault::Layer;

/// One row of the seed's table: `Workload | Distribution | Failure Mode | Concurrency | Notes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub workload: String,
    pub distribution: String,
    pub failure_mode: String,
    /// `1–256` (or `1-256`: every power of two in between), `32`, or a list `1,8,64`.
    pub concurrency: String,
    #[serde(default)]
    pub notes: String,
    /// Repair mechanisms the row's cells run without, space-separated:
    /// `hint_delivery`, `read_repair` (background anti-entropy is off in
    /// every run), so that the repair rounds measure what is left.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub without: String,
}

impl Row {
    /// The mechanisms of [`Row::without`], one by one.
    pub fn mechanisms_off(&self) -> impl Iterator<Item = &str> {
        self.without.split_whitespace()
    }
}

/// One experiment of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// Index of its row in the matrix.
    pub row: usize,
    pub workload: String,
    pub distribution: String,
    pub failure_mode: String,
    pub concurrency: u32,
    /// The fault layer; `None` for runs without a fault and for crashes
    /// (a crash is a process event on either layer).
    pub layer: Option<Layer>,
}

impl Cell {
    /// The cell's folder name, e.g. `A-zipf-slow-c16-kernel`.
    pub fn name(&self) -> String {
        let layer = match self.layer {
            Some(Layer::Kernel) => "-kernel",
            Some(Layer::App) => "-app",
            None => "",
        };
        format!("{}-{}-{}-c{}{layer}", self.workload, self.distribution, self.failure_mode, self.concurrency)
    }

    /// The cell's folder in the matrix folder `out`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join("cells").join(self.name())
    }
}

/// `matrix.json`: the rows and cells as planned, and the timings every cell ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixPlan {
    pub rows: Vec<Row>,
    pub cells: Vec<PlannedCell>,
    pub quick: bool,
    pub layers: Vec<Layer>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub failure_duration_s: f64,
    pub seed: u64,
    pub cluster_procs: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCell {
    pub name: String,
    pub cell: Cell,
}

/// `cell.json`: the cell and how its run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellFile {
    pub cell: Cell,
    pub record: CellRecord,
}

/// How a cell's run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    pub name: String,
    pub seed: u64,
    pub command_line: Vec<String>,
    /// `ok`, or `failed` with the error.
    pub status: String,
    pub error: Option<String>,
    pub wall_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_file_round_trips_and_names_its_folder() {
        let cell = Cell {
            row: 2,
            workload: "A".into(),
            distribution: "zipf".into(),
            failure_mode: "slow".into(),
            concurrency: 16,
            layer: Some(Layer::Kernel),
        };
        assert_eq!(cell.dir(Path::new("m")), Path::new("m/cells/A-zipf-slow-c16-kernel"));
        let record = CellRecord {
            name: cell.name(),
            seed: 3,
            command_line: vec!["dynabed experiment".into()],
            status: "failed".into(),
            error: Some("lost writes".into()),
            wall_s: 12.5,
        };
        let file = CellFile { cell, record };
        let json = serde_json::to_string(&file).unwrap();
        assert!(json.starts_with(r#"{"cell":{"row":2,"#), "{json}");
        assert_eq!(serde_json::from_str::<CellFile>(&json).unwrap(), file);
    }
}
