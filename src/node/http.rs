//! The client-facing HTTP/1.1 API and the token-protected admin API.
//!
//! Usable with curl: `PUT /kv/{key}` with the value as body, `GET` and
//! `DELETE` likewise. Causal context travels in `X-Dynamo-Context` (opaque)
//! and is shown readably in `X-Dynamo-Clock`. Bad input gets a 4xx with a
//! one-line reason and never disturbs the node.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;

use super::coordinator::{CoordError, Coordinated};
use super::membership::MembershipError;
use super::protocol::{ClientOp, OpKind};
use super::version::{decode_context, encode_context};
use super::Node;
use crate::api::admin::{Committed, FaultState, HandedOff, RepairRound, SwitchChange};
use crate::api::headers::{CLOCK, CONTEXT, COORDINATOR, DOT, SIBLINGS};

type Reply = Response<Full<Bytes>>;

/// Accepts client connections until the task is dropped.
pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    let idle = std::time::Duration::from_millis(node.config.http_idle_timeout_ms);
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accepting a client connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = node.client_gate.admit(&node.counters.client_connections_refused) else { continue };
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(route(&node, request).await) }
            });
            // The header timer runs whenever the connection waits for a
            // request head: it closes slow-header senders and idle
            // keep-alive connections alike.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(idle)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%from, "client connection ended: {e}");
            }
        });
    }
}

/// Answers one request and records it in the request metrics.
async fn route(node: &Arc<Node>, request: Request<Incoming>) -> Reply {
    let started = std::time::Instant::now();
    let route = Route::of(request.uri().path());
    let op = route.op(request.method());
    let reply = answer(node, route, request).await;
    node.record_request(op, reply.status().as_u16(), started.elapsed().as_secs_f64());
    reply
}

/// Where a request goes, read once from its path, so that the router and
/// the request metrics cannot disagree on what a request asked.
enum Route {
    /// `/kv/<key>`, the key as sent (percent-encoded).
    Key(String),
    /// `/admin/<rest>`.
    Admin(String),
    Status,
    Metrics,
    Unknown(String),
}

impl Route {
    fn of(path: &str) -> Route {
        if let Some(key) = path.strip_prefix("/kv/") {
            Route::Key(key.to_owned())
        } else if let Some(rest) = path.strip_prefix("/admin/") {
            Route::Admin(rest.to_owned())
        } else {
            match path {
                "/status" => Route::Status,
                "/metrics" => Route::Metrics,
                _ => Route::Unknown(path.to_owned()),
            }
        }
    }

    /// The metrics' name for what a request asks.
    fn op(&self, method: &Method) -> &'static str {
        match self {
            Route::Key(_) => match *method {
                Method::GET => "get",
                Method::PUT | Method::POST => "put",
                Method::DELETE => "delete",
                _ => "other",
            },
            Route::Admin(_) => "admin",
            Route::Status => "status",
            Route::Metrics => "metrics",
            Route::Unknown(_) => "other",
        }
    }
}

async fn answer(node: &Arc<Node>, route: Route, request: Request<Incoming>) -> Reply {
    if !matches!(route, Route::Admin(_)) {
        node.faults.hold().await;
    }
    let result = match route {
        Route::Key(key) => key_request(node, &key, request).await,
        Route::Admin(rest) => admin_request(node, &rest, request).await,
        Route::Status | Route::Metrics if request.method() != Method::GET => Err(HttpError::method()),
        Route::Status => Ok(json_reply(&node.status())),
        Route::Metrics => Ok(metrics(node)),
        Route::Unknown(path) => Err(HttpError::new(StatusCode::NOT_FOUND, format!("no such path: {path}"))),
    };
    result.unwrap_or_else(|e| {
        if e.status.is_client_error() {
            super::metrics::Counters::bump(&node.counters.bad_requests);
        }
        let mut reply = text(e.status, format!("error: {}\n", e.message));
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the connection cannot carry
            // another request, and the client should know before it tries.
            reply.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        reply
    })
}

/// A failed request: its status and a one-line reason.
struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn method() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path")
    }
}

impl From<CoordError> for HttpError {
    fn from(e: CoordError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpError::new(status, e.to_string())
    }
}

