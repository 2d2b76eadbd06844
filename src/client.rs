//! HTTP client for the store, used by the CLI, the tests, the benchmark and
//! the experiment driver.
//!
//! One `Client` is one keep-alive connection to one node, redialled after
//! any transport error. Non-2xx answers are results, not errors, because
//! callers record them; only transport failures (refused, reset, timed out)
//! are errors, and they say which, so the driver can classify them.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::admin::{
    Committed, FaultState, HandedOff, LeaveStats, MerkleLeaves, MerkleRoots, RepairRound, Replicas, SwitchChange,
    SyncStats,
};
use crate::api::headers::{CLOCK, CONTEXT, COORDINATOR, DOT, SIBLINGS};
use crate::api::status::{Status, Switches};

/// Bytes of a key that must be escaped in a path segment.
const KEY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("{0}: no answer in time")]
    Timeout(SocketAddr),
    #[error("{addr}: {source}")]
    Http { addr: SocketAddr, source: hyper::Error },
    #[error("{addr}: unexpected answer: {message}")]
    Protocol { addr: SocketAddr, message: String },
}

/// A node's answer, with the store's headers picked out.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    pub context: Option<String>,
    pub clock: Option<String>,
    pub dot: Option<String>,
    pub coordinator: Option<String>,
    /// After a write: how many versions the key holds (`X-Dynamo-Siblings`).
    pub siblings_after: Option<u32>,
}

impl Answer {
    /// The values a read returned: one for 200, every sibling for 300.
    pub fn values(&self) -> Result<Vec<Bytes>, String> {
        match self.status {
            StatusCode::OK => Ok(vec![self.body.clone()]),
            StatusCode::MULTIPLE_CHOICES => {
                let parsed: serde_json::Value = serde_json::from_slice(&self.body).map_err(|e| e.to_string())?;
                let siblings = parsed["siblings"].as_array().ok_or("300 without a siblings list")?;
                siblings
                    .iter()
                    .map(|s| {
                        let text = s.as_str().ok_or("sibling is not a string")?;
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map(Bytes::from)
                            .map_err(|e| e.to_string())
                    })
                    .collect()
            }
            _ => Ok(Vec::new()),
        }
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as one line of text, for error messages.
    pub fn reason(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }
}

pub struct Client {
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr, token: None, timeout: Duration::from_secs(10), sender: None }
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn get(&mut self, key: &str, r: Option<usize>) -> Result<Answer, ClientError> {
        self.send(Method::GET, &kv_path(key, "r", r), None, Bytes::new()).await
    }

    pub async fn put(
        &mut self,
        key: &str,
        value: Bytes,
        context: Option<&str>,
        w: Option<usize>,
    ) -> Result<Answer, ClientError> {
        self.send(Method::PUT, &kv_path(key, "w", w), context, value).await
    }

    pub async fn delete(&mut self, key: &str, context: Option<&str>, w: Option<usize>) -> Result<Answer, ClientError> {
        self.send(Method::DELETE, &kv_path(key, "w", w), context, Bytes::new()).await
    }

    pub async fn status(&mut self) -> Result<Status, ClientError> {
        self.typed(Method::GET, "/status", Bytes::new()).await
    }

    /// What each replica of `key` holds, read without repair (admin API).
    pub async fn replicas(&mut self, key: &str) -> Result<Replicas, ClientError> {
        let path = format!("/admin/replicas/{}", utf8_percent_encode(key, KEY_ESCAPES));
        self.typed(Method::GET, &path, Bytes::new()).await
    }

    /// Sets the switches `change` names; answers all of them as they now are.
    pub async fn set_switches(&mut self, change: SwitchChange) -> Result<Switches, ClientError> {
        self.admin_post("config", &change).await
    }

    /// Runs one anti-entropy round on this node.
    pub async fn repair_round(&mut self, round: RepairRound) -> Result<SyncStats, ClientError> {
        self.admin_post("repair/round", &round).await
    }

    /// Merges what staged repair rounds learnt.
    pub async fn repair_commit(&mut self) -> Result<Committed, ClientError> {
        self.admin_post("repair/commit", &serde_json::Map::new()).await
    }

    /// Hands the node's hints to their owners now.
    pub async fn handoff(&mut self) -> Result<HandedOff, ClientError> {
        self.admin_post("handoff", &serde_json::Map::new()).await
    }

    /// Makes the node leave the cluster for good; it stops after answering.
    pub async fn leave(&mut self) -> Result<LeaveStats, ClientError> {
        self.admin_post("leave", &serde_json::Map::new()).await
    }

    /// The Merkle root of each partition the node replicates.
    pub async fn merkle_roots(&mut self) -> Result<MerkleRoots, ClientError> {
        self.typed(Method::GET, "/admin/merkle", Bytes::new()).await
    }

