//! Command-line front ends that are not a subsystem of their own.

pub mod cleanup;
pub mod exec;
pub mod fault;
pub mod kv;
