//! One workload request as a client saw it, sent to the recorder; and the
//! phases of a run.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::ops::Op;
use crate::api::run::EventType;
use crate::client::ClientError;

/// The phase a request started in. Around each fault event: `fault_apply`
/// from the start of its apply until it is verified in force, `failure`
/// while it is in force (until its heal starts), `fault_heal` until the
/// heal is done; `recovery` after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Load,
    Warmup,
    FaultApply,
    Failure,
    FaultHeal,
    Recovery,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Warmup => "warmup",
            Phase::FaultApply => "fault_apply",
            Phase::Failure => "failure",
            Phase::FaultHeal => "fault_heal",
            Phase::Recovery => "recovery",
        }
    }
}

/// The phases of the run so far, each with the instant it began: set by
/// the driver, looked up by every client at the start of each request.
///
/// A transition's instant is taken under the same lock as a request's
/// lookup, so the phase a request gets is exactly the one in force at its
/// start: the times the driver records for a fault's apply, verification
/// and heal are these instants, and no request stamped `failure` started
/// before the fault was verified.
#[derive(Clone)]
pub struct PhaseCell(Arc<Mutex<Vec<(Instant, Phase)>>>);

impl PhaseCell {
    pub fn new(phase: Phase) -> Self {
        PhaseCell(Arc::new(Mutex::new(vec![(Instant::now(), phase)])))
    }

    /// Enters `phase` now; returns the instant it began.
    pub fn set(&self, phase: Phase) -> Instant {
        let mut transitions = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        transitions.push((now, phase));
        now
    }

    /// The phase now.
    pub fn get(&self) -> Phase {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).last().expect("a first phase").1
    }

    /// Now, and the phase at `start` (now when `None`): an open loop's
    /// request started at its slot, which may lie before a transition it
    /// was late for.
    pub fn at(&self, start: Option<Instant>) -> (Instant, Phase) {
        let transitions = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let start = start.unwrap_or(now);
        let begun = transitions.partition_point(|(at, _)| *at <= start);
        (now, transitions[begun.saturating_sub(1)].1)
    }
}

/// How a request ended: an HTTP status, or a transport error by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Status(u16),
    /// No answer within `--op_timeout_ms`.
    Timeout,
    /// The connection could not be made (the client then backs off).
    Connect,
    /// The connection broke during the exchange.
    Broken,
    /// The answer made no sense.
    Protocol,
}

impl Outcome {
    pub fn of(result: &Result<crate::client::Answer, ClientError>) -> Outcome {
        match result {
            Ok(answer) => Outcome::Status(answer.status.as_u16()),
            Err(ClientError::Timeout(_)) => Outcome::Timeout,
            Err(ClientError::Connect { .. }) => Outcome::Connect,
            Err(ClientError::Http { .. }) => Outcome::Broken,
            Err(ClientError::Protocol { .. }) => Outcome::Protocol,
        }
    }

    /// Whether the operation did what it was asked: a read answered with
    /// what the store holds (200, 300 siblings, 404 absent), an update was
    /// acknowledged.
    pub fn ok(self, op: Op) -> bool {
        match (self, op) {
            (Outcome::Status(s), Op::Read | Op::UpdateRead) => matches!(s, 200 | 300 | 404),
            (Outcome::Status(s), Op::Update) => (200..300).contains(&s),
            _ => false,
        }
    }

    /// The history's completion type (Jepsen's): `fail` when the request
    /// certainly took no effect — it never reached a node, was refused
    /// (4xx), or was a read, which changes nothing; `info` when it may have:
    /// a write answered 5xx (some replicas may hold it) and any request
    /// that timed out or broke off.
    pub fn completion(self, op: Op) -> EventType {
        match self {
            _ if self.ok(op) => EventType::Ok,
            Outcome::Connect => EventType::Fail,
            Outcome::Status(_) if op.reads() => EventType::Fail,
            Outcome::Status(s) if (400..500).contains(&s) => EventType::Fail,
            _ => EventType::Info,
        }
    }

    /// The CSV's `status` column and the summary's error class.
    pub fn label(self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Connect => "connect".into(),
            Outcome::Broken => "broken".into(),
            Outcome::Protocol => "protocol".into(),
        }
    }
}

/// One request, as measured. Times are microseconds since the driver's
/// origin (the recorder shifts them to the run's t0).
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request should have started: its send time in a closed
    /// loop, its slot in the schedule in an open loop (an update's PUT
    /// counts from its send: its read counts from the slot).
    pub intended_us: i64,
    /// When it was actually sent (staleness counts from here).
    pub sent_us: i64,
    pub end_us: i64,
    pub client: u32,
    pub op: Op,
    pub key: u32,
    /// Index of the entry node in the driver's node list.
    pub entry: u16,
    /// The coordinator that served it, from `X-Dynamo-Coordinator`.
    pub coordinator: Option<String>,
    pub outcome: Outcome,
    pub phase: Phase,
    pub siblings: u32,
    /// An update's `X-Dynamo-Siblings`: the versions the key held after it.
    pub siblings_after: Option<u32>,
    /// The answer's `X-Dynamo-Clock`.
    pub clock: Option<String>,
    /// An update's `X-Dynamo-Dot`.
    pub dot: Option<String>,
    /// An update's value id (sent whatever the outcome).
    pub written: Option<String>,
    /// A successful read's value ids, one per sibling (none for a 404).
    pub read: Vec<String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.outcome.ok(self.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_write_that_may_have_reached_replicas_is_indeterminate() {
        let of = |outcome: Outcome, op: Op| outcome.completion(op);
        assert_eq!(of(Outcome::Status(204), Op::Update), EventType::Ok);
        assert_eq!(of(Outcome::Status(404), Op::Read), EventType::Ok, "an absent key is an answer");
        assert_eq!(of(Outcome::Status(503), Op::Read), EventType::Fail, "a read changes nothing");
        assert_eq!(of(Outcome::Status(412), Op::Update), EventType::Fail, "refused");
        assert_eq!(of(Outcome::Connect, Op::Update), EventType::Fail, "never sent");
        assert_eq!(of(Outcome::Status(503), Op::Update), EventType::Info, "some replicas may hold it");
        assert_eq!(of(Outcome::Timeout, Op::Update), EventType::Info);
        assert_eq!(of(Outcome::Timeout, Op::Read), EventType::Info);
    }
}
