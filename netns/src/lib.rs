//! Kernel primitives for network test beds: named network namespaces,
//! veth pairs, bridges, addresses, processes started inside a namespace,
//! qdiscs, firewall rules, an NFQUEUE queue and cgroups.
//!
//! This crate knows nothing about keys, nodes or Dynamo; it only names and
//! owns kernel objects. The caller composes the primitives into a topology.
//!
//! - [`namespace`]: iproute2-compatible named namespaces (`/run/netns/NAME`)
//!   and [`namespace::run_in`], which runs a closure on a thread inside one.
//! - [`link`]: bridges, veth pairs, addresses over rtnetlink.
//! - [`process`]: detached processes started inside a namespace, identified
//!   by pid *and* start time.
//! - [`listener`]: which process listens at a TCP address.
//! - [`qdisc`]: netem and tbf on a link, via `tc` argument vectors.
//! - [`firewall`]: nftables tables and iptables chains a caller owns.
//! - [`nfqueue`]: an NFQUEUE reader and the delay line built on it.
//! - [`cgroup`]: CPU quotas, cgroup v1 or v2.

mod caps;
pub mod cgroup;
pub mod command;
mod error;
pub mod firewall;
pub mod link;
pub mod listener;
pub mod namespace;
pub mod nfqueue;
pub mod process;
pub mod qdisc;
pub mod throwaway;

pub use caps::{exempt_from_nproc, has_netns_capabilities};
pub use error::{Error, Result};
