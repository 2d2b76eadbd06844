//! Workload generation for the benchmark and the experiment driver.

pub mod keys;
