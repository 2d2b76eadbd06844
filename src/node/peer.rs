//! Node-to-node transport: the server that answers peers, and the pool of
//! outgoing connections.
//!
//! Each peer gets one persistent connection on which many requests are in
//! flight at once, told apart by request id. Writes are batched by a writer
//! task so that a burst of small frames costs one system call. A connection
//! that breaks, or on which a request times out with nothing heard since it
//! was sent, is closed and redialled on the next call — never left stuck, as
//! after a healed partition, when TCP's own retransmission timer may still
//! be minutes away.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;

use super::admission::{ConnectionGate, FrameBudget};
use super::frame::{self, Direction, FrameError};
use super::handshake::{self, HandshakeError, PeerKey};
use super::metrics::Counters;
use super::protocol::{Request, Response};

/// Frames waiting to be written on one connection.
const OUTBOX: usize = 4096;
/// Requests one incoming connection may have in flight before the server
/// stops reading from it (backpressure instead of an unbounded queue).
const IN_FLIGHT_PER_CONNECTION: usize = 512;
/// After a dial timed out, calls to that peer fail fast for this long
/// instead of queueing behind one another's connect timeouts.
const REDIAL_AFTER: Duration = Duration::from_millis(100);
/// Time an accepted connection has to prove it belongs to the cluster.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections still in their handshake at once: what strangers can hold.
const HANDSHAKING: usize = 128;
/// Bytes of frames being received at once, over all peer connections:
/// four of the largest frames.
const FRAME_BUDGET: usize = 4 * frame::MAX_FRAME;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("connect to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error("{0}: recently unreachable")]
    RecentlyUnreachable(SocketAddr),
    #[error("{0}: no reply in time")]
    Timeout(SocketAddr),
    #[error("{0}: connection closed")]
    Closed(SocketAddr),
    #[error("{0}: too many requests queued")]
    Overloaded(SocketAddr),
    #[error("{addr}: {source}")]
    Frame { addr: SocketAddr, source: FrameError },
    #[error("{addr}: {source}")]
    Handshake { addr: SocketAddr, source: HandshakeError },
}

pub type BoxFuture = Pin<Box<dyn Future<Output = Option<Response>> + Send>>;
/// What the server calls for each request it receives, with the name the
/// sender proved in the handshake; `None` sends no response at all (a
/// dropped message).
pub type Handler = Arc<dyn Fn(Request, Arc<str>) -> BoxFuture + Send + Sync>;

/// Bytes one exchange put on the wire, frame headers included.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

/// Outgoing connections to every peer this node talks to.
pub struct PeerPool {
    slots: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Slot>>>>,
    next_id: AtomicU64,
    connect_timeout: Duration,
    /// The address outgoing connections come from: this node's own, so
    /// that peers (and firewall rules) can tell who is talking. Not a
    /// loopback one: every node of a loopback cluster shares it, so it
    /// tells nobody apart, and connections bound to it take their
    /// ephemeral ports from the very address the cluster listens on —
    /// where the range (32768-60999 by default) holds the seed's ports
    /// 60000 and up, a node started a moment later found its port taken.
    local: Option<std::net::IpAddr>,
    key: PeerKey,
    /// This node's id, which it names itself by in every handshake.
    name: String,
}

#[derive(Default)]
struct Slot {
    connection: Option<Arc<Connection>>,
    failed_at: Option<Instant>,
}

