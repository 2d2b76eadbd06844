//! The measured run in brief: one small record per request, kept by the
//! recorder beside the CSV, for the figures that need times rather than
//! tallies — stalls, where a fault's effect began, availability per entry
//! node, clock size over time. Questions about windows the driver knows
//! only at the end (a fault's apply and heal) are answered here then.

use std::collections::BTreeMap;

use super::sample::Phase;

/// One measured request; times in µs since t0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Brief {
    pub start_us: i64,
    pub end_us: i64,
    /// Index of the entry node.
    pub entry: u16,
    /// Index of the coordinator that answered, if any answered.
    pub node: Option<u16>,
    /// Entries of the answer's clock (0 without one).
    pub vclock_entries: u16,
    pub phase: Phase,
    pub ok: bool,
}

impl Brief {
    fn touches(&self, nodes: &[u16]) -> bool {
        nodes.contains(&self.entry) || self.node.is_some_and(|n| nodes.contains(&n))
    }
}

/// The longest time without a successful request completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub longest_us: i64,
    /// When it began: the window's start, or the completion before it.
    pub started_us: i64,
}

/// Successful and total requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub requests: u64,
    pub ok: u64,
}

/// Clock sizes of one second's successful requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSecond {
    pub second: i64,
    pub requests: u64,
    pub p50: u16,
    pub max: u16,
}

/// Every measured request (the preload is left out), in no set order.
#[derive(Debug, Default)]
pub struct History {
    briefs: Vec<Brief>,
}

impl History {
    pub fn push(&mut self, brief: Brief) {
        if brief.phase != Phase::Load {
            self.briefs.push(brief);
        }
    }

    /// The longest interval within `from_us..to_us` in which no successful
    /// request completed, counting the window's edges as its bounds; `None`
    /// for an empty window.
    pub fn longest_stall(&self, from_us: i64, to_us: i64) -> Option<Stall> {
        if to_us <= from_us {
            return None;
        }
        let mut ends: Vec<i64> =
            self.briefs.iter().filter(|b| b.ok && (from_us..=to_us).contains(&b.end_us)).map(|b| b.end_us).collect();
        ends.sort_unstable();
        let bounds = std::iter::once(from_us).chain(ends).chain(std::iter::once(to_us));
        let mut previous = from_us;
        let mut stall = Stall { longest_us: 0, started_us: from_us };
        for at in bounds {
            if at - previous > stall.longest_us {
                stall = Stall { longest_us: at - previous, started_us: previous };
            }
            previous = at;
        }
        Some(stall)
    }

    /// Requests by entry node index, of the phases `phases`.
    pub fn by_entry(&self, phases: &[Phase]) -> BTreeMap<u16, Count> {
        let mut counts: BTreeMap<u16, Count> = BTreeMap::new();
        for brief in self.briefs.iter().filter(|b| phases.contains(&b.phase)) {
            let count = counts.entry(brief.entry).or_default();
            count.requests += 1;
            count.ok += brief.ok as u64;
        }
        counts
    }

    /// The start of the first request touching `targets` (as entry or
    /// coordinator) that started in `from_us..until_us` and failed or took
    /// longer than `slow_us`: where the driver's requests first met a
    /// fault's effect.
    pub fn onset(&self, targets: &[u16], from_us: i64, until_us: i64, slow_us: Option<i64>) -> Option<i64> {
        self.briefs
            .iter()
            .filter(|b| (from_us..until_us).contains(&b.start_us) && b.touches(targets))
            .filter(|b| !b.ok || slow_us.is_some_and(|slow| b.end_us - b.start_us > slow))
            .map(|b| b.start_us)
            .min()
    }