async fn key_request(node: &Arc<Node>, raw_key: &str, request: Request<Incoming>) -> Result<Reply, HttpError> {
    let key = parse_key(raw_key, node.config.max_key_bytes)?;
    let query = Query::parse(request.uri().query())?;
    let context = match request.headers().get(CONTEXT) {
        Some(value) => {
            let text = value.to_str().map_err(|_| HttpError::bad("X-Dynamo-Context is not ASCII"))?;
            Some(decode_context(text).map_err(|e| HttpError::bad(format!("bad X-Dynamo-Context: {e}")))?)
        }
        None => None,
    };
    let method = request.method().clone();
    let op = match method {
        Method::GET => ClientOp { key, kind: OpKind::Get, quorum: query.r },
        Method::PUT | Method::POST => {
            let value = read_body(node, request).await?;
            ClientOp { key, kind: OpKind::Put { value, context: context.unwrap_or_default() }, quorum: query.w }
        }
        Method::DELETE => ClientOp { key, kind: OpKind::Delete { context }, quorum: query.w },
        _ => return Err(HttpError::method()),
    };
    let done = node.execute(op, false).await?;
    if method == Method::GET {
        read_reply(&done)
    } else {
        write_reply(&done)
    }
}

fn parse_key(raw: &str, max_key_bytes: usize) -> Result<Bytes, HttpError> {
    let key: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if key.is_empty() {
        return Err(HttpError::bad("empty key"));
    }
    if key.len() > max_key_bytes {
        return Err(HttpError::new(
            StatusCode::URI_TOO_LONG,
            format!("key of {} bytes exceeds the limit of {max_key_bytes}", key.len()),
        ));
    }
    Ok(Bytes::from(key))
}

/// Longest a refused body a little over the limit is read before the 413.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn read_body(node: &Node, request: Request<Incoming>) -> Result<Bytes, HttpError> {
    let limit = node.config.max_value_bytes;
    let too_large =
        || HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("value exceeds the limit of {limit} bytes"));
    let declared =
        request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|&len| len > limit) {
        // A body a little over the limit is read and dropped before the
        // 413: a client still writing it when the connection closed would
        // see a broken pipe instead of the answer. A larger one is not
        // worth the bytes; its client gets the 413 or a reset.
        if len <= 2 * limit {
            let drain = Limited::new(request.into_body(), 2 * limit).collect();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
        }
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(HttpError::bad(format!("reading the request body: {e}"))),
    }
}

/// `?r=` and `?w=`; anything else in the query is an error, not ignored.
#[derive(Default)]
struct Query {
    r: Option<usize>,
    w: Option<usize>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Self, HttpError> {
        let mut parsed = Query::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = value
                .parse::<usize>()
                .map_err(|_| HttpError::bad(format!("{name} must be a positive integer, got {value:?}")))?;
            match name {
                "r" => parsed.r = Some(number),
                "w" => parsed.w = Some(number),
                _ => return Err(HttpError::bad(format!("unknown query parameter {name:?} (allowed: r, w)"))),
            }
        }
        Ok(parsed)
    }
}

fn causal_headers(reply: &mut Reply, done: &Coordinated) -> Result<(), HttpError> {
    let clock = &done.object.clock;
    let context = header(&encode_context(clock))?;
    let readable = header(&clock.readable())?;
    let coordinator = header(&done.coordinator)?;
    let headers = reply.headers_mut();
    headers.insert(CONTEXT, context);
    headers.insert(CLOCK, readable);
    headers.insert(COORDINATOR, coordinator);
    Ok(())
}

/// Every value here is base64, a node id, or a clock of actors and numbers,
/// all checked on their way in; a value that still cannot be a header is a
/// bug to report, not a reason to take the node down.
fn header(value: &str) -> Result<HeaderValue, HttpError> {
    HeaderValue::from_str(value).map_err(|_| {
        tracing::error!(?value, "a header value is not printable ASCII");
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot send {value:?} as a header value"))
    })
}

fn read_reply(done: &Coordinated) -> Result<Reply, HttpError> {
    let values: Vec<&Bytes> = done.object.values().collect();
    let mut reply = match values.as_slice() {
        [] => text(StatusCode::NOT_FOUND, "not found\n".into()),
        [value] => Response::new(Full::new((*value).clone())),
        many => {
            let body = json!({
                "context": encode_context(&done.object.clock),
                "siblings": many.iter().map(|v| base64::engine::general_purpose::STANDARD.encode(v)).collect::<Vec<_>>(),
            });
            let mut reply = json_reply(&body);
            *reply.status_mut() = StatusCode::MULTIPLE_CHOICES;
            reply
        }
    };
    causal_headers(&mut reply, done)?;
    Ok(reply)
}

fn write_reply(done: &Coordinated) -> Result<Reply, HttpError> {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    causal_headers(&mut reply, done)?;
    if let Some(dot) = &done.dot {
        reply.headers_mut().insert(DOT, header(&dot.to_string())?);
    }
    reply.headers_mut().insert(SIBLINGS, header(&done.object.siblings.len().to_string())?);
    Ok(reply)
}

fn metrics(node: &Node) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(node.prometheus())));
    reply.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(super::metrics::CONTENT_TYPE));
    reply
}