struct Connection {
    addr: SocketAddr,
    outbox: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    /// When a frame last arrived, in microseconds since `opened`.
    last_heard_us: AtomicU64,
    /// When a request was last sent, likewise.
    last_sent_us: AtomicU64,
    opened: Instant,
    broken: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl PeerPool {
    pub fn new(connect_timeout: Duration, local: Option<std::net::IpAddr>, key: PeerKey, name: &str) -> Self {
        let name = name.to_owned();
        PeerPool { slots: Mutex::default(), next_id: AtomicU64::new(1), connect_timeout, local, key, name }
    }

    /// Sends one request and waits up to `timeout` for its response.
    pub async fn call(&self, addr: SocketAddr, request: &Request, timeout: Duration) -> Result<Response, PeerError> {
        self.call_counted(addr, request, timeout).await.map(|(response, _)| response)
    }

    /// Like [`call`](Self::call), also telling the bytes each way.
    pub async fn call_counted(
        &self,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Response, Traffic), PeerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes =
            frame::encode(id, Direction::Request, request).map_err(|source| PeerError::Frame { addr, source })?;
        let connection = self.connection(addr).await?;
        let sent_at_us = connection.elapsed_us();
        let sent = bytes.len() as u64;
        let reply = connection.send(id, bytes)?;
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(payload)) => {
                let traffic = Traffic { sent, received: (payload.len() + frame::OVERHEAD) as u64 };
                let response = frame::decode(&payload).map_err(|source| PeerError::Frame { addr, source })?;
                Ok((response, traffic))
            }
            Ok(Err(_)) => Err(PeerError::Closed(addr)),
            Err(_) => {
                connection.forget(id);
                if connection.last_heard_us.load(Ordering::Relaxed) <= sent_at_us {
                    // Nothing at all came back since we sent: the path, not
                    // just this request, is stuck. Redial next time.
                    connection.close();
                }
                Err(PeerError::Timeout(addr))
            }
        }
    }

    /// Closes the connections no request used for `idle`, and forgets
    /// their peers: a node that once talked to every member of a big
    /// cluster (a workload's forwarded requests, random gossip rounds)
    /// holds only the connections it still uses.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let mut slots = self.slots.lock().expect("peer pool lock");
        let before = slots.len();
        slots.retain(|_, slot| {
            // A slot in use (a dial or a call on its way) is not idle; no
            // one can take a new hold of it while the map is locked.
            if Arc::strong_count(slot) > 1 {
                return true;
            }
            let Ok(mut slot) = slot.try_lock() else { return true };
            if slot.connection.as_ref().is_some_and(|c| c.broken.load(Ordering::Relaxed) || c.idle_for(idle)) {
                if let Some(connection) = slot.connection.take() {
                    connection.close();
                }
            }
            slot.connection.is_some() || slot.failed_at.is_some_and(|at| at.elapsed() < REDIAL_AFTER)
        });
        before - slots.len()
    }

    async fn connection(&self, addr: SocketAddr) -> Result<Arc<Connection>, PeerError> {
        let slot = self.slots.lock().expect("peer pool lock").entry(addr).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(connection) = &slot.connection {
            if !connection.broken.load(Ordering::Relaxed) {
                return Ok(connection.clone());
            }
        }
        slot.connection = None;
        if slot.failed_at.is_some_and(|at| at.elapsed() < REDIAL_AFTER) {
            return Err(PeerError::RecentlyUnreachable(addr));
        }
        match self.dial(addr).await {
            Ok(connection) => {
                slot.failed_at = None;
                slot.connection = Some(connection.clone());
                Ok(connection)
            }
            Err(e) => {
                // A refused dial is cheap to repeat; only a dial that hung
                // until its timeout is worth not repeating at once.
                if matches!(e, PeerError::ConnectTimeout(_)) {
                    slot.failed_at = Some(Instant::now());
                }
                Err(e)
            }
        }
    }

    async fn dial(&self, addr: SocketAddr) -> Result<Arc<Connection>, PeerError> {
        let stream = tokio::time::timeout(self.connect_timeout, async {
            let mut stream = self.connect(addr).await.map_err(|source| PeerError::Connect { addr, source })?;
            stream.set_nodelay(true).map_err(|source| PeerError::Connect { addr, source })?;
            handshake::dial(&mut stream, &self.key, &self.name)
                .await
                .map_err(|source| PeerError::Handshake { addr, source })?;
            Ok(stream)
        })
        .await
        .map_err(|_| PeerError::ConnectTimeout(addr))??;
        let (read_half, write_half) = stream.into_split();
        let (outbox, queued) = mpsc::channel(OUTBOX);
        let connection = Arc::new(Connection {
            addr,
            outbox,
            pending: Mutex::default(),
            last_heard_us: AtomicU64::new(0),
            last_sent_us: AtomicU64::new(0),
            opened: Instant::now(),
            broken: AtomicBool::new(false),
            tasks: Mutex::default(),
        });
        let writer = tokio::spawn(write_frames(write_half, queued));
        let reader = tokio::spawn(read_responses(read_half, connection.clone()));
        connection.tasks.lock().expect("tasks lock").extend([writer.abort_handle(), reader.abort_handle()]);
        Ok(connection)
    }
}

