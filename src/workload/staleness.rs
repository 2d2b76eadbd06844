//! Acknowledged writes per key, and what a read missed of them.
//!
//! DESIGN.md's definition: a read is stale when some write to its key was
//! acknowledged before the read started and the write's dot is not covered
//! by the read's clock (`X-Dynamo-Clock`). Writes are kept per key and per
//! actor sorted by counter, so the writes a clock misses are a suffix of
//! each actor's list: a fresh read costs one binary search per actor. The
//! same record is the lost-write checker's list of what must survive.

use std::collections::HashMap;

use crate::api::dot::{Clock, Dot};

#[derive(Debug, Default)]
pub struct AckedWrites {
    keys: HashMap<u32, HashMap<String, Vec<Acked>>>,
    count: u64,
}

#[derive(Debug, Clone, Copy)]
struct Acked {
    counter: u64,
    acked_us: i64,
}

/// What a stale read missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// Acknowledged writes the read did not see.
    pub versions: u32,
    /// When the oldest of them was acknowledged.
    pub oldest_acked_us: i64,
}

impl AckedWrites {
    pub fn acknowledge(&mut self, key: u32, dot: Dot, acked_us: i64) {
        let list = self.keys.entry(key).or_default().entry(dot.actor).or_default();
        let at = list.partition_point(|a| a.counter < dot.counter);
        if list.get(at).is_some_and(|a| a.counter == dot.counter) {
            return; // the same dot twice would be a store bug; count it once
        }
        list.insert(at, Acked { counter: dot.counter, acked_us });
        self.count += 1;
    }

    /// Writes to `key` acknowledged before `started_us` that `clock` misses.
    pub fn missed(&self, key: u32, clock: &Clock, started_us: i64) -> Option<Staleness> {
        let mut missed: Option<Staleness> = None;
        for (actor, list) in self.keys.get(&key)? {
            let seen = clock.get(actor);
            let unseen = &list[list.partition_point(|a| a.counter <= seen)..];
            for write in unseen.iter().filter(|w| w.acked_us < started_us) {
                let s = missed.get_or_insert(Staleness { versions: 0, oldest_acked_us: write.acked_us });
                s.versions += 1;
                s.oldest_acked_us = s.oldest_acked_us.min(write.acked_us);
            }
        }
        missed
    }

    /// Every acknowledged write, by key.
    pub fn dots(&self) -> impl Iterator<Item = (u32, Vec<Dot>)> + '_ {
        self.keys.iter().map(|(key, actors)| {
            let dots = actors
                .iter()
                .flat_map(|(actor, list)| list.iter().map(|a| Dot { actor: actor.clone(), counter: a.counter }))
                .collect();
            (*key, dots)
        })
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(text: &str) -> Dot {
        text.parse().unwrap()
    }

    #[test]
    fn a_read_misses_the_acknowledged_writes_its_clock_does_not_cover() {
        let mut acked = AckedWrites::default();
        acked.acknowledge(1, dot("n1.a:1"), 100);
        acked.acknowledge(1, dot("n1.a:3"), 300); // acknowledged before :2
        acked.acknowledge(1, dot("n1.a:2"), 350);
        acked.acknowledge(1, dot("n2.b:1"), 200);
        acked.acknowledge(2, dot("n1.a:9"), 50);

        let fresh = Clock::parse("n1.a:3,n2.b:1").unwrap();
        assert_eq!(acked.missed(1, &fresh, 1000), None);

        let behind = Clock::parse("n1.a:1").unwrap();
        assert_eq!(
            acked.missed(1, &behind, 1000),
            Some(Staleness { versions: 3, oldest_acked_us: 200 }),
            "n1.a:2, n1.a:3 and n2.b:1; the oldest acknowledgement is n2.b:1's"
        );
        assert_eq!(
            acked.missed(1, &behind, 320),
            Some(Staleness { versions: 2, oldest_acked_us: 200 }),
            "a write acknowledged after the read started does not count"
        );
        assert_eq!(acked.missed(3, &behind, 1000), None, "a key never written");
        assert_eq!(acked.missed(2, &Clock::default(), 1000).unwrap().versions, 1, "a 404 misses everything");
        assert_eq!(acked.len(), 5);
    }
}
