//! One workload request as a client saw it, sent to the recorder; and the
//! phases of a run.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::ops::Op;
use crate::client::ClientError;

/// The phase a request started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Load = 0,
    Warmup = 1,
    Failure = 2,
    Recovery = 3,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Load, Phase::Warmup, Phase::Failure, Phase::Recovery];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Warmup => "warmup",
            Phase::Failure => "failure",
            Phase::Recovery => "recovery",
        }
    }
}

/// The current phase, set by the driver and read by every client at the
/// start of each request.
#[derive(Clone)]
pub struct PhaseCell(Arc<AtomicU8>);

impl PhaseCell {
    pub fn new(phase: Phase) -> Self {
        PhaseCell(Arc::new(AtomicU8::new(phase as u8)))
    }

    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> Phase {
        Phase::ALL[self.0.load(Ordering::Relaxed) as usize]
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
            (Outcome::Status(s), Op::Read) => matches!(s, 200 | 300 | 404),
            (Outcome::Status(s), Op::Update) => (200..300).contains(&s),
            _ => false,
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
    /// loop, its slot in the schedule in an open loop.
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
    /// A read's `X-Dynamo-Clock`.
    pub clock: Option<String>,
    /// An update's `X-Dynamo-Dot`.
    pub dot: Option<String>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.outcome.ok(self.op)
    }
}
