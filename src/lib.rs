//! dynabed: a Dynamo-style replicated key-value store (`node`) and the
//! test bed that launches, breaks and measures clusters of it.

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod doctor;
pub mod experiment;
pub mod faults;
#[cfg(test)]
pub mod fuzzing;
pub mod k8s;
pub mod matrix;
pub mod node;
pub mod report;
pub mod workload;
