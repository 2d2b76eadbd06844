//! The store: one Dynamo-style node.
//!
//! A node is a tokio TCP server with two listeners — the client HTTP API and
//! the peer protocol — plus background loops for gossip and hinted handoff.
//! It never touches the kernel beyond its own sockets and files.

pub mod admission;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod faults;
pub mod frame;
#[cfg(test)]
mod fuzz;
pub mod handoff;
pub mod handshake;
pub mod http;
pub mod identity;
mod inspect;
pub mod latency;
pub mod leave;
pub mod membership;
pub mod merkle;
pub mod metrics;
pub mod peer;
mod process_metrics;
pub mod protocol;
mod read;
pub mod replica;
mod rpc;
pub mod storage;
pub mod sync;
pub mod version;
mod write;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::net::TcpListener;

pub use config::NodeConfig;
use identity::Identity;
use latency::Latency;
use membership::{Digest, MemberRecord, Membership};
use metrics::Counters;
use peer::PeerPool;
use protocol::{Request, Response};
use replica::{Replica, ReplicaError};
use rpc::RpcError;
use storage::Storage;

use crate::api::admin::SwitchChange;
use crate::api::status::Switches;

/// How often a node that changed anything records a checkpoint: what the
/// engine held that long ago is known to be on disk.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// An outgoing peer connection no request used for this long is closed.
const PEER_IDLE: Duration = Duration::from_secs(60);

/// Switches that experiments flip at run time through `POST /admin/config`.
pub struct LiveSwitches {
    pub hint_delivery: AtomicBool,
    pub anti_entropy: AtomicBool,
    pub read_repair: AtomicBool,
}

pub struct Node {
    config: NodeConfig,
    replica: Replica,
    membership: Membership,
    peers: PeerPool,
    /// Round trips to each peer, and the timeouts they give.
    latency: Latency,
    /// Who the peer server lets in, and how much of them it holds.
    peer_admission: Arc<peer::Admission>,
    /// Open client connections, up to `--max_client_connections`.
    client_gate: admission::ConnectionGate,
    counters: Arc<Counters>,
    /// The counters, histograms and gauges `/metrics` exports.
    metrics: metrics::Metrics,
    switches: LiveSwitches,
    /// `None` disables the admin API (no token was configured).
    admin_token: Option<String>,
    /// Application-level faults in force.
    faults: faults::AppFaults,
    /// The clock every time-based part reads (a `skew` fault skews it).
    clock: Arc<clock::NodeClock>,
    /// Notified when the node should stop serving (after a leave).
    stop: tokio::sync::Notify,
    /// Objects learnt in a staged repair round, merged when it is committed.
    staged: std::sync::Mutex<Vec<(u32, Bytes, version::Object)>>,
}

impl Node {
    pub fn id(&self) -> &str {
        self.membership.me()
    }

    /// Opens storage and builds the node; nothing listens yet.
    pub fn open(config: NodeConfig, admin_token: Option<String>) -> anyhow::Result<Arc<Self>> {
        let data_dir = config.data_dir();
        if config.storage == storage::EngineKind::Fjall {
            create_private_dir(&data_dir)?;
        }
        let storage = Storage::open_within(config.storage, &data_dir, config.sync, config.memory_budget())
            .with_context(|| format!("opening {} storage in {}", config.storage, data_dir.display()))?;
        let identity = Identity::open(&storage, &data_dir, &config.id)
            .with_context(|| format!("reading the identity of the store in {}", data_dir.display()))?;
        let counters = Arc::new(Counters::default());
        if admin_token.is_none() {
            tracing::warn!(
                "no cluster secret (no admin token in the meta file): the peer port accepts any dynabed node"
            );
        }
        let key = handshake::PeerKey::new(admin_token.as_deref());
        let me = MemberRecord {
            id: config.id.clone(),
            host: config.host,
            port: config.port,
            peer_port: config.peer_port(),
            generation: crate::api::now_ms(),
            heartbeat: 0,
            left: false,
        };
        anyhow::ensure!(
            config.timeout_cap_ms >= config.timeout_floor_ms,
            "--timeout_cap_ms ({}) must be at least --timeout_floor_ms ({})",
            config.timeout_cap_ms,
            config.timeout_floor_ms
        );
        anyhow::ensure!(
            config.prune_max >= config.prune_limit,
            "--prune_max ({}) must be at least --prune_limit ({})",
            config.prune_max,
            config.prune_limit
        );
        let prune =
            version::PruneRule { limit: config.prune_limit, max: config.prune_max, young_ms: config.prune_young_ms };
        let fail_after = Duration::from_millis(config.fail_after_ms);
        let clock = Arc::new(clock::NodeClock::default());
        let membership = Membership::new(me, config.partitions, config.n as usize, fail_after, config.phi_threshold)?
            .with_clock(clock.clone());
        let max_siblings = config.max_siblings as usize;
        Ok(Arc::new(Node {
            replica: Replica::new(storage, identity, prune, max_siblings, counters.clone(), clock.clone())?,
            membership,
            latency: Latency::new(config.timeout_floor(), config.timeout_cap()),
            peers: PeerPool::new(
                Duration::from_millis(config.connect_timeout_ms),
                Some(config.host),
                key.clone(),
                &config.id,
            ),
            peer_admission: Arc::new(peer::Admission::new(key, config.max_peer_connections as usize, counters.clone())),
            client_gate: admission::ConnectionGate::new("client", config.max_client_connections as usize),
            metrics: metrics::Metrics::new(&config.id, counters.clone()),
            counters,
            switches: LiveSwitches {
                hint_delivery: AtomicBool::new(true),
                anti_entropy: AtomicBool::new(config.anti_entropy),
                read_repair: AtomicBool::new(config.read_repair),
            },
            admin_token,
            staged: Default::default(),
            faults: faults::AppFaults::new(clock.clone()),
            clock,
            stop: Default::default(),
            config,
        }))
    }

