//! Hinted handoff: hands the versions this node kept for an unreachable
//! replica back to it once it is reachable again, then forgets them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::metrics::Counters;
use super::protocol::Request;
use super::replica::Hint;
use super::rpc::Written;
use super::Node;

impl Node {
    /// Runs forever, one delivery pass per interval while delivery is on.
    pub(super) async fn deliver_hints_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.handoff_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.switches.hint_delivery.load(Ordering::Relaxed) {
                self.deliver_hints().await;
            }
        }
    }

    /// One pass: every hint whose owner is believed alive is offered to it.
    /// Delivery to an owner stops at its first failure, to be retried on a
    /// later pass.
    pub async fn deliver_hints(&self) -> usize {
        let hints = match self.replica.hints() {
            Ok(hints) => hints,
            Err(e) => {
                tracing::error!("reading hints: {e}");
                return 0;
            }
        };
        let mut delivered = 0;
        let mut failed_owner: Option<String> = None;
        for hint in hints {
            if failed_owner.as_deref() == Some(&hint.owner) || !self.membership.is_reachable(&hint.owner) {
                continue;
            }
            if self.deliver(&hint).await {
                delivered += 1;
            } else {
                failed_owner = Some(hint.owner.clone());
            }
        }
        delivered
    }

    async fn deliver(&self, hint: &Hint) -> bool {
        let request = Request::Write { key: hint.key.clone(), object: hint.encoded.clone().into(), hint_for: None };
        if self.call_fast::<Written>(&hint.owner, &request).await.is_err() {
            return false;
        }
        match self.replica.remove_hint(hint) {
            Ok(_) => {
                Counters::bump(&self.counters.hints_delivered);
                true
            }
            Err(e) => {
                tracing::error!(owner = %hint.owner, "removing a delivered hint: {e}");
                false
            }
        }
    }
}
