//! What the delay line does to one node's packets, and the per-packet
//! draws that do it: the netem substitute's model, kept apart from the
//! queue so that its statistics can be tested without a kernel.
//!
//! Each fault is one [`Impairment`] of one address; a packet from or to
//! that address (on the fault's port, when it has one) goes through it in
//! that direction. Loss follows Gilbert's two-state model — the same one
//! netem's `loss gemodel p r` runs — so a correlated loss means the same on
//! both backends. Corruption is a drop here: on veth the checksums are
//! offloaded, so a flipped byte would reach the application unnoticed,
//! while on a wire (and with netem) the receiver's checksum drops it.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::api::fault::JitterDist;

/// What happens to the packets of one address, each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Impairment {
    /// Added to each packet (half a round trip).
    pub delay_ms: f64,
    /// The standard deviation of that delay.
    #[serde(default)]
    pub jitter_ms: f64,
    #[serde(default)]
    pub dist: JitterDist,
    #[serde(default)]
    pub loss: Option<Gilbert>,
    /// Share (0-1) sent at once, undelayed, overtaking those held.
    #[serde(default)]
    pub reorder: f64,
    /// Share (0-1) damaged, and so dropped by the receiver's checksum.
    #[serde(default)]
    pub corrupt: f64,
    /// Only packets from or to this port, when set.
    #[serde(default)]
    pub port: Option<u16>,
}

/// Gilbert's two-state loss model: a Good state that loses nothing, a Bad
/// one that loses every packet; `p` and `r` are the chances, per packet, of
/// moving from Good to Bad and back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gilbert {
    pub p: f64,
    pub r: f64,
}

impl Gilbert {
    /// The model that loses `loss` (0-1) of the packets, and a packet after
    /// a lost one with chance `correlation` (0-1; equal to `loss` for
    /// independent drops): the stationary share in Bad is p/(p+r) and
    /// P(Bad | Bad) = 1 - r.
    pub fn new(loss: f64, correlation: f64) -> Gilbert {
        let r = 1.0 - correlation;
        Gilbert { p: (loss * r / (1.0 - loss)).min(1.0), r }
    }

    /// Independent drops of `loss` (0-1).
    pub fn independent(loss: f64) -> Gilbert {
        if loss >= 1.0 {
            return Gilbert { p: 1.0, r: 0.0 };
        }
        Gilbert::new(loss, loss)
    }
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    Drop,
    /// Hold it this long; `in_order` when it may not overtake the packets
    /// before it on its way (it was not picked for reordering).
    Hold {
        delay: Duration,
        in_order: bool,
    },
}

/// Which way a packet crosses its address's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    To,
    From,
}

/// The per-fault state the draws keep: Gilbert's state per direction.
#[derive(Debug, Default)]
pub struct Draws {
    bad: HashMap<(u32, Way), bool>,
}

impl Draws {
    /// The fate of a packet going `way` through the impairments `matching`
    /// (fault id, impairment): delays add up; any loss or damage drops it.
    pub fn fate(&mut self, rng: &mut SmallRng, matching: &[(u32, Way, Impairment)]) -> Fate {
        let (mut delay_ms, mut in_order, mut dropped) = (0.0, true, false);
        for &(id, way, impairment) in matching {
            // Every model advances on every packet, dropped or not, so each
            // one's bursts keep their length whatever the others do.
            if let Some(gilbert) = impairment.loss {
                dropped |= self.advance(id, way, gilbert, rng);
            }
            dropped |= impairment.corrupt > 0.0 && rng.random_bool(impairment.corrupt.min(1.0));
            if impairment.reorder > 0.0 && rng.random_bool(impairment.reorder.min(1.0)) {
                in_order = false;
                continue;
            }
            delay_ms += spread(rng, impairment.delay_ms, impairment.jitter_ms, impairment.dist);
        }
        if dropped {
            return Fate::Drop;
        }
        let delay = if in_order { Duration::from_secs_f64(delay_ms / 1e3) } else { Duration::ZERO };
        Fate::Hold { delay, in_order }
    }

    /// Moves fault `id`'s model one packet on; true when that packet is lost.
    fn advance(&mut self, id: u32, way: Way, gilbert: Gilbert, rng: &mut SmallRng) -> bool {
        let bad = self.bad.entry((id, way)).or_default();
        let flip = if *bad { gilbert.r } else { gilbert.p };
        if flip > 0.0 && rng.random_bool(flip.min(1.0)) {
            *bad = !*bad;
        }
        *bad
    }

    /// Forgets the state of faults no longer in force.
    pub fn retain(&mut self, in_force: impl Fn(u32) -> bool) {
        self.bad.retain(|(id, _), _| in_force(*id));
    }
}