    /// Serves until the process is told to stop (SIGTERM or SIGINT).
    pub async fn serve(self: Arc<Self>) -> anyhow::Result<()> {
        let client_addr = SocketAddr::new(self.config.host, self.config.port);
        let peer_addr = SocketAddr::new(self.config.host, self.config.peer_port());
        let client = TcpListener::bind(client_addr).await.with_context(|| format!("listening on {client_addr}"))?;
        let peers = TcpListener::bind(peer_addr).await.with_context(|| format!("listening on {peer_addr}"))?;
        tracing::info!(id = self.id(), actor = self.replica.actor(), %client_addr, %peer_addr, "node serving");
        let handler: peer::Handler = {
            let node = self.clone();
            Arc::new(move |request, from| {
                let node = node.clone();
                Box::pin(async move { node.receive_from_peer(request, from).await })
            })
        };
        let tasks = [
            tokio::spawn(peer::serve(peers, handler, self.peer_admission.clone())),
            tokio::spawn(http::serve(client, self.clone())),
            tokio::spawn(self.clone().gossip_forever()),
            tokio::spawn(self.clone().deliver_hints_forever()),
            tokio::spawn(self.clone().anti_entropy_forever()),
            tokio::spawn(self.clone().checkpoint_forever()),
            tokio::spawn(self.clone().seal_memtables_forever()),
            tokio::spawn(self.clone().close_idle_peers_forever()),
        ];
        let outcome = tokio::select! {
            stopped = wait_for_stop_signal() => stopped,
            _ = self.stop.notified() => Ok(()),
            failure = self.replica.storage().health().failed() => {
                Err(anyhow::anyhow!("stopping: the storage engine can no longer make writes durable: {failure}"))
            }
        };
        tracing::info!(id = self.id(), "stopping");
        for task in tasks {
            task.abort();
        }
        outcome
    }

    /// A peer's request, through the application-level faults: dropped
    /// (never answered) from a cut peer, held first when slow.
    async fn receive_from_peer(self: Arc<Self>, request: Request, from: Arc<str>) -> Option<Response> {
        if self.faults.cuts(Some(&from)) {
            return None;
        }
        self.faults.hold().await;
        Some(self.answer_peer(request).await)
    }

