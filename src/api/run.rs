//! The files a run writes and the report reads back.
//!
//! The driver (`dynabed experiment`, `dynabed matrix`) writes them and the
//! report reads them, so each file's shape is a type here rather than a
//! JSON literal on one side and string lookups on the other. Field order is
//! the order on disk.

mod divergence;
mod faults;
mod files;
mod history;
mod manifest;
mod matrix;
mod summary;

pub use self::divergence::{DivergenceSample, DivergenceSummary};
pub use self::faults::{EventLog, FaultsFile, NodeSnapshot, NodeSnapshots};
pub use self::files::{Files, RepairResults};
pub use self::history::{Event, EventType, Function, ReplicaRead, Request, Value};
pub use self::manifest::{ClusterRecord, Machine, Manifest, Quorum, Seeds, Settings, Timeouts};
pub use self::matrix::{Cell, CellFile, CellRecord, MatrixPlan, PlannedCell, Row};
pub use self::summary::{
    Availability, ClockSize, CpuReport, Detection, LostWrites, OpSummary, Operations, Quantiles, RepairRound,
    RepairSummary, Siblings, Staleness, Summary, Tally, Tcp, TcpCounters,
};
pub use self::summary::{ClockGrowth, ClockSecond, ConflictRate, EntryAvailability, Stall, Stalls, WriteConflicts};
