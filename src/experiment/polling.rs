//! A thread that asks the cluster's nodes on a fixed beat, from its start
//! until told to stop, and keeps what it saw: the membership watch and the
//! divergence sampler are both one.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::cluster::ClusterView;

pub struct Polling<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<Vec<T>>>>,
}

/// A run that ends by an error still stops the polling.
impl<T> Drop for Polling<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl<T: Send + 'static> Polling<T> {
    /// Runs `poll(cluster, stop)` in the cluster's client namespace; `poll`
    /// returns once `stop` is set.
    pub fn start<P, F>(cluster: Arc<ClusterView>, poll: P) -> Self
    where
        P: FnOnce(Arc<ClusterView>, Arc<AtomicBool>) -> F + Send + 'static,
        F: Future<Output = anyhow::Result<Vec<T>>>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let view = cluster.clone();
            cluster.reach(move || poll(view, flag))
        });
        Polling { stop, thread: Some(thread) }
    }

    /// Stops after the round under way and returns everything seen (a
    /// panic of the polling thread is the caller's).
    pub fn finish(mut self) -> std::thread::Result<anyhow::Result<Vec<T>>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("finished once").join()
    }
}
