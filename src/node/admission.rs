//! Caps on what strangers can make a node hold: open connections per
//! listener, and the bytes of peer frames being received at once.
//!
//! Without them, a few thousand idle connections exhaust the node's file
//! descriptors (and it stops serving everyone), and a hundred connections
//! each declaring a 16 MiB frame make it allocate gigabytes. A connection
//! over the cap is closed at once, with a log line at most once a second
//! so that a flood does not also flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use prometheus_client::metrics::counter::Counter;

use super::metrics::Counters;

/// Open connections on one listener, up to a limit.
pub struct ConnectionGate {
    listener: &'static str,
    limit: usize,
    slots: Arc<Semaphore>,
    refused: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl ConnectionGate {
    pub fn new(listener: &'static str, limit: usize) -> ConnectionGate {
        ConnectionGate {
            listener,
            limit,
            slots: Arc::new(Semaphore::new(limit)),
            refused: AtomicU64::new(0),
            last_log: Mutex::new(None),
        }
    }

    /// A slot for one accepted connection, held until it closes; `None`
    /// (and a count in `counter`) when the listener is full.
    pub fn admit(&self, counter: &Counter) -> Option<OwnedSemaphorePermit> {
        let permit = self.slots.clone().try_acquire_owned().ok();
        if permit.is_none() {
            Counters::bump(counter);
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.log_refusals();
        }
        permit
    }

    pub fn open(&self) -> usize {
        self.limit - self.slots.available_permits()
    }

    fn log_refusals(&self) {
        let mut last = self.last_log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        let refused = self.refused.swap(0, Ordering::Relaxed);
        tracing::warn!(
            listener = self.listener,
            limit = self.limit,
            refused,
            "connection limit reached: closing new {} connections until some close",
            self.listener
        );
    }
}

/// Bytes of peer frames being received at once, across all connections.
pub struct FrameBudget(Arc<Semaphore>);

impl FrameBudget {
    pub fn new(bytes: usize) -> FrameBudget {
        FrameBudget(Arc::new(Semaphore::new(bytes)))
    }

    /// Waits until `bytes` more may be buffered; the permit gives them back
    /// when dropped. Waiting is backpressure on that one connection.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let bytes = u32::try_from(bytes).expect("frames are far below 4 GiB");
        self.0.clone().acquire_many_owned(bytes).await.expect("the budget is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_gate_refuses_and_counts_until_a_slot_frees() {
        let gate = ConnectionGate::new("test", 2);
        let refused = Counter::default();
        let first = gate.admit(&refused).unwrap();
        let _second = gate.admit(&refused).unwrap();
        assert!(gate.admit(&refused).is_none());
        assert_eq!((gate.open(), refused.get()), (2, 1));
        drop(first);
        assert!(gate.admit(&refused).is_some(), "a closed connection frees its slot");
    }

    #[tokio::test]
    async fn the_frame_budget_holds_back_what_does_not_fit() {
        let budget = FrameBudget::new(100);
        let held = budget.reserve(80).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(30)).await;
        assert!(waiting.is_err(), "30 more bytes do not fit while 80 of 100 are held");
        drop(held);
        let _ = budget.reserve(30).await;
    }
}
