//! Application-level fault hooks: the comparison layer for kernel faults.
//!
//! `slow`: every message this node receives — a client request, a peer's
//! request, a peer's reply, gossip — is held on its own timer for `slow_ms`
//! before it is handled, so a request coordinated here pays about twice
//! `slow_ms` (the client's round trip and the quorum's), while a quorum
//! that can do without this node pays nothing. Nothing blocks a connection:
//! each message waits in its own task.
//!
//! `partition`: this node drops every peer message it would send to, or
//! receive from, the chosen peers (or all of them), as a network partition
//! would; its clients still reach it. The admin API is never slowed or
//! dropped, so an experiment can always heal.
//!
//! `clock`: the node's clock is skewed (see [`super::clock`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::clock::NodeClock;
use crate::api::admin::{FaultState, Partition};

#[derive(Default)]
pub struct AppFaults {
    state: RwLock<FaultState>,
    /// The node's clock, which the state's `clock` skews.
    clock: Arc<NodeClock>,
}

impl AppFaults {
    pub fn new(clock: Arc<NodeClock>) -> Self {
        AppFaults { state: Default::default(), clock }
    }

    pub fn set(&self, state: FaultState) {
        let mut held = self.state.write().expect("faults lock");
        match state.clock {
            Some(skew) => self.clock.set(skew),
            None => self.clock.clear(),
        }
        *held = state;
    }

    pub fn heal(&self) {
        self.set(FaultState::default());
    }

    pub fn current(&self) -> FaultState {
        self.state.read().expect("faults lock").clone()
    }

    /// How long a received message waits before it is handled.
    pub fn delay(&self) -> Option<Duration> {
        let ms = self.state.read().expect("faults lock").slow_ms;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Holds a received message for the slow fault's delay, if any.
    pub async fn hold(&self) {
        if let Some(delay) = self.delay() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Whether messages to or from `peer` are dropped; `None` is a peer not
    /// known by name, cut only by a partition from all.
    pub fn cuts(&self, peer: Option<&str>) -> bool {
        match &self.state.read().expect("faults lock").partition {
            Partition::None => false,
            Partition::All => true,
            Partition::Peers(peers) => peer.is_some_and(|p| peers.contains(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_cuts_the_peers_it_names() {
        let some: FaultState = serde_json::from_str(r#"{"partition": {"peers": ["node2"]}}"#).unwrap();
        let faults = AppFaults::default();
        faults.set(some);
        assert!(faults.cuts(Some("node2")) && !faults.cuts(Some("node3")) && !faults.cuts(None));
        faults.heal();
        assert!(!faults.cuts(Some("node2")) && faults.delay().is_none());
    }

    #[test]
    fn a_clock_fault_skews_the_nodes_clock_until_healed() {
        let clock = Arc::new(NodeClock::default());
        let faults = AppFaults::new(clock.clone());
        faults.set(serde_json::from_str(r#"{"clock": {"offset_ms": 86400000}}"#).unwrap());
        assert!(clock.now_ms() > crate::api::now_ms() + 86_000_000, "a day ahead");
        faults.heal();
        assert_eq!(clock.reading().offset_ms, 0);
        assert!(clock.now_ms() <= crate::api::now_ms());
    }
}