    async fn answer_peer(self: Arc<Self>, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong,
            Request::Gossip(digest) => match self.membership.merge(&digest) {
                Ok(()) => Response::Gossip(self.membership.reply_to(&digest)),
                Err(e) => Response::Error(e.to_string()),
            },
            Request::Read { key } => self.answer_read(key),
            Request::Write { key, object, hint_for } => self.answer_write(key, &object, hint_for).await,
            Request::Coordinate(op) => {
                Response::Coordinated(self.execute(op, true).await.map(|c| c.into_outcome()).map_err(Into::into))
            }
            sync => self.answer_sync(sync),
        }
    }

    fn answer_read(&self, key: Bytes) -> Response {
        if key.len() > self.config.max_key_bytes {
            return Response::Error(format!(
                "key of {} bytes exceeds the limit of {}",
                key.len(),
                self.config.max_key_bytes
            ));
        }
        Counters::bump(&self.counters.replica_reads);
        let ring = self.membership.ring();
        let partition = ring.partition_of(&key);
        let owners = ring.preference_list(partition, self.membership.n());
        match self.replica.read_with_hints(partition, &key, owners.iter().copied()) {
            Ok(known) => Response::Object(known.map(|object| Bytes::from(object.encode()))),
            Err(e) => Response::Error(e.to_string()),
        }
    }

    /// Acks only once the write is durable (see [`Storage::durable`]).
    async fn answer_write(&self, key: Bytes, encoded: &[u8], hint_for: Option<String>) -> Response {
        if key.len() > self.config.max_key_bytes {
            return Response::Error(format!(
                "key of {} bytes exceeds the limit of {}",
                key.len(),
                self.config.max_key_bytes
            ));
        }
        let object = match replica::decode(encoded, &key) {
            Ok(object) => object,
            Err(e) => return Response::Error(e.to_string()),
        };
        let result = match hint_for {
            Some(owner) => self.replica.add_hint(&owner, &key, &object),
            None => {
                Counters::bump(&self.counters.replica_writes);
                let partition = self.membership.ring().partition_of(&key);
                self.replica.merge(partition, &key, &object).map(drop)
            }
        };
        let result = match result {
            Ok(()) => self.replica.storage().durable().await.map_err(ReplicaError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Response::Written,
            Err(e) => Response::Error(e.to_string()),
        }
    }

    /// Swaps views with one member per interval (see
    /// [`Membership::gossip_target`]); seeds are asked until this node
    /// knows anyone else.
    async fn gossip_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.gossip_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for round in 0u64.. {
            tick.tick().await;
            let digest = Request::Gossip(self.membership.beat());
            let targets: Vec<(Option<String>, SocketAddr)> = match self.membership.gossip_target(round) {
                Some((id, addr)) => vec![(Some(id), addr)],
                None => self.config.seeds.iter().map(|addr| (None, *addr)).collect(),
            };
            for (id, addr) in targets {
                let node = self.clone();
                let digest = digest.clone();
                tokio::spawn(async move { node.gossip_with(id, addr, digest).await });
            }
        }
    }

    async fn gossip_with(&self, id: Option<String>, addr: SocketAddr, digest: Request) {
        // Nothing waits on gossip: a slow answer is worth the round it
        // takes, where timing out would redial and repeat the work.
        let timeout = self.config.timeout_cap().max(Duration::from_millis(self.config.gossip_ms));
        let answer = self.send::<Digest>(addr, id.as_deref(), &digest, timeout).await;
        Counters::bump(if matches!(answer, Err(RpcError::Unreachable)) {
            &self.counters.gossip_unanswered
        } else {
            &self.counters.gossip_answered
        });
        match answer {
            Ok((theirs, _)) => {
                if let Err(e) = self.membership.merge(&theirs) {
                    tracing::error!(%addr, "{e}");
                } else if self.membership.peer_lacks_members(&theirs) {
                    // Its reply is bounded and this one-off push ends here:
                    // what it answers is merged and not pushed back again.
                    let everyone = Request::Gossip(self.membership.everyone());
                    if let Ok((reply, _)) = self.send::<Digest>(addr, id.as_deref(), &everyone, timeout).await {
                        let _ = self.membership.merge(&reply);
                    }
                }
            }
            Err(RpcError::Refused(e)) => tracing::error!(%addr, "peer refused our gossip: {e}"),
            Err(RpcError::Unexpected(other)) => tracing::warn!(%addr, "unexpected reply to gossip: {other}"),
            Err(RpcError::Unreachable) => {}
        }
    }

    /// Checkpoints the store now and then (see [`identity`]), on a
    /// blocking thread: a sync can take long enough to stall requests.
    async fn checkpoint_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.replica.needs_checkpoint() {
                continue;
            }
            let node = self.clone();
            match tokio::task::spawn_blocking(move || node.replica.checkpoint_if_changed()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("checkpoint failed: {e}"),
                Err(e) => tracing::error!("checkpoint task failed: {e}"),
            }
        }
    }

    /// Closes outgoing peer connections unused for [`PEER_IDLE`].
    async fn close_idle_peers_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PEER_IDLE / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let closed = self.peers.close_idle(PEER_IDLE);
            if closed > 0 {
                tracing::debug!(closed, "closed idle peer connections");
            }
        }
    }

    /// Flushes the store's memtables every `--memtable_age_s` (see
    /// [`Storage::seal_memtables`]); the flush itself runs on fjall's
    /// workers, the sealing on a blocking thread as it takes the journal's lock.
    async fn seal_memtables_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.memtable_age());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let node = self.clone();
            match tokio::task::spawn_blocking(move || node.replica.storage().seal_memtables()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("flushing the memtables failed: {e}"),
                Err(e) => tracing::error!("memtable flush task failed: {e}"),
            }
        }
    }

    /// Flips run-time switches (`None` leaves a switch as it is); returns
    /// them as they now are.
    pub fn configure(&self, change: SwitchChange) -> Switches {
        if let Some(on) = change.hint_delivery {
            self.switches.hint_delivery.store(on, Ordering::Relaxed);
        }
        if let Some(on) = change.anti_entropy {
            self.switches.anti_entropy.store(on, Ordering::Relaxed);
        }
        if let Some(on) = change.read_repair {
            self.switches.read_repair.store(on, Ordering::Relaxed);
        }
        self.switch_state()
    }

    pub fn switch_state(&self) -> Switches {
        Switches {
            hint_delivery: self.switches.hint_delivery.load(Ordering::Relaxed),
            anti_entropy: self.switches.anti_entropy.load(Ordering::Relaxed),
            read_repair: self.switches.read_repair.load(Ordering::Relaxed),
        }
    }
}

/// A node's data is nobody else's business: folders it creates are 0700.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Runs a node to completion on its own small runtime.
pub fn run(config: NodeConfig, admin_token: Option<String>) -> anyhow::Result<()> {
    let runtime = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(config.threads as usize).enable_all().build()?
    };
    runtime.block_on(async {
        let node = Node::open(config, admin_token)?;
        node.serve().await
    })
}
