//! Round-trip times to each peer, and the timeouts derived from them.
//!
//! A coordinator must not wait a fixed second for a replica that usually
//! answers in a millisecond: it should give up on it about as soon as its
//! silence is unusual, and move on to the next node (sloppy quorum, or the
//! next preference-list member for a forwarded write). Every peer call feeds
//! its round trip into a per-peer estimate kept the way TCP keeps its own
//! (Jacobson/Karels, RFC 6298): a smoothed mean and a smoothed mean
//! deviation, giving the timeout `srtt + 4 × rttvar`, held between a floor
//! (scheduling noise on a shared machine is not a failure) and a cap (a peer
//! is never waited for long, whatever it did before).
//!
//! A call that timed out counts as a sample of the time it waited: the
//! estimate grows, so a peer slowed by load gets longer timeouts instead of
//! failing call after call (TCP backs off the same way).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// RFC 6298's gains: the mean moves by 1/8 of a sample's error, the
/// deviation by 1/4.
const MEAN_GAIN: f64 = 1.0 / 8.0;
const DEVIATION_GAIN: f64 = 1.0 / 4.0;
/// Deviations added to the mean: a round trip beyond it is unusual.
const DEVIATIONS: f64 = 4.0;
/// Extra wait per byte a request carries, beyond the round trip that small
/// messages measure: a megabyte value may take a while to cross, decode
/// and store on a busy machine (1 MiB/s: pessimistic, but a debug build on
/// a loaded 2-core machine has been seen to need more than 250 ms; for the
/// usual values of a few hundred bytes it adds well under a millisecond).
const TRANSFER_ALLOWANCE_PER_MIB: Duration = Duration::from_millis(1000);
/// Requests larger than this are no round-trip samples: their transfer time
/// would inflate the estimate for the small requests that follow.
pub const LARGEST_SAMPLE_BYTES: usize = 64 << 10;

/// One peer's round trips so far, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimate {
    mean_us: f64,
    deviation_us: f64,
}

impl Estimate {
    fn first(sample_us: f64) -> Self {
        Estimate { mean_us: sample_us, deviation_us: sample_us / 2.0 }
    }

    fn observe(&mut self, sample_us: f64) {
        let error = sample_us - self.mean_us;
        self.deviation_us += DEVIATION_GAIN * (error.abs() - self.deviation_us);
        self.mean_us += MEAN_GAIN * error;
    }

    fn unusual_us(&self) -> f64 {
        self.mean_us + DEVIATIONS * self.deviation_us
    }
}

/// Per-peer round-trip estimates and the timeouts they give.
pub struct Latency {
    floor: Duration,
    cap: Duration,
    peers: Mutex<HashMap<String, Estimate>>,
}

impl Latency {
    pub fn new(floor: Duration, cap: Duration) -> Self {
        Latency { floor, cap: cap.max(floor), peers: Mutex::default() }
    }

    /// The longest any peer is waited for.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Records one round trip to `peer` (or, after a timeout, the time waited).
    pub fn observe(&self, peer: &str, round_trip: Duration) {
        let sample_us = round_trip.as_secs_f64() * 1e6;
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get_mut(peer) {
            Some(estimate) => estimate.observe(sample_us),
            None => {
                peers.insert(peer.to_owned(), Estimate::first(sample_us));
            }
        }
    }

    /// How long to wait for `peer` before trying elsewhere; the cap for a
    /// peer never heard from.
    pub fn timeout(&self, peer: &str) -> Duration {
        match self.estimate(peer) {
            Some(estimate) => Duration::from_secs_f64(estimate.unusual_us() / 1e6).clamp(self.floor, self.cap),
            None => self.cap,
        }
    }

    /// The timeout for a request carrying `bytes` to `peer`: its round-trip
    /// timeout plus the time to move that much data.
    pub fn timeout_carrying(&self, peer: &str, bytes: usize) -> Duration {
        self.timeout(peer) + TRANSFER_ALLOWANCE_PER_MIB.mul_f64(bytes as f64 / f64::from(1u32 << 20))
    }

    /// The smoothed round trip to `peer`, if it was ever measured.
    pub fn mean(&self, peer: &str) -> Option<Duration> {
        self.estimate(peer).map(|e| Duration::from_secs_f64(e.mean_us / 1e6))
    }

    /// Sorts `peers` fastest first; peers never measured come last, in
    /// their given order.
    pub fn fastest_first(&self, peers: &mut [String]) {
        peers.sort_by_key(|peer| self.mean(peer).unwrap_or(Duration::MAX));
    }

    fn estimate(&self, peer: &str) -> Option<Estimate> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).get(peer).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn latency() -> Latency {
        Latency::new(20 * MS, 200 * MS)
    }

    #[test]
    fn an_unknown_peer_gets_the_cap() {
        assert_eq!(latency().timeout("node2"), 200 * MS);
        assert_eq!(latency().mean("node2"), None);
    }

    #[test]
    fn the_first_sample_allows_three_round_trips() {
        let l = latency();
        l.observe("node2", 40 * MS);
        // mean 40, deviation 20: 40 + 4 × 20.
        assert_eq!(l.timeout("node2"), 120 * MS);
    }

    #[test]
    fn a_steady_peer_converges_to_its_round_trip_and_the_floor_holds() {
        let l = latency();
        for _ in 0..200 {
            l.observe("node2", Duration::from_micros(300));
        }
        let mean = l.mean("node2").unwrap();
        assert!(mean.abs_diff(Duration::from_micros(300)) < Duration::from_micros(5), "{mean:?}");
        assert_eq!(l.timeout("node2"), 20 * MS, "sub-millisecond peers still get the floor");
    }

    #[test]
    fn jitter_widens_the_timeout_and_the_cap_bounds_it() {
        let l = latency();
        for i in 0..100 {
            l.observe("steady", 30 * MS);
            l.observe("jittery", if i % 2 == 0 { 10 * MS } else { 50 * MS });
        }
        let (steady, jittery) = (l.timeout("steady"), l.timeout("jittery"));
        assert!(steady < 35 * MS, "{steady:?}");
        assert!(jittery > 80 * MS && jittery <= 200 * MS, "{jittery:?}");
        for _ in 0..10 {
            l.observe("slow", Duration::from_secs(2));
        }
        assert_eq!(l.timeout("slow"), 200 * MS);
    }

    #[test]
    fn a_timeout_lengthens_the_next_wait() {
        let l = latency();
        for _ in 0..50 {
            l.observe("node2", 25 * MS);
        }
        let before = l.timeout("node2");
        l.observe("node2", before);
        assert!(l.timeout("node2") > before, "{:?} then {:?}", before, l.timeout("node2"));
    }

    #[test]
    fn a_large_payload_gets_time_to_cross() {
        let l = latency();
        assert_eq!(l.timeout_carrying("node2", 0), 200 * MS);
        assert_eq!(l.timeout_carrying("node2", 1 << 20), 1200 * MS, "beyond the cap: the cap bounds round trips");
    }

    #[test]
    fn fastest_first_puts_unmeasured_peers_last() {
        let l = latency();
        l.observe("b", 9 * MS);
        l.observe("c", 2 * MS);
        let mut peers: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        l.fastest_first(&mut peers);
        assert_eq!(peers, ["c", "b", "a"]);
    }
}
