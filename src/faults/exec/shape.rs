//! The bandwidth fault: a token bucket on both ends of the node's link.

use anyhow::Context;
use netns::qdisc::{self, Tbf};

use super::{ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, Undo};

/// Each direction of the node's link limited to `rate_kbit`.
pub struct TokenBucket {
    pub rate_kbit: u64,
}

impl Executor for TokenBucket {
    fn backend(&self) -> Backend {
        Backend::Tbf
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.clear_links()
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        // A bucket of 10 ms at the rate (at least a few full frames).
        let burst_bytes = (self.rate_kbit * 1000 / 8 / 100).max(4 * 1514) as u32;
        let tbf = Tbf { rate_kbit: self.rate_kbit, burst_bytes, latency_ms: 50 };
        let mut commands = Vec::new();
        for (namespace, device) in target.links()? {
            commands.extend(qdisc::tbf(&namespace, &device, tbf)?.commands);
        }
        Ok(commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        let mut seen = Vec::new();
        for (namespace, device) in target.links()? {
            let root = qdisc::root(&namespace, &device)?.with_context(|| format!("no qdisc on {device}"))?;
            anyhow::ensure!(root.kind == "tbf", "{device} in {namespace} has {} instead of tbf", root.kind);
            seen.push(format!("{namespace}/{device}: tbf {} B/s", root.rate_bytes_per_s.unwrap_or(0)));
        }
        Ok(seen.join(", "))
    }
}