impl PeerPool {
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = self.local.filter(|ip| !ip.is_unspecified() && !ip.is_loopback()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(addr).await
    }
}

impl Drop for PeerPool {
    fn drop(&mut self) {
        for slot in self.slots.get_mut().expect("peer pool lock").values() {
            if let Ok(slot) = slot.try_lock() {
                if let Some(connection) = &slot.connection {
                    connection.close();
                }
            }
        }
    }
}

impl Connection {
    fn elapsed_us(&self) -> u64 {
        self.opened.elapsed().as_micros() as u64
    }

    fn send(&self, id: u64, bytes: Bytes) -> Result<oneshot::Receiver<Bytes>, PeerError> {
        self.last_sent_us.store(self.elapsed_us().max(1), Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        if let Err(e) = self.outbox.try_send(bytes) {
            self.forget(id);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => PeerError::Overloaded(self.addr),
                mpsc::error::TrySendError::Closed(_) => PeerError::Closed(self.addr),
            });
        }
        Ok(rx)
    }

    fn forget(&self, id: u64) {
        self.pending.lock().expect("pending lock").remove(&id);
    }

    fn deliver(&self, id: u64, payload: Bytes) {
        self.last_heard_us.store(self.elapsed_us().max(1), Ordering::Relaxed);
        if let Some(tx) = self.pending.lock().expect("pending lock").remove(&id) {
            let _ = tx.send(payload);
        }
    }

    /// No request sent for `idle`, and none waiting for its answer.
    fn idle_for(&self, idle: Duration) -> bool {
        let last_sent = Duration::from_micros(self.last_sent_us.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last_sent) >= idle && self.pending.lock().expect("pending lock").is_empty()
    }

    /// Stops both tasks and fails every waiting call at once.
    fn close(&self) {
        self.broken.store(true, Ordering::Relaxed);
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
        self.pending.lock().expect("pending lock").clear();
    }
}

async fn read_responses(read_half: OwnedReadHalf, connection: Arc<Connection>) {
    let mut reader = BufReader::new(read_half);
    loop {
        match frame::read(&mut reader).await {
            Ok(Some(f)) if f.direction == Direction::Response => connection.deliver(f.id, f.payload),
            Ok(Some(_)) => {
                tracing::warn!(peer = %connection.addr, "peer sent a request on an outgoing connection; closing it");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(peer = %connection.addr, "peer connection ended: {e}");
                break;
            }
        }
    }
    connection.broken.store(true, Ordering::Relaxed);
    connection.pending.lock().expect("pending lock").clear();
}