/// Pareto's shape: 3, as netem's table; the draws are cut where its table
/// of 16384 entries ends, which keeps the variance of a sample finite.
const PARETO_SHAPE: f64 = 3.0;
const PARETO_TABLE: f64 = 16384.0;

/// One delay of mean `mean_ms` and standard deviation `sd_ms`, never below 0.
pub fn spread(rng: &mut SmallRng, mean_ms: f64, sd_ms: f64, dist: JitterDist) -> f64 {
    if sd_ms <= 0.0 {
        return mean_ms;
    }
    let z = match dist {
        JitterDist::Normal => StandardNormal.sample(rng),
        JitterDist::Pareto => standard_pareto(rng.random_range(1.0 / PARETO_TABLE..1.0)),
    };
    (mean_ms + z * sd_ms).max(0.0)
}

/// A Pareto draw (shape 3, scale 1) from the uniform `u`, moved and scaled
/// to mean 0 and standard deviation 1.
fn standard_pareto(u: f64) -> f64 {
    let a = PARETO_SHAPE;
    let mean = a / (a - 1.0);
    let sd = (a / ((a - 1.0).powi(2) * (a - 2.0))).sqrt();
    (u.powf(-1.0 / a) - mean) / sd
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn mean_sd(samples: &[f64]) -> (f64, f64) {
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        (mean, (samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
    }

    #[test]
    fn spreads_have_the_asked_mean_and_deviation() {
        let mut rng = SmallRng::seed_from_u64(7);
        for dist in [JitterDist::Normal, JitterDist::Pareto] {
            let samples: Vec<f64> = (0..200_000).map(|_| spread(&mut rng, 100.0, 10.0, dist)).collect();
            let (mean, sd) = mean_sd(&samples);
            assert!((mean - 100.0).abs() < 0.5, "{dist:?}: mean {mean}");
            assert!((sd - 10.0).abs() < 1.0, "{dist:?}: sd {sd}");
        }
        let pareto: Vec<f64> = (0..10_000).map(|_| spread(&mut rng, 100.0, 10.0, JitterDist::Pareto)).collect();
        assert!(pareto.iter().all(|&d| d > 100.0 - 10.0 * 0.6), "Pareto's left edge is 0.58 sd below the mean");
    }

    /// Drops of `matching` over `n` packets, one way.
    fn drops(impairment: Impairment, n: usize) -> Vec<bool> {
        let (mut rng, mut draws) = (SmallRng::seed_from_u64(11), Draws::default());
        (0..n).map(|_| draws.fate(&mut rng, &[(1, Way::To, impairment)]) == Fate::Drop).collect()
    }

    fn loss_after_loss(dropped: &[bool]) -> f64 {
        let after_loss: Vec<bool> = dropped.windows(2).filter(|w| w[0]).map(|w| w[1]).collect();
        after_loss.iter().filter(|&&d| d).count() as f64 / after_loss.len() as f64
    }

    #[test]
    fn gilbert_loses_the_share_asked_in_bursts_of_the_correlation_asked() {
        let bursty = drops(Impairment { loss: Some(Gilbert::new(0.2, 0.6)), ..Impairment::default() }, 200_000);
        let share = bursty.iter().filter(|&&d| d).count() as f64 / bursty.len() as f64;
        assert!((share - 0.2).abs() < 0.01, "share {share}");
        assert!((loss_after_loss(&bursty) - 0.6).abs() < 0.02, "{}", loss_after_loss(&bursty));
        let independent = drops(Impairment { loss: Some(Gilbert::independent(0.2)), ..Impairment::default() }, 200_000);
        assert!((loss_after_loss(&independent) - 0.2).abs() < 0.02, "{}", loss_after_loss(&independent));
    }

    #[test]
    fn reordered_packets_skip_the_delay_and_may_overtake() {
        let (mut rng, mut draws) = (SmallRng::seed_from_u64(3), Draws::default());
        let impairment = Impairment { delay_ms: 10.0, reorder: 0.25, ..Impairment::default() };
        let fates: Vec<Fate> = (0..10_000).map(|_| draws.fate(&mut rng, &[(1, Way::To, impairment)])).collect();
        let early = fates.iter().filter(|f| **f == Fate::Hold { delay: Duration::ZERO, in_order: false }).count();
        assert!((2200..2800).contains(&early), "{early} of 10000 sent at once");
        let held = Fate::Hold { delay: Duration::from_millis(10), in_order: true };
        assert_eq!(fates.iter().filter(|f| **f == held).count(), 10_000 - early);
    }
}
