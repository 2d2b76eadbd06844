//! The contract: everything two sides of a wire or a file agree on.
//!
//! The node, the client, the driver, the fault injector and the report each
//! depend on this module, and none of them on another's internals: a type
//! that crosses a socket or is read back from disk by another process
//! lives here, once.

pub mod admin;
pub mod cluster;
pub mod dot;
pub mod fault;
pub mod headers;
pub mod hosts;
pub mod ring;
pub mod run;
pub mod status;

/// Milliseconds since the Unix epoch: the wall-clock unit of every
/// timestamp the contract carries (a clock entry's `ts_ms`, a fault's
/// `applied_at_ms`).
pub fn now_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
