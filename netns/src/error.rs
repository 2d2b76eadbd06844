//! The crate's one error type: every variant names the namespace (and the
//! link or program) it was about, so a failure in a 100-namespace topology
//! says where it happened.

use std::io;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and on which kernel object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace name that iproute2 could not use as a file name, or that
    /// this crate refuses (only `[A-Za-z0-9._-]`, at most 64 bytes).
    #[error("invalid namespace name {name:?}: {reason}")]
    InvalidNamespaceName { name: String, reason: &'static str },

    /// An interface name the kernel would refuse (empty, longer than 15
    /// bytes, or containing `/`, `:` or whitespace).
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidLinkName { name: String, reason: &'static str },

    /// `create` found `/run/netns/NAME` already there.
    #[error("network namespace {namespace:?} already exists")]
    NamespaceExists { namespace: String },

    /// The namespace has no `/run/netns/NAME` file.
    #[error("network namespace {namespace:?} does not exist")]
    NamespaceNotFound { namespace: String },

    /// A system call about a namespace failed.
    #[error("network namespace {namespace:?}: {action}: {source}")]
    Namespace {
        namespace: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// An IPv4 prefix length above 32.
    #[error("invalid IPv4 prefix length /{prefix_len} (must be 0..=32)")]
    InvalidPrefixLength { prefix_len: u8 },

    /// The named link is not in that namespace.
    #[error("network namespace {namespace:?}: no link named {link:?}")]
    LinkNotFound { namespace: String, link: String },

    /// A netlink request failed (the kernel's answer is in `source`; boxed
    /// because it can carry a whole netlink message).
    #[error("network namespace {namespace:?}: link {link:?}: {action}: {source}")]
    Netlink {
        namespace: String,
        link: String,
        action: &'static str,
        #[source]
        source: Box<rtnetlink::Error>,
    },

    /// Opening a netlink socket or building the runtime that drives it failed.
    #[error("network namespace {namespace:?}: {action}: {source}")]
    NetlinkSetup {
        namespace: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// Starting a process failed.
    #[error("spawn {program:?} in {namespace}: {action}: {source}")]
    Spawn {
        /// `network namespace "x"`, or `the current network namespace`.
        namespace: String,
        program: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// `spawn_in` was given an empty argument vector.
    #[error("spawn: empty argument vector")]
    EmptyArgv,
}
