//! Running client code where a cluster's nodes can be reached.
//!
//! A namespaced cluster is reachable only from its client namespace, and a
//! socket belongs to the namespace of the thread that made it. So client
//! work runs on a thread inside that namespace, on a runtime made there;
//! the host's own namespace never sends a packet towards the cluster. On
//! a loopback cluster it runs on a thread of its own too, because a runtime
//! cannot start on a thread that drives another: so async callers (tests)
//! may call blocking operations such as `manage::restart` that use it.

use std::future::Future;

/// Runs the future made by `make` on a fresh single-threaded runtime, on a
/// thread of its own: inside `client_netns` when given.
pub fn reach<T, F>(client_netns: Option<&str>, make: impl FnOnce() -> F + Send) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
    T: Send,
{
    let run = || tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(make());
    match client_netns {
        Some(namespace) => netns::namespace::run_in(namespace, run)?,
        None => std::thread::scope(|scope| scope.spawn(run).join()).unwrap_or_else(|p| std::panic::resume_unwind(p)),
    }
}