    /// The latency (µs) that a `q` share of successful requests of `phase` stayed within.
    pub fn latency_quantile(&self, phase: Phase, q: f64) -> Option<i64> {
        let mut latencies: Vec<i64> =
            self.briefs.iter().filter(|b| b.ok && b.phase == phase).map(|b| b.end_us - b.start_us).collect();
        latencies.sort_unstable();
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).copied()
    }

    /// p50 and max clock entries of the successful requests started in each
    /// whole second of the run.
    pub fn clock_per_second(&self) -> Vec<ClockSecond> {
        let mut seconds: BTreeMap<i64, Vec<u16>> = BTreeMap::new();
        for brief in self.briefs.iter().filter(|b| b.ok) {
            seconds.entry(brief.start_us.div_euclid(1_000_000)).or_default().push(brief.vclock_entries);
        }
        seconds
            .into_iter()
            .map(|(second, mut sizes)| {
                sizes.sort_unstable();
                ClockSecond {
                    second,
                    requests: sizes.len() as u64,
                    p50: sizes[sizes.len().div_ceil(2) - 1],
                    max: *sizes.last().expect("a second with requests"),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(start_us: i64, end_us: i64, entry: u16, ok: bool) -> Brief {
        Brief { start_us, end_us, entry, node: Some(0), vclock_entries: 1, phase: Phase::Warmup, ok }
    }

    fn history(briefs: &[Brief]) -> History {
        let mut history = History::default();
        briefs.iter().for_each(|b| history.push(*b));
        history
    }

    #[test]
    fn the_longest_stall_counts_the_window_edges_and_ignores_failures() {
        let h = history(&[brief(0, 100, 0, true), brief(0, 900, 1, false), brief(0, 700, 0, true)]);
        assert_eq!(h.longest_stall(0, 1000), Some(Stall { longest_us: 600, started_us: 100 }));
        assert_eq!(h.longest_stall(0, 2000), Some(Stall { longest_us: 1300, started_us: 700 }), "to the end");
        assert_eq!(h.longest_stall(50, 120), Some(Stall { longest_us: 50, started_us: 50 }), "from the start");
        assert_eq!(h.longest_stall(5, 5), None);
    }

    #[test]
    fn the_onset_is_the_first_failed_or_slow_request_touching_a_target_after_the_apply() {
        let mut slow = brief(300, 900, 2, true);
        slow.node = Some(2);
        let h = history(&[brief(100, 150, 2, false), brief(400, 450, 1, false), slow, brief(500, 510, 2, false)]);
        assert_eq!(h.onset(&[2], 200, 1000, Some(100)), Some(300), "slow, through the target");
        assert_eq!(h.onset(&[2], 200, 1000, None), Some(500), "failed only");
        assert_eq!(h.onset(&[1], 450, 1000, None), None, "started before the window");
    }

    #[test]
    fn clock_sizes_per_second_give_the_median_and_the_largest() {
        let mut briefs: Vec<Brief> =
            [1, 3, 2, 9].iter().map(|&n| Brief { vclock_entries: n, ..brief(10, 20, 0, true) }).collect();
        briefs.push(Brief { vclock_entries: 50, ..brief(10, 20, 0, false) });
        briefs.push(Brief { vclock_entries: 4, ..brief(1_500_000, 1_600_000, 0, true) });
        let seconds = history(&briefs).clock_per_second();
        assert_eq!(
            seconds,
            vec![
                ClockSecond { second: 0, requests: 4, p50: 2, max: 9 },
                ClockSecond { second: 1, requests: 1, p50: 4, max: 4 }
            ]
        );
    }

    #[test]
    fn availability_by_entry_counts_the_asked_phases() {
        let mut failing = brief(0, 1, 1, false);
        failing.phase = Phase::Failure;
        let h = history(&[brief(0, 1, 0, true), brief(0, 1, 1, true), failing]);
        assert_eq!(h.by_entry(&[Phase::Failure]), BTreeMap::from([(1, Count { requests: 1, ok: 0 })]));
        assert_eq!(h.by_entry(&[Phase::Warmup]).len(), 2);
    }
}
