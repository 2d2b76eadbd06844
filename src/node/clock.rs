//! The node's clock: the one place its time-based parts read the time, so
//! that a `skew` fault reaches all of them at once.
//!
//! Network namespaces share the host's wall clock, and a time namespace
//! offsets only CLOCK_MONOTONIC and CLOCK_BOOTTIME, so the kernel cannot
//! give one node a wrong wall clock; the node skews its own. The reading is
//! the host's clock plus `offset_ms`, plus `drift_ppm` millionths of the
//! time elapsed since the skew was set. Version timestamps (pruning by age)
//! and tombstone grace read [`NodeClock::now_ms`]. The failure detector
//! measures intervals on the monotonic clock, which a step of the wall
//! clock does not move but a fast or slow oscillator does: it reads
//! [`NodeClock::perceived`], which scales an interval by the drift only.

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::api::admin::ClockSkew;
use crate::api::status::ClockReading;

const MILLION: i128 = 1_000_000;

/// The skew in force and when it was set.
#[derive(Debug, Clone, Copy)]
struct SetSkew {
    skew: ClockSkew,
    set_at_ms: u64,
    since: Instant,
}

#[derive(Debug, Default)]
pub struct NodeClock {
    skew: RwLock<Option<SetSkew>>,
}

impl NodeClock {
    /// Skews the clock from now on; setting the skew already in force
    /// changes nothing (its drift keeps counting from when it was set).
    pub fn set(&self, skew: ClockSkew) {
        let mut held = self.skew.write().unwrap_or_else(PoisonError::into_inner);
        if held.is_none_or(|set| set.skew != skew) {
            *held = Some(SetSkew { skew, set_at_ms: crate::api::now_ms(), since: Instant::now() });
        }
    }

    /// Back to the host's clock.
    pub fn clear(&self) {
        *self.skew.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn held(&self) -> Option<SetSkew> {
        *self.skew.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds since the Unix epoch as this node believes it.
    pub fn now_ms(&self) -> u64 {
        let host_ms = crate::api::now_ms();
        self.held().map_or(host_ms, |set| skewed_ms(host_ms, set.since.elapsed(), set.skew))
    }

    /// How long `elapsed` (on the monotonic clock) seems to this node.
    pub fn perceived(&self, elapsed: Duration) -> Duration {
        self.held().map_or(elapsed, |set| scaled(elapsed, set.skew.drift_ppm))
    }

    /// The reading `/status` reports.
    pub fn reading(&self) -> ClockReading {
        let held = self.held();
        let skew = held.map(|set| set.skew).unwrap_or_default();
        ClockReading {
            now_ms: self.now_ms(),
            offset_ms: skew.offset_ms,
            drift_ppm: skew.drift_ppm,
            set_at_ms: held.map_or(0, |set| set.set_at_ms),
        }
    }
}

/// The host's `host_ms` under `skew`, set `elapsed` ago; never before the epoch.
fn skewed_ms(host_ms: u64, elapsed: Duration, skew: ClockSkew) -> u64 {
    let drifted = i128::from(skew.drift_ppm) * elapsed.as_millis() as i128 / MILLION;
    let reading = i128::from(host_ms) + i128::from(skew.offset_ms) + drifted;
    reading.clamp(0, i128::from(u64::MAX)) as u64
}

/// `elapsed` on a clock running `drift_ppm` millionths fast (slow when negative).
fn scaled(elapsed: Duration, drift_ppm: i64) -> Duration {
    let nanos = elapsed.as_nanos() as i128 * (MILLION + i128::from(drift_ppm)) / MILLION;
    Duration::from_nanos(nanos.clamp(0, i128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_drift_add_up() {
        let ahead = ClockSkew { offset_ms: 5_000, drift_ppm: 0 };
        assert_eq!(skewed_ms(1_000_000, Duration::from_secs(3600), ahead), 1_005_000);
        let behind_and_slow = ClockSkew { offset_ms: -2_000, drift_ppm: -100_000 };
        // 10 s later a clock 10 % slow has lost 1 s more.
        assert_eq!(skewed_ms(1_000_000, Duration::from_secs(10), behind_and_slow), 997_000);
        let far_behind = ClockSkew { offset_ms: -2_000_000, drift_ppm: 0 };
        assert_eq!(skewed_ms(1_000_000, Duration::ZERO, far_behind), 0, "never before the epoch");
    }

    #[test]
    fn drift_scales_intervals() {
        assert_eq!(scaled(Duration::from_secs(2), 500_000), Duration::from_secs(3));
        assert_eq!(scaled(Duration::from_secs(2), -250_000), Duration::from_millis(1500));
        let offset_only = NodeClock::default();
        offset_only.set(ClockSkew { offset_ms: -3_600_000, drift_ppm: 0 });
        assert_eq!(offset_only.perceived(Duration::from_secs(2)), Duration::from_secs(2), "a step moves no interval");
    }

    #[test]
    fn a_cleared_skew_reads_the_host_clock() {
        let clock = NodeClock::default();
        clock.set(ClockSkew { offset_ms: -3_600_000, drift_ppm: 1_000_000 });
        let host = crate::api::now_ms();
        let skewed = clock.now_ms();
        assert!(host - skewed > 3_500_000, "an hour behind: {host} vs {skewed}");
        assert_eq!(clock.perceived(Duration::from_secs(1)), Duration::from_secs(2), "twice as fast");
        let reading = clock.reading();
        assert_eq!((reading.offset_ms, reading.drift_ppm), (-3_600_000, 1_000_000));
        assert!(reading.set_at_ms >= host - 60_000 && reading.set_at_ms <= host);

        clock.clear();
        let (before, read, after) = (crate::api::now_ms(), clock.now_ms(), crate::api::now_ms());
        assert!((before..=after).contains(&read));
        assert_eq!(clock.perceived(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(clock.reading().set_at_ms, 0);
    }

    #[test]
    fn setting_the_same_skew_again_keeps_its_start() {
        let clock = NodeClock::default();
        let skew = ClockSkew { offset_ms: 10, drift_ppm: 5 };
        clock.set(skew);
        let first = clock.held().unwrap().since;
        clock.set(skew);
        assert_eq!(clock.held().unwrap().since, first);
        clock.set(ClockSkew { offset_ms: 11, ..skew });
        assert_eq!(clock.held().unwrap().skew.offset_ms, 11);
    }
}
