//! The workload's clients: a preload, then a closed or open loop of YCSB
//! operations until the run's end.
//!
//! Clients are spread over a few threads, each with its own single-threaded
//! runtime made inside the cluster's client namespace (so every socket is
//! made there). Each client keeps one keep-alive connection per node, its
//! own seeded generator and its own causal contexts, and pushes one
//! `Sample` per request to the recorder; it never waits for the recorder.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::keys::{KeyChooser, KeyDistribution};
use super::ops::{key_name, value, value_id, Op, Routing, UpdateMode, Workload};
use super::recorder::Message;
use super::sample::{Outcome, Phase, PhaseCell, Sample};
use crate::api::ring::Ring;
use crate::client::{Answer, Client, ClientError};

/// Attempts at writing each key during the preload before the run gives up.
const LOAD_ATTEMPTS: u32 = 5;

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub workload: Workload,
    pub distribution: KeyDistribution,
    pub keyspace: u32,
    pub concurrency: u32,
    pub duration: Duration,
    pub value_size: usize,
    pub r: Option<usize>,
    pub w: Option<usize>,
    pub update_mode: UpdateMode,
    pub routing: Routing,
    /// Requests per second for an open loop; a closed loop when `None`.
    pub target_rate: Option<f64>,
    pub op_timeout: Duration,
    pub backoff: Duration,
    pub seed: u64,
}

/// The nodes requests go to.
#[derive(Debug, Clone)]
pub struct Targets {
    pub ids: Vec<String>,
    pub addrs: Vec<SocketAddr>,
    /// For `--routing coordinator`: each key's preference list, as indices.
    pub preference: Vec<Vec<u16>>,
}

impl Targets {
    /// `ring` and `n` are needed for coordinator routing only.
    pub fn new(ids: Vec<String>, addrs: Vec<SocketAddr>, ring: Option<(&Ring, usize)>, keyspace: u32) -> Self {
        let preference = match ring {
            Some((ring, n)) => (0..keyspace)
                .map(|k| {
                    let partition = ring.partition_of(key_name(k).as_bytes());
                    let owners = ring.preference_list(partition, n);
                    owners.iter().filter_map(|o| ids.iter().position(|id| id == o).map(|i| i as u16)).collect()
                })
                .collect(),
            None => Vec::new(),
        };
        Targets { ids, addrs, preference }
    }
}

/// What the driver and the clients share while a run goes on.
pub struct Shared {
    pub phase: PhaseCell,
    pub stop: AtomicBool,
    pub requests: AtomicU64,
    pub failed: AtomicU64,
    t0: OnceLock<Instant>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            phase: PhaseCell::new(Phase::Load),
            stop: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            t0: OnceLock::new(),
        })
    }

    /// The start of warmup, once the preload is done.
    pub fn t0(&self) -> Option<Instant> {
        self.t0.get().copied()
    }
}

/// Runs the preload and the measured workload; returns the number of
/// requests sent. `origin` is the instant sample times count from.
pub fn run(
    spec: Arc<Spec>,
    targets: Arc<Targets>,
    client_netns: Option<String>,
    origin: Instant,
    shared: Arc<Shared>,
    recorder: Sender<Message>,
) -> anyhow::Result<u64> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(spec.concurrency as usize).max(1);
    let barrier = Arc::new(Barrier::new(threads));
    let schedule = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let clients: Vec<Worker> = (0..spec.concurrency)
                .filter(|c| *c as usize % threads == thread)
                .map(|id| Worker::new(id, &spec, &targets, &shared, &recorder, origin))
                .collect();
            let (spec, shared, barrier, schedule, recorder) =
                (spec.clone(), shared.clone(), barrier.clone(), schedule.clone(), recorder.clone());
            let netns = client_netns.clone();
            std::thread::Builder::new().name(format!("client-{thread}")).spawn(move || {
                let work = || drive(clients, &spec, &shared, &barrier, &schedule, &recorder, origin);
                match netns {
                    Some(ns) => netns::namespace::run_in(&ns, work)
                        .map_err(|e| abandon(&shared, &barrier, anyhow::Error::new(e)))
                        .context("entering the client namespace")?,
                    None => work(),
                }
            })
        })
        .collect::<Result<_, _>>()
        .context("starting client threads")?;
    drop(recorder);
    let mut sent = 0;
    let mut first_error = None;
    for worker in workers {
        match worker.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
            Ok(n) => sent += n,
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    first_error.map_or(Ok(sent), Err)
}

