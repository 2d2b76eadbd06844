//! Command-line front ends that are not a subsystem of their own.

pub mod check;
pub mod cleanup;
pub mod exec;
pub mod fault;
pub mod kv;

/// Raises this process's soft descriptor limit to its hard limit. A node
/// holds a connection to and from every peer plus its clients, and the
/// driver one per client and node; the usual soft limit (1024, also in most
/// containers) runs out long before the hard limit the administrator allows.
pub fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the descriptor limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the descriptor limit: {e}"),
    }
}
