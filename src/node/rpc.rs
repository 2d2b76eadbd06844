//! The node's side of the peer transport: one request to one peer, and
//! the answer the request expects.
//!
//! Every peer request goes through here, so that application-level faults
//! apply to all of them: a cut message is never sent and its caller waits
//! out its timeout, as across a real partition; a reply is held like any
//! received message. A transport failure (refused, reset, timed out) makes a
//! known peer suspect (see [`membership`](super::membership)), and every
//! plain exchange's round trip feeds the peer's latency estimate (see
//! [`latency`](super::latency)). Callers
//! name the answer they expect (`call::<Written>`) and get it, or an
//! [`RpcError`] saying why not — never a `Response` to pattern-match.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::latency::LARGEST_SAMPLE_BYTES;
use super::membership::Digest;
use super::metrics::Counters;
use super::peer::{PeerError, Traffic};
use super::protocol::{Outcome, RemoteError, Request, Response};
use super::Node;

/// Why a peer request brought no answer of the expected kind.
#[derive(Debug, thiserror::Error)]
pub(super) enum RpcError {
    /// The transport failed, timed out or was cut; or the peer is unknown.
    #[error("unreachable")]
    Unreachable,
    /// The peer answered with an error.
    #[error("refused: {0}")]
    Refused(String),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// An answer a request expects, picked out of the peer's `Response`.
pub(super) trait Answer: Sized {
    /// The answer, or the response given back when it is of another kind.
    fn pick(response: Response) -> Result<Self, Response>;
}

/// Any response: for exchanges with more than one possible answer.
impl Answer for Response {
    fn pick(response: Response) -> Result<Self, Response> {
        Ok(response)
    }
}

/// The peer merged the object (or kept it as a hint).
pub(super) struct Written;

impl Answer for Written {
    fn pick(response: Response) -> Result<Self, Response> {
        match response {
            Response::Written => Ok(Written),
            other => Err(other),
        }
    }
}

/// The encoded object a replica holds for a key, if any.
pub(super) struct Stored(pub Option<Bytes>);

impl Answer for Stored {
    fn pick(response: Response) -> Result<Self, Response> {
        match response {
            Response::Object(bytes) => Ok(Stored(bytes)),
            other => Err(other),
        }
    }
}

/// Whether the peer removed the tombstone.
pub(super) struct Reaped(pub bool);

impl Answer for Reaped {
    fn pick(response: Response) -> Result<Self, Response> {
        match response {
            Response::Reaped(done) => Ok(Reaped(done)),
            other => Err(other),
        }
    }
}

/// The peer's membership view, in answer to ours.
impl Answer for Digest {
    fn pick(response: Response) -> Result<Self, Response> {
        match response {
            Response::Gossip(digest) => Ok(digest),
            other => Err(other),
        }
    }
}

/// The outcome of a client operation a peer coordinated for us.
pub(super) struct Forwarded(pub Result<Outcome, RemoteError>);

impl Answer for Forwarded {
    fn pick(response: Response) -> Result<Self, Response> {
        match response {
            Response::Coordinated(outcome) => Ok(Forwarded(outcome)),
            other => Err(other),
        }
    }
}

impl Node {
    /// One request to the member `peer`.
    pub(super) async fn call<A: Answer>(
        &self,
        peer: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<A, RpcError> {
        self.call_counted(peer, request, timeout).await.map(|(answer, _)| answer)
    }

    /// Like [`call`](Self::call), also telling the bytes each way.
    pub(super) async fn call_counted<A: Answer>(
        &self,
        peer: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<(A, Traffic), RpcError> {
        let addr = self.membership.peer_addr(peer).ok_or(RpcError::Unreachable)?;
        self.send(addr, Some(peer), request, timeout).await
    }

    /// One request to `addr`; `peer` is `None` for a seed not yet known by name.
    pub(super) async fn send<A: Answer>(
        &self,
        addr: SocketAddr,
        peer: Option<&str>,
        request: &Request,
        timeout: Duration,
    ) -> Result<(A, Traffic), RpcError> {
        let started = Instant::now();
        let answered = self.transport(addr, peer, request, timeout).await.ok_or(RpcError::Unreachable).and_then(
            |(response, traffic)| match A::pick(response) {
                Ok(answer) => Ok((answer, traffic)),
                Err(Response::Error(e)) => Err(RpcError::Refused(e)),
                Err(other) => Err(RpcError::Unexpected(format!("{other:?}"))),
            },
        );
        let outcome = match &answered {
            Ok(_) => "ok",
            Err(RpcError::Unreachable) => "unreachable",
            Err(RpcError::Refused(_)) => "refused",
            Err(RpcError::Unexpected(_)) => "unexpected",
        };
        self.metrics.peer_call(request.kind(), outcome, started.elapsed().as_secs_f64());
        answered
    }

    /// One request to the member `peer`, waiting as long as its recent
    /// round trips say an answer takes (see [`latency`](super::latency)).
    pub(super) async fn call_fast<A: Answer>(&self, peer: &str, request: &Request) -> Result<A, RpcError> {
        self.call(peer, request, self.latency.timeout_carrying(peer, payload_bytes(request))).await
    }

    /// The exchange itself, with the faults in force; `None` when no
    /// answer came (or it was cut on its way back). `timeout` bounds the
    /// whole exchange, dialling included.
    async fn transport(
        &self,
        addr: SocketAddr,
        peer: Option<&str>,
        request: &Request,
        timeout: Duration,
    ) -> Option<(Response, Traffic)> {
        let started = Instant::now();
        let outcome = if self.faults.cuts(peer) {
            tokio::time::sleep(timeout).await;
            Err(PeerError::Timeout(addr))
        } else {
            tokio::time::timeout(timeout, self.peers.call_counted(addr, request, timeout))
                .await
                .unwrap_or(Err(PeerError::Timeout(addr)))
        };
        let answer = match outcome {
            Ok(answer) => {
                self.faults.hold().await;
                (!self.faults.cuts(peer)).then_some(answer)
            }
            Err(e) => {
                Counters::bump(&self.counters.peer_errors);
                tracing::debug!(%addr, "peer request failed: {e}");
                None
            }
        };
        if let Some(peer) = peer {
            self.learn_from_exchange(peer, request, answer.is_some(), started.elapsed(), timeout);
        }
        answer
    }

    /// What one exchange tells about `peer`: a failure makes it suspect;
    /// the time a plain exchange took, or waited in vain, is a round-trip
    /// sample (a refusal says nothing of round trips). Exchanges whose
    /// answer takes work on the peer (a forwarded write, anti-entropy)
    /// would inflate the estimate: they are not samples.
    fn learn_from_exchange(&self, peer: &str, request: &Request, answered: bool, took: Duration, timeout: Duration) {
        if !answered {
            self.membership.mark_suspect(peer);
        }
        let plain =
            matches!(request, Request::Ping | Request::Gossip(_) | Request::Read { .. } | Request::Write { .. });
        if plain && payload_bytes(request) <= LARGEST_SAMPLE_BYTES && (answered || took >= timeout) {
            self.latency.observe(peer, took);
        }
    }
}

/// The bulk a request carries (an object to write), beyond its headers.
fn payload_bytes(request: &Request) -> usize {
    match request {
        Request::Write { object, .. } => object.len(),
        _ => 0,
    }
}