/// One thread's share: preload, meet the other threads, run, report.
fn drive(
    mut clients: Vec<Worker>,
    spec: &Spec,
    shared: &Shared,
    barrier: &Barrier,
    schedule: &Arc<AtomicU64>,
    recorder: &Sender<Message>,
    origin: Instant,
) -> anyhow::Result<u64> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return Err(abandon(shared, barrier, e.into())),
    };
    let share = spec.concurrency as usize;
    let loaded: anyhow::Result<()> = runtime.block_on(async {
        let loads = clients.iter_mut().map(|c| {
            let keys = (c.id as usize..spec.keyspace as usize).step_by(share).map(|k| k as u32);
            c.load(keys.collect())
        });
        futures::future::try_join_all(loads).await.map(drop)
    });
    if loaded.is_err() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    if barrier.wait().is_leader() && !shared.stop.load(Ordering::Relaxed) {
        let t0 = shared.phase.set(Phase::Warmup);
        let _ = shared.t0.set(t0);
        let _ = recorder.send(Message::Start { t0_us: micros_since(origin, t0) });
    }
    barrier.wait();
    loaded?;
    let Some(t0) = shared.t0() else {
        bail!("stopped before the measured run (interrupted, or the preload failed on another client thread)")
    };
    let end = t0 + spec.duration;
    runtime.block_on(async {
        let runs = clients.iter_mut().map(|c| c.measure(end, schedule.clone()));
        futures::future::join_all(runs).await;
    });
    Ok(clients.iter().map(|c| c.sent).sum())
}

/// A thread that cannot run still meets the others at both of `drive`'s
/// barrier waits (and stops them), so that no thread waits forever.
fn abandon(shared: &Shared, barrier: &Barrier, error: anyhow::Error) -> anyhow::Error {
    shared.stop.store(true, Ordering::Relaxed);
    barrier.wait();
    barrier.wait();
    error
}

fn micros_since(origin: Instant, at: Instant) -> i64 {
    at.saturating_duration_since(origin).as_micros() as i64
}

/// One client: its connections, generator, contexts and back-offs.
struct Worker {
    id: u32,
    spec: Spec,
    targets: Arc<Targets>,
    shared: Arc<Shared>,
    recorder: Sender<Message>,
    origin: Instant,
    chooser: KeyChooser,
    rng: SmallRng,
    connections: Vec<Client>,
    contexts: HashMap<u32, String>,
    backoff_until: Vec<Option<Instant>>,
    writes: u64,
    sent: u64,
}

impl Worker {
    fn new(
        id: u32,
        spec: &Spec,
        targets: &Arc<Targets>,
        shared: &Arc<Shared>,
        recorder: &Sender<Message>,
        origin: Instant,
    ) -> Self {
        let connections = targets.addrs.iter().map(|a| Client::new(*a).with_timeout(spec.op_timeout)).collect();
        Worker {
            id,
            spec: spec.clone(),
            targets: targets.clone(),
            shared: shared.clone(),
            recorder: recorder.clone(),
            origin,
            chooser: KeyChooser::new(spec.distribution, spec.keyspace as u64),
            rng: SmallRng::seed_from_u64(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id as u64),
            connections,
            contexts: HashMap::new(),
            backoff_until: vec![None; targets.addrs.len()],
            writes: 0,
            sent: 0,
        }
    }

