//! Key choosers: which of the `keyspace` keys (`user<i>`) a request uses.
//!
//! `zipf` is YCSB's scrambled zipfian (θ = 0.99): a zipfian over a huge
//! item space, hashed (FNV-1a 64) onto the keyspace, so the popular keys are
//! spread over the keyspace rather than being `user0`, `user1`, … — the
//! generator YCSB's workloads A and B use, so the numbers compare with
//! YCSB's. `zipf-exact` is the exact Zipf law of `rand_distr`, for when the
//! unscrambled distribution is wanted. Which one ran is recorded by callers.

use rand::Rng;
use rand_distr::Distribution as _;

/// YCSB's constants for the scrambled zipfian.
const ZIPFIAN_CONSTANT: f64 = 0.99;
const ITEM_COUNT: u64 = 10_000_000_000;
/// ζ(ITEM_COUNT, 0.99), as YCSB precomputes it.
const ZETAN: f64 = 26.469_028_201_783_02;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    Uniform,
    Zipf,
    ZipfExact,
}

pub enum KeyChooser {
    Uniform { keyspace: u64 },
    Scrambled { keyspace: u64, zipfian: Zipfian },
    Exact { zipf: rand_distr::Zipf<f64> },
}

impl KeyChooser {
    pub fn new(distribution: KeyDistribution, keyspace: u64) -> Self {
        let keyspace = keyspace.max(1);
        match distribution {
            KeyDistribution::Uniform => KeyChooser::Uniform { keyspace },
            KeyDistribution::Zipf => {
                KeyChooser::Scrambled { keyspace, zipfian: Zipfian::new(ITEM_COUNT, ZIPFIAN_CONSTANT, ZETAN) }
            }
            KeyDistribution::ZipfExact => KeyChooser::Exact {
                zipf: rand_distr::Zipf::new(keyspace as f64, ZIPFIAN_CONSTANT).expect("a keyspace ≥ 1 and θ > 0"),
            },
        }
    }

    /// The index of the next key, in `0..keyspace`.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeyChooser::Uniform { keyspace } => rng.random_range(0..*keyspace),
            KeyChooser::Scrambled { keyspace, zipfian } => ycsb_hash(zipfian.next(rng)) % keyspace,
            KeyChooser::Exact { zipf } => zipf.sample(rng) as u64 - 1,
        }
    }
}

/// Gray et al.'s zipfian generator ("Quickly generating billion-record
/// synthetic databases"), as YCSB's `ZipfianGenerator` implements it.
pub struct Zipfian {
    items: f64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    fn new(items: u64, theta: f64, zetan: f64) -> Self {
        let zeta2 = 1.0 + 0.5f64.powf(theta);
        let items = items as f64;
        let eta = (1.0 - (2.0 / items).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian { items, theta, alpha: 1.0 / (1.0 - theta), zetan, eta }
    }

    fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        (self.items * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
    }
}

/// YCSB's `Utils.fnvhash64`: FNV-1a over the value's 8 bytes, low byte
/// first, then Java's `Math.abs` of the result as a signed long.
fn ycsb_hash(value: u64) -> u64 {
    (fnv1a_64(&value.to_le_bytes()) as i64).unsigned_abs()
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash: u64, &b| (hash ^ u64::from(b)).wrapping_mul(1_099_511_628_211))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn counts(distribution: KeyDistribution, keyspace: u64, samples: usize) -> Vec<usize> {
        let chooser = KeyChooser::new(distribution, keyspace);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0; keyspace as usize];
        for _ in 0..samples {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        counts
    }

    fn top_share(mut counts: Vec<usize>, top: usize) -> f64 {
        let total: usize = counts.iter().sum();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts[..top].iter().sum::<usize>() as f64 / total as f64
    }

    #[test]
    fn uniform_is_flat_and_zipf_is_skewed() {
        let uniform = counts(KeyDistribution::Uniform, 1000, 200_000);
        assert!(top_share(uniform, 10) < 0.015, "the top 1 % of keys get about 1 %");
        let scrambled = counts(KeyDistribution::Zipf, 1000, 200_000);
        let hottest = top_share(scrambled.clone(), 1);
        assert!(hottest > 0.03, "YCSB's hottest item alone is 1/ζ ≈ 3.8 %: {hottest}");
        // Over YCSB's 10^10 items the top 100 hold ~20 % of the mass, and
        // the long tail hashes evenly over the keys: the top 10 % of keys
        // get about 28 %, against 10 % for uniform.
        let top_tenth = top_share(scrambled.clone(), 100);
        assert!((0.2..0.4).contains(&top_tenth), "top 10 % of keys: {top_tenth}");
        let hot_positions: Vec<usize> = {
            let mut order: Vec<usize> = (0..1000).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(scrambled[i]));
            order[..5].to_vec()
        };
        assert!(hot_positions.iter().any(|&i| i > 100), "scrambled: hot keys are spread out {hot_positions:?}");
        let exact = counts(KeyDistribution::ZipfExact, 1000, 200_000);
        assert!(exact[0] > exact[1] && exact[1] > exact[9], "the exact law ranks key 0 first");
    }

    #[test]
    fn every_index_is_in_the_keyspace_and_the_seed_decides() {
        for distribution in [KeyDistribution::Uniform, KeyDistribution::Zipf, KeyDistribution::ZipfExact] {
            let chooser = KeyChooser::new(distribution, 10);
            let draw = |seed| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                (0..1000).map(|_| chooser.next(&mut rng)).collect::<Vec<_>>()
            };
            let first = draw(3);
            assert!(first.iter().all(|&k| k < 10));
            assert_eq!(first, draw(3), "{distribution:?} is reproducible");
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
