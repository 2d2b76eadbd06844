//! Dots (actor, counter) and the text form of version clocks, as clients and peers see them.
//!
//! A write's dot comes back in `X-Dynamo-Dot` and a read's clock in
//! `X-Dynamo-Clock` (`node1:5,node3:2`); the driver parses both to tell
//! which acknowledged writes a read saw. The store's own clocks and objects
//! (node/version.rs) are built on the same `Dot` and the same actor rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest actor (node) name accepted from storage or the network.
pub const MAX_ACTOR_LEN: usize = 64;

/// Why a dot, or an actor name and counter, was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotError {
    #[error("invalid dot: {0}")]
    BadDot(&'static str),
    #[error("actor name must be 1 to {MAX_ACTOR_LEN} bytes, got {0} bytes")]
    BadActorLength(usize),
    #[error("actor name {0:?} has a character other than printable ASCII (and no ',')")]
    BadActorCharacter(String),
    #[error("counter for actor {0:?} is 0; counters start at 1")]
    ZeroCounter(String),
}

/// Checks a name before it becomes an actor. Actors end up in header
/// values and in the readable clock (`a:1,b:2`), so they are printable
/// ASCII without commas; contexts, dots and objects from outside are
/// checked with this before anything uses them.
pub fn validate_actor(actor: &str) -> Result<(), DotError> {
    if actor.is_empty() || actor.len() > MAX_ACTOR_LEN {
        return Err(DotError::BadActorLength(actor.len()));
    }
    if !actor.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err(DotError::BadActorCharacter(actor.to_owned()));
    }
    Ok(())
}

/// Checks one clock entry: a valid actor and a counter from 1.
pub fn validate_entry(actor: &str, counter: u64) -> Result<(), DotError> {
    validate_actor(actor)?;
    if counter == 0 {
        return Err(DotError::ZeroCounter(actor.to_owned()));
    }
    Ok(())
}

/// One event: the `counter`-th write coordinated by `actor`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub actor: String,
    pub counter: u64,
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}

impl FromStr for Dot {
    type Err = DotError;

    /// Splits at the last ':' so actor names such as `10.0.0.1:7000` work.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (actor, counter) = s.rsplit_once(':').ok_or(DotError::BadDot("expected actor:counter"))?;
        let counter = counter.parse::<u64>().map_err(|_| DotError::BadDot("counter is not an unsigned integer"))?;
        validate_entry(actor, counter)?;
        Ok(Dot { actor: actor.to_owned(), counter })
    }
}

/// A readable clock (`node1.a:5,node3.b:2`) as actor → counter.
#[derive(Debug, Default)]
pub struct Clock(Vec<(String, u64)>);

impl Clock {
    pub fn parse(text: &str) -> Result<Clock, String> {
        let entries = text
            .split(',')
            .filter(|entry| !entry.is_empty())
            .map(|entry| entry.parse::<Dot>().map(|d| (d.actor, d.counter)).map_err(|e| format!("{entry:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Clock(entries))
    }

    pub fn get(&self, actor: &str) -> u64 {
        self.0.iter().find(|(a, _)| a == actor).map_or(0, |(_, c)| *c)
    }

    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_parses_its_display_form() {
        let dot: Dot = "10.0.0.1:7000:3".parse().expect("dot");
        assert_eq!((dot.actor.as_str(), dot.counter), ("10.0.0.1:7000", 3));
        assert_eq!(dot.to_string(), "10.0.0.1:7000:3");
        for bad in ["", "n1", "n1:", ":3", "n1:x", "n1:0", "n1:-1"] {
            assert!(bad.parse::<Dot>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn clocks_parse_from_the_readable_header() {
        let clock = Clock::parse("node1.k3x9:5,node3.ab:2").unwrap();
        assert_eq!((clock.get("node1.k3x9"), clock.get("node3.ab"), clock.get("node2")), (5, 2, 0));
        assert_eq!(clock.len(), 2);
        assert!(Clock::parse("").unwrap().is_empty());
        assert!(Clock::parse("node1").is_err());
    }
}