    /// Writes each key once, over what any earlier run left (read, then
    /// write with that context), retrying a failed write a few times.
    async fn load(&mut self, keys: Vec<u32>) -> anyhow::Result<()> {
        for key in keys {
            if self.shared.stop.load(Ordering::Relaxed) {
                bail!("stopped during the preload");
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                let read = self.request(Op::Read, key, None, None).await;
                let context = read.ok().and_then(|a| a.context);
                let write = self.request(Op::Update, key, None, context).await;
                match write {
                    Ok(answer) if answer.status.is_success() => break,
                    outcome if attempt >= LOAD_ATTEMPTS => {
                        let why = match outcome {
                            Ok(answer) => format!("{} {}", answer.status, answer.reason()),
                            Err(e) => e.to_string(),
                        };
                        bail!("the preload could not write {} after {attempt} attempts: {why}", key_name(key))
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }

    /// Issues operations until `end`: back to back (closed loop) or at the
    /// schedule's slots (open loop, measured from each slot).
    async fn measure(&mut self, end: Instant, schedule: Arc<AtomicU64>) {
        let t0 = self.shared.t0().expect("measuring starts after t0");
        while !self.shared.stop.load(Ordering::Relaxed) {
            let intended = match self.spec.target_rate {
                None => None,
                Some(rate) => {
                    let slot = schedule.fetch_add(1, Ordering::Relaxed);
                    let at = t0 + Duration::from_secs_f64(slot as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                    Some(at)
                }
            };
            // A loop that fell behind its schedule stops at the end too: the
            // slots it never started show as throughput below the target rate.
            if intended.unwrap_or_else(Instant::now) >= end || Instant::now() >= end {
                break;
            }
            self.operation(intended).await;
        }
    }

    /// One operation; `intended` is its open-loop slot (a closed loop
    /// measures from the send).
    async fn operation(&mut self, intended: Option<Instant>) {
        let key = self.chooser.next(&mut self.rng) as u32;
        if self.rng.random_bool(self.spec.workload.read_fraction()) {
            let _ = self.request(Op::Read, key, intended, None).await;
            return;
        }
        let context = match self.spec.update_mode {
            UpdateMode::Context => self.contexts.get(&key).cloned(),
            UpdateMode::Blind => None,
            UpdateMode::Rmw => {
                let read = self.request(Op::UpdateRead, key, intended, None).await;
                match read {
                    Ok(answer) if Outcome::Status(answer.status.as_u16()).ok(Op::UpdateRead) => answer.context,
                    // The read failed: write with what this client last saw of the key.
                    _ => self.contexts.get(&key).cloned(),
                }
            }
        };
        // The PUT's latency is its own, from its send: in an open loop the
        // slot's wait and the update's read are in the `update_read` row,
        // which counts from the slot.
        let put_start = if self.spec.update_mode == UpdateMode::Rmw { None } else { intended };
        let _ = self.request(Op::Update, key, put_start, context).await;
    }

    /// One recorded request to an entry node chosen by the routing policy.
    async fn request(
        &mut self,
        op: Op,
        key: u32,
        intended: Option<Instant>,
        context: Option<String>,
    ) -> Result<Answer, ClientError> {
        let entry = self.entry(key).await;
        let name = key_name(key);
        let (sent, phase) = self.shared.phase.at(intended);
        let connection = &mut self.connections[entry];
        let written = (op == Op::Update).then(|| {
            self.writes += 1;
            format!("c{}-{}", self.id, self.writes)
        });
        let result = match &written {
            None => connection.get(&name, self.spec.r).await,
            Some(id) => connection.put(&name, value(id, self.spec.value_size), context.as_deref(), self.spec.w).await,
        };
        let end = Instant::now();
        let outcome = Outcome::of(&result);
        if outcome == Outcome::Connect {
            self.backoff_until[entry] = Some(end + self.spec.backoff);
        }
        let answer = result.as_ref().ok();
        let read = answer.filter(|_| op.reads() && outcome.ok(op)).map_or_else(Vec::new, read_ids);
        // Every answer's context is kept, except by blind updates that never send one.
        if let Some(context) = answer.filter(|_| outcome.ok(op)).and_then(|a| a.context.clone()) {
            if self.spec.update_mode != UpdateMode::Blind {
                self.contexts.insert(key, context);
            }
        }
        let sample = Sample {
            intended_us: micros_since(self.origin, intended.unwrap_or(sent)),
            sent_us: micros_since(self.origin, sent),
            end_us: micros_since(self.origin, end),
            client: self.id,
            op,
            key,
            entry: entry as u16,
            coordinator: answer.and_then(|a| a.coordinator.clone()),
            outcome,
            phase,
            siblings: read.len() as u32,
            siblings_after: answer.filter(|_| op == Op::Update).and_then(|a| a.siblings_after),
            clock: answer.and_then(|a| a.clock.clone()),
            dot: answer.and_then(|a| a.dot.clone()),
            written,
            read,
        };
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        if !outcome.ok(op) {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.sent += 1;
        let _ = self.recorder.send(Message::Sample(sample));
        result
    }

    /// The entry node: the routing policy's choice, or the next node in its
    /// order that this client is not backing off from; when it backs off
    /// from all of them, it waits for the first back-off to end.
    async fn entry(&mut self, key: u32) -> usize {
        let nodes = self.targets.addrs.len();
        let first = match self.spec.routing {
            Routing::Random => self.rng.random_range(0..nodes),
            Routing::Fixed => self.id as usize % nodes,
            Routing::Coordinator => self.targets.preference[key as usize].first().map_or(0, |&i| i as usize),
        };
        let preference: &[u16] =
            if self.spec.routing == Routing::Coordinator { &self.targets.preference[key as usize] } else { &[] };
        let order = preference
            .iter()
            .map(|&i| i as usize)
            .chain((0..nodes).map(|i| (first + i) % nodes))
            .filter(|i| *i < nodes);
        let now = Instant::now();
        let mut soonest: Option<(Instant, usize)> = None;
        for candidate in order {
            match self.backoff_until[candidate] {
                Some(until) if until > now => {
                    if soonest.is_none_or(|(s, _)| until < s) {
                        soonest = Some((until, candidate));
                    }
                }
                _ => return candidate,
            }
        }
        let (until, candidate) = soonest.expect("at least one node");
        tokio::time::sleep_until(until.into()).await;
        candidate
    }
}

/// The ids of the values a read returned: one for 200, each sibling's for
/// 300, none for 404 (or an answer that makes no sense).
fn read_ids(answer: &Answer) -> Vec<String> {
    answer.values().map(|values| values.iter().map(|v| value_id(v)).collect()).unwrap_or_default()
}