/// Writes queued frames, coalescing whatever is already queued into one flush.
async fn write_frames(write_half: OwnedWriteHalf, mut queued: mpsc::Receiver<Bytes>) {
    // Enough to batch dozens of frames per write; a seed node holds one such
    // buffer per member connected to it, so it is most of its idle memory.
    let mut writer = BufWriter::with_capacity(16 * 1024, write_half);
    while let Some(first) = queued.recv().await {
        let mut next = Some(first);
        while let Some(bytes) = next {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
            next = queued.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

/// What the peer server lets in: members that prove the cluster's secret,
/// a bounded number of connections, and a bounded number of frame bytes.
pub struct Admission {
    pub key: PeerKey,
    pub connections: ConnectionGate,
    pub handshaking: ConnectionGate,
    pub frames: FrameBudget,
    pub counters: Arc<Counters>,
}

impl Admission {
    pub fn new(key: PeerKey, max_connections: usize, counters: Arc<Counters>) -> Admission {
        Admission {
            key,
            connections: ConnectionGate::new("peer", max_connections),
            handshaking: ConnectionGate::new("peer handshake", HANDSHAKING),
            frames: FrameBudget::new(FRAME_BUDGET),
            counters,
        }
    }
}

/// Answers peers on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Handler, admission: Arc<Admission>) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let refused = &admission.counters.peer_connections_refused;
                let Some(slot) = admission.connections.admit(refused) else { continue };
                let Some(handshaking) = admission.handshaking.admit(refused) else { continue };
                let _ = stream.set_nodelay(true);
                let (handler, admission) = (handler.clone(), admission.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let Some((stream, name)) = authenticate(stream, from, &admission).await else { return };
                    drop(handshaking);
                    serve_connection(stream, from, name.into(), handler, &admission).await;
                });
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!("accepting a peer connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The stream and the name its dialer proved, or `None` (counted and logged).
async fn authenticate(mut stream: TcpStream, from: SocketAddr, admission: &Admission) -> Option<(TcpStream, String)> {
    let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake::accept(&mut stream, &admission.key)).await;
    let error = match outcome {
        Ok(Ok(name)) => return Some((stream, name)),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
    };
    Counters::bump(&admission.counters.peer_auth_failures);
    tracing::info!(%from, "refused a peer connection: {error}");
    None
}

async fn serve_connection(
    stream: TcpStream,
    from: SocketAddr,
    name: Arc<str>,
    handler: Handler,
    admission: &Admission,
) {
    let (read_half, write_half) = stream.into_split();
    let (outbox, queued) = mpsc::channel(OUTBOX);
    let writer = tokio::spawn(write_frames(write_half, queued));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
    let mut reader = BufReader::new(read_half);
    loop {
        let (f, request) = match read_request(&mut reader, &admission.frames).await {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%from, "closing peer connection: {e}");
                break;
            }
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let (handler, outbox, name) = (handler.clone(), outbox.clone(), name.clone());
        tokio::spawn(async move {
            if let Some(response) = handler(request, name).await {
                match frame::encode(f.id, Direction::Response, &response) {
                    Ok(bytes) => {
                        let _ = outbox.send(bytes).await;
                    }
                    Err(e) => tracing::error!(%from, "cannot encode a response: {e}"),
                }
            }
            drop(permit);
        });
    }
    drop(outbox);
    // Let responses already computed go out; the writer ends when every
    // request task has dropped its sender.
    let _ = writer.await;
}

/// One request frame, read within the node-wide frame budget and decoded.
async fn read_request(
    reader: &mut BufReader<OwnedReadHalf>,
    budget: &FrameBudget,
) -> Result<Option<(frame::Frame, Request)>, FrameError> {
    let Some(length) = frame::read_length(reader).await? else { return Ok(None) };
    let _bytes = budget.reserve(length).await;
    let f = frame::read_rest(reader, length).await?;
    if f.direction != Direction::Request {
        return Err(FrameError::Unexpected("a response frame where a request belongs"));
    }
    let request = frame::decode(&f.payload)?;
    Ok(Some((f, request)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_handler() -> Handler {
        Arc::new(|request, _from| {
            Box::pin(async move {
                Some(match request {
                    Request::Ping => Response::Pong,
                    Request::Read { key } if key.as_ref() == b"slow" => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Response::Object(None)
                    }
                    Request::Read { key } => Response::Object(Some(key)),
                    _ => Response::Error("unexpected".into()),
                })
            })
        })
    }

    fn key() -> PeerKey {
        PeerKey::new(Some("cluster secret"))
    }

    #[tokio::test]
    async fn outgoing_connections_come_from_the_nodes_own_address_unless_it_is_a_shared_loopback_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (local, seen) in [(None, "127.0.0.1"), (Some("127.0.44.9"), "127.0.0.1")] {
            let pool = PeerPool::new(Duration::from_secs(1), local.map(|l| l.parse().unwrap()), key(), "node1");
            let _stream = pool.connect(addr).await.unwrap();
            let (_, from) = listener.accept().await.unwrap();
            assert_eq!(from.ip().to_string(), seen, "bound to {local:?}");
        }
    }

    fn pool() -> PeerPool {
        PeerPool::new(Duration::from_secs(1), None, key(), "node1")
    }

    fn admission() -> Arc<Admission> {
        Arc::new(Admission::new(key(), 64, Arc::default()))
    }

    async fn server_with(admission: Arc<Admission>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, echo_handler(), admission));
        addr
    }

    async fn server() -> SocketAddr {
        server_with(admission()).await
    }

    #[tokio::test]
    async fn many_requests_share_one_connection() {
        let addr = server().await;
        let pool = Arc::new(pool());
        let calls = (0..200).map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let key = Bytes::from(format!("k{i}"));
                let reply = pool.call(addr, &Request::Read { key: key.clone() }, Duration::from_secs(2)).await.unwrap();
                assert!(matches!(reply, Response::Object(Some(k)) if k == key));
            })
        });
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(pool.slots.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn only_connections_unused_for_the_idle_limit_are_closed_and_a_closed_one_is_redialled() {
        let (busy, quiet) = (server().await, server().await);
        let pool = pool();
        for addr in [busy, quiet] {
            assert!(matches!(pool.call(addr, &Request::Ping, Duration::from_secs(1)).await, Ok(Response::Pong)));
        }
        assert_eq!(pool.close_idle(Duration::from_secs(60)), 0, "nothing has been idle that long");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(matches!(pool.call(busy, &Request::Ping, Duration::from_secs(1)).await, Ok(Response::Pong)));
        assert_eq!(pool.close_idle(Duration::from_millis(150)), 1, "only the quiet peer's connection");
        assert_eq!(pool.slots.lock().unwrap().keys().collect::<Vec<_>>(), [&busy]);
        assert!(matches!(pool.call(quiet, &Request::Ping, Duration::from_secs(1)).await, Ok(Response::Pong)));
    }

    #[tokio::test]
    async fn timeout_with_silent_peer_redials() {
        let addr = server().await;
        let pool = pool();
        let slow = Request::Read { key: Bytes::from_static(b"slow") };
        assert!(matches!(pool.call(addr, &slow, Duration::from_millis(50)).await, Err(PeerError::Timeout(_))));
        // The stalled connection was dropped; the next call works on a fresh one.
        assert!(matches!(pool.call(addr, &Request::Ping, Duration::from_secs(1)).await, Ok(Response::Pong)));
    }

    #[tokio::test]
    async fn garbage_closes_only_that_connection() {
        let addr = server().await;
        let mut raw = TcpStream::connect(addr).await.unwrap();
        // A member that then sends an undecodable frame.
        handshake::dial(&mut raw, &key(), "node1").await.unwrap();
        raw.write_all(&[
            0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ])
        .await
        .unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::io::AsyncReadExt::read(&mut raw, &mut buf).await.unwrap();
        assert_eq!(n, 0, "server closes a connection that sent an undecodable frame");
        let pool = pool();
        assert!(matches!(pool.call(addr, &Request::Ping, Duration::from_secs(1)).await, Ok(Response::Pong)));
    }

    #[tokio::test]
    async fn a_refused_dial_is_retried_by_the_next_call() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = pool();
        let first = pool.call(addr, &Request::Ping, Duration::from_secs(1)).await;
        assert!(matches!(first, Err(PeerError::Connect { .. })));
        // The peer starts listening (as a node does right after its peers
        // first tried it): the very next call reaches it.
        let listener = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(serve(listener, echo_handler(), admission()));
        let second = pool.call(addr, &Request::Ping, Duration::from_secs(1)).await;
        assert!(matches!(second, Ok(Response::Pong)));
    }

    #[tokio::test]
    async fn a_peer_without_the_secret_is_refused_and_counted() {
        let admission = admission();
        let addr = server_with(admission.clone()).await;
        let stranger = PeerPool::new(Duration::from_secs(1), None, PeerKey::new(Some("a guess")), "node1");
        let refused = stranger.call(addr, &Request::Ping, Duration::from_secs(1)).await;
        assert!(matches!(refused, Err(PeerError::Handshake { .. })), "{refused:?}");
        // The server counts it once it sees the stranger hang up.
        let failures = || admission.counters.peer_auth_failures.get();
        let deadline = Instant::now() + Duration::from_secs(10);
        while failures() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(failures(), 1);
        assert!(matches!(pool().call(addr, &Request::Ping, Duration::from_secs(1)).await, Ok(Response::Pong)));
    }

    #[tokio::test]
    async fn a_full_peer_port_closes_new_connections_and_counts_them() {
        let admission = Arc::new(Admission::new(key(), 2, Arc::default()));
        let addr = server_with(admission.clone()).await;
        let (a, b) = (pool(), pool());
        assert!(matches!(a.call(addr, &Request::Ping, Duration::from_secs(1)).await, Ok(Response::Pong)));
        assert!(matches!(b.call(addr, &Request::Ping, Duration::from_secs(1)).await, Ok(Response::Pong)));
        let third = pool().call(addr, &Request::Ping, Duration::from_secs(1)).await;
        assert!(third.is_err(), "a third connection over a limit of two: {third:?}");
        assert_eq!(admission.counters.peer_connections_refused.get(), 1);
    }
}