async fn admin_request(node: &Arc<Node>, route: &str, request: Request<Incoming>) -> Result<Reply, HttpError> {
    authorize(node, &request)?;
    if let Some(key) = route.strip_prefix("replicas/") {
        if request.method() != Method::GET {
            return Err(HttpError::method());
        }
        let key = parse_key(key, node.config.max_key_bytes)?;
        return Ok(json_reply(&node.replicas(key).await));
    }
    match (request.method(), route) {
        (&Method::POST, "config") => {
            let change: SwitchChange = read_json(node, request, "config").await?;
            Ok(json_reply(&node.configure(change)))
        }
        (&Method::POST, "handoff") => Ok(json_reply(&HandedOff { delivered: node.deliver_hints().await })),
        (&Method::POST, "repair/round") => {
            let body = read_body(node, request).await?;
            let round: RepairRound =
                if body.is_empty() { RepairRound::default() } else { parse_json(&body, "repair round")? };
            Ok(json_reply(&node.repair_round(round.seed, round.fanout, round.staged).await))
        }
        (&Method::POST, "repair/commit") => {
            let merged =
                node.commit_staged().map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(json_reply(&Committed { merged }))
        }
        (&Method::GET, "merkle") => Ok(json_reply(&node.merkle_roots())),
        (&Method::GET, "merkle/leaves") => {
            let partitions = leaf_partitions(request.uri().query().unwrap_or(""))?;
            Ok(json_reply(&node.merkle_leaves(&partitions)))
        }
        (&Method::POST, "leave") => {
            let stats = node.leave().await.map_err(|e| {
                let status = match e.downcast_ref::<MembershipError>() {
                    Some(MembershipError::LastMember) => StatusCode::CONFLICT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                HttpError::new(status, format!("{e:#}"))
            })?;
            tracing::info!(?stats, "left the cluster; stopping");
            // Stop once this answer is out.
            let node = node.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                node.stop.notify_one();
            });
            Ok(json_reply(&stats))
        }
        (&Method::POST, "fault") => {
            let state: FaultState = read_json(node, request, "fault").await?;
            tracing::warn!(?state, "application-level fault applied");
            node.faults.set(state);
            Ok(json_reply(&node.faults.current()))
        }
        (&Method::DELETE, "fault") => {
            node.faults.heal();
            tracing::warn!("application-level faults healed");
            Ok(json_reply(&node.faults.current()))
        }
        (&Method::GET, "fault") => Ok(json_reply(&node.faults.current())),
        (
            _,
            "config" | "handoff" | "repair/round" | "repair/commit" | "merkle" | "merkle/leaves" | "fault" | "leave",
        ) => Err(HttpError::method()),
        _ => Err(HttpError::new(StatusCode::NOT_FOUND, format!("no such admin path: /admin/{route}"))),
    }
}

/// `partitions=3,17` (or nothing: no partition).
fn leaf_partitions(query: &str) -> Result<Vec<u32>, HttpError> {
    let bad = || HttpError::bad(format!("bad query {query:?}: merkle/leaves?partitions=3,17"));
    let list = match query.split_once('=') {
        None if query.is_empty() => return Ok(Vec::new()),
        Some(("partitions", list)) => list,
        _ => return Err(bad()),
    };
    list.split(',').filter(|p| !p.is_empty()).map(|p| p.parse().map_err(|_| bad())).collect()
}

/// A JSON request body; `what` names it in the error.
async fn read_json<T: DeserializeOwned>(node: &Node, request: Request<Incoming>, what: &str) -> Result<T, HttpError> {
    parse_json(&read_body(node, request).await?, what)
}

fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| HttpError::bad(format!("bad {what} JSON: {e}")))
}

fn authorize(node: &Node, request: &Request<Incoming>) -> Result<(), HttpError> {
    let Some(token) = &node.admin_token else {
        return Err(HttpError::new(StatusCode::FORBIDDEN, "admin API disabled: this node has no admin token"));
    };
    let given =
        request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(HttpError::new(StatusCode::UNAUTHORIZED, "admin API needs Authorization: Bearer <token>"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_reply(body: &impl Serialize) -> Reply {
    let body = serde_json::to_vec(body).expect("admin and status bodies serialise");
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    reply.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

fn text(status: StatusCode, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_http_keys_and_queries() {
        let text = "(%[0-9a-fA-F]{0,2}|[a-z0-9/?&=]|\\PC){0,48}";
        crate::fuzzing::run("HTTP keys and queries", (text, text), |(key, query)| {
            match parse_key(&key, 32) {
                Ok(key) => assert!(!key.is_empty() && key.len() <= 32, "{key:?}"),
                Err(e) => assert!(e.status.is_client_error() && !e.message.contains('\n'), "{}", e.message),
            }
            if let Err(e) = Query::parse(Some(&query)) {
                assert!(e.status.is_client_error() && !e.message.contains('\n'), "{}", e.message);
            }
        });
    }
}