    /// The non-empty Merkle leaves of those of `partitions` the node replicates.
    pub async fn merkle_leaves(&mut self, partitions: &[u32]) -> Result<MerkleLeaves, ClientError> {
        let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
        self.typed(Method::GET, &format!("/admin/merkle/leaves?partitions={}", list.join(",")), Bytes::new()).await
    }

    /// Puts application-level faults in force (replacing any before).
    pub async fn app_fault(&mut self, faults: &FaultState) -> Result<FaultState, ClientError> {
        self.admin_post("fault", faults).await
    }

    /// Lifts every application-level fault.
    pub async fn heal_app_fault(&mut self) -> Result<FaultState, ClientError> {
        self.typed(Method::DELETE, "/admin/fault", Bytes::new()).await
    }

    /// The application-level faults in force.
    pub async fn app_faults(&mut self) -> Result<FaultState, ClientError> {
        self.typed(Method::GET, "/admin/fault", Bytes::new()).await
    }

    /// `POST /admin/<route>` with a JSON body; the raw door for tests and
    /// for callers that keep the body as JSON.
    pub async fn admin(&mut self, route: &str, body: &serde_json::Value) -> Result<Answer, ClientError> {
        self.send(Method::POST, &format!("/admin/{route}"), None, Bytes::from(body.to_string())).await
    }

    async fn admin_post<T: DeserializeOwned>(&mut self, route: &str, body: &impl Serialize) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("admin bodies serialise");
        self.typed(Method::POST, &format!("/admin/{route}"), Bytes::from(body)).await
    }

    /// A request whose successful answer is JSON of type `T`; any other
    /// answer is a protocol error saying what came instead.
    async fn typed<T: DeserializeOwned>(&mut self, method: Method, path: &str, body: Bytes) -> Result<T, ClientError> {
        let answer = self.send(method, path, None, body).await?;
        let unexpected = |message: String| ClientError::Protocol { addr: self.addr, message };
        if !answer.status.is_success() {
            return Err(unexpected(format!("{path} answered {}: {}", answer.status, answer.reason())));
        }
        serde_json::from_slice(&answer.body).map_err(|e| unexpected(format!("{path}: {e}: {}", answer.reason())))
    }

    /// Any request; the low-level door for tests of bad input.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        context: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let mut request = Request::builder().method(method).uri(path).header(HOST, self.addr.to_string());
        if let Some(context) = context {
            request = request.header(CONTEXT, context);
        }
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if path.starts_with("/admin/") {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol { addr: self.addr, message: e.to_string() })?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let retry = same_request(&request);
        let mut outcome = self.exchange_until(deadline, request).await;
        // A kept-alive connection the server had just closed (after a 413,
        // say) fails the next request before any of it was sent: hyper says
        // "canceled". That request never reached the node, so sending it
        // again on a fresh connection cannot apply it twice.
        if matches!(&outcome, Err(ClientError::Http { source, .. }) if source.is_canceled()) {
            outcome = self.exchange_until(deadline, retry).await;
        }
        outcome
    }

    async fn exchange_until(
        &mut self,
        deadline: tokio::time::Instant,
        request: Request<Full<Bytes>>,
    ) -> Result<Answer, ClientError> {
        match tokio::time::timeout_at(deadline, self.exchange(request)).await {
            Ok(result) => {
                if result.is_err() {
                    self.sender = None;
                }
                result
            }
            Err(_) => {
                // The connection may still deliver the late answer: never reuse it.
                self.sender = None;
                Err(ClientError::Timeout(self.addr))
            }
        }
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, ClientError> {
        let addr = self.addr;
        let sender = self.connection().await?;
        let response = sender.send_request(request).await.map_err(|source| ClientError::Http { addr, source })?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|source| ClientError::Http { addr, source })?.to_bytes();
        let header = |name: &str| header_text(&parts.headers, name);
        Ok(Answer {
            status: parts.status,
            context: header(CONTEXT),
            clock: header(CLOCK),
            dot: header(DOT),
            coordinator: header(COORDINATOR),
            siblings_after: header(SIBLINGS).and_then(|n| n.parse().ok()),
            body,
        })
    }

    async fn connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let addr = self.addr;
            let stream =
                tokio::net::TcpStream::connect(addr).await.map_err(|source| ClientError::Connect { addr, source })?;
            stream.set_nodelay(true).map_err(|source| ClientError::Connect { addr, source })?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|source| ClientError::Http { addr, source })?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await.map_err(|source| ClientError::Http { addr: self.addr, source })?;
        Ok(sender)
    }
}

fn same_request(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

fn kv_path(key: &str, quorum_name: &str, quorum: Option<usize>) -> String {
    let key = utf8_percent_encode(key, KEY_ESCAPES);
    match quorum {
        Some(q) => format!("/kv/{key}?{quorum_name}={q}"),
        None => format!("/kv/{key}"),
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}
