//! Workload generation for the benchmark and the experiment driver: key
//! choosers, YCSB operations, the clients that issue them and the recorder
//! that writes every request down.

pub mod history;
pub mod keys;
pub mod ops;
pub mod recorder;
pub mod runner;
pub mod sample;
pub mod staleness;
pub mod stats;
