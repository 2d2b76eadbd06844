//! The `skew` fault: the node's own clock (see `node::clock`), set through
//! its `/admin/fault` hooks, and a probe that reads that clock back through
//! `/status` and compares it with the host's clock around the request.

use std::time::Duration;

use anyhow::{bail, Context};

use super::app::{amend_faults, heal_target_node};
use super::{ChangeError, Commands, Executor, Target};
use crate::api::admin::ClockSkew;
use crate::api::fault::{Backend, Undo};
use crate::api::now_ms;
use crate::api::status::ClockReading;

/// How far the measured skew may be from the one asked: 20 ms, or 5 % of
/// it when that is more (a far skew is checked as closely, relatively).
fn tolerance_ms(expected_ms: i64) -> u64 {
    (expected_ms.unsigned_abs() / 20).max(20)
}

pub struct NodeClockSkew {
    pub skew: ClockSkew,
}

impl Executor for NodeClockSkew {
    fn backend(&self) -> Backend {
        Backend::AdminApi
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        heal_target_node(target)
    }

    /// Adds the skew to the node's application faults already in force.
    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        Ok(vec![amend_faults(target, target.node, |faults| faults.clock = Some(self.skew))?])
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        let (before_ms, reading, after_ms) = read_clock(target)?;
        let asked = (reading.offset_ms, reading.drift_ppm);
        if asked != (self.skew.offset_ms, self.skew.drift_ppm) {
            bail!("{} reports a skew of {asked:?} (offset_ms, drift_ppm), not the one asked", target.name());
        }
        check_measured(self.skew, &reading, before_ms, after_ms)
    }
}

/// The host's clock, the node's clock reading, the host's clock again.
fn read_clock(target: &Target) -> anyhow::Result<(u64, ClockReading, u64)> {
    let (before_ms, status, after_ms) = target.cluster.reach(|| async {
        let mut client = target.cluster.admin(target.node, Duration::from_secs(5));
        let before_ms = now_ms();
        let status = client.status().await.with_context(|| format!("/status of {}", target.name()))?;
        Ok((before_ms, status, now_ms()))
    })?;
    let reading = status.clock.with_context(|| format!("{} reports no clock (an older dynabed?)", target.name()))?;
    Ok((before_ms, reading, after_ms))
}

/// Whether the node's reading, taken between the host's `before_ms` and
/// `after_ms`, is `skew` ahead of the host within [`tolerance_ms`]; the
/// verdict for the record.
fn check_measured(skew: ClockSkew, reading: &ClockReading, before_ms: u64, after_ms: u64) -> anyhow::Result<String> {
    let mid_ms = (before_ms + after_ms) / 2;
    let drifted = i128::from(skew.drift_ppm) * (i128::from(mid_ms) - i128::from(reading.set_at_ms)) / 1_000_000;
    let expected = (i128::from(skew.offset_ms) + drifted) as i64;
    let tolerance = i128::from(tolerance_ms(expected));
    // The node read its clock somewhere between before and after.
    let (lowest, highest) =
        (i128::from(reading.now_ms) - i128::from(after_ms), i128::from(reading.now_ms) - i128::from(before_ms));
    let measured = i128::from(reading.now_ms) - i128::from(mid_ms);
    if !(lowest - tolerance..=highest + tolerance).contains(&i128::from(expected)) {
        bail!("the node's clock is {measured} ms off the host's, not {expected} ms (±{tolerance} ms)");
    }
    Ok(format!(
        "verified offset {measured} ms (expected {expected} ms: offset_ms {}, drift_ppm {}; tolerance ±{tolerance} ms, round trip {} ms)",
        skew.offset_ms,
        skew.drift_ppm,
        after_ms - before_ms
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(now_ms: u64, skew: ClockSkew, set_at_ms: u64) -> ClockReading {
        ClockReading { now_ms, offset_ms: skew.offset_ms, drift_ppm: skew.drift_ppm, set_at_ms }
    }

    #[test]
    fn the_probe_accepts_the_asked_skew_within_its_tolerance_only() {
        let behind = ClockSkew { offset_ms: -60_000, drift_ppm: 0 };
        let host = 1_000_000_000;
        // Tolerance 5 % of a minute: 3 s.
        assert!(check_measured(behind, &reading(host - 62_000, behind, host), host, host + 10).is_ok());
        assert!(check_measured(behind, &reading(host - 64_000, behind, host), host, host + 10).is_err());
        assert!(check_measured(behind, &reading(host, behind, host), host, host + 10).is_err(), "not skewed at all");
        let small = ClockSkew { offset_ms: 100, drift_ppm: 0 };
        assert!(check_measured(small, &reading(host + 115, small, host), host, host + 10).is_ok());
        assert!(check_measured(small, &reading(host + 200, small, host), host, host + 10).is_err());
        // A clock 10 % fast set 100 s ago is 10 s ahead of its offset.
        let fast = ClockSkew { offset_ms: 0, drift_ppm: 100_000 };
        let verdict = check_measured(fast, &reading(host + 10_000, fast, host - 100_000), host, host).unwrap();
        assert!(verdict.starts_with("verified offset 10000 ms"), "{verdict}");
    }
}
