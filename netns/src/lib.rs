//! Kernel primitives for network test beds: named network namespaces,
//! veth pairs, bridges, addresses and processes started inside a namespace.
//! (Qdiscs, firewall rules, an NFQUEUE queue and cgroups join later.)
//!
//! This crate knows nothing about keys, nodes or Dynamo; it only names and
//! owns kernel objects. The caller composes the primitives into a topology.
//!
//! - [`namespace`]: iproute2-compatible named namespaces (`/run/netns/NAME`)
//!   and [`namespace::run_in`], which runs a closure on a thread inside one.
//! - [`link`]: bridges, veth pairs, addresses over rtnetlink.
//! - [`process`]: detached processes started inside a namespace, identified
//!   by pid *and* start time.

mod caps;
mod error;
pub mod link;
pub mod namespace;
pub mod process;

pub use caps::has_netns_capabilities;
pub use error::{Error, Result};
