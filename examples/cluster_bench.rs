//! Closed-loop load generator for a running dynabed cluster; `scripts/bench`
//! starts the cluster and runs this.
//!
//! YCSB workload A against `user<i>` keys: 50 % GET (`?r=`), 50 % PUT
//! (`?w=`) carrying the context of this worker's last read of the key (or
//! none). Each worker keeps one `Client` (one keep-alive connection) per
//! node and picks the entry node uniformly at random per request. Every
//! point runs a warmup, then a fixed measured window; latencies go into one
//! HdrHistogram per operation type.
//!
//! Besides throughput and latency, each row shows the CPU the nodes and this
//! process burnt during the measured window, per operation, so the cost of
//! an operation can be read off directly (the machine has two cores; the
//! nodes and the load generator share them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use dynabed::client::Client;
use dynabed::cluster::running::{Cluster, Node};
use dynabed::workload::keys::{KeyChooser, KeyDistribution};
use hdrhistogram::Histogram;
use hyper::StatusCode;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug, Clone)]
#[command(about = "Closed-loop YCSB-A load against a running dynabed cluster")]
struct Args {
    /// The cluster file written by `dynabed cluster up`.
    #[arg(long = "cluster_procs", alias = "cluster-procs")]
    cluster_procs: PathBuf,
    /// Label for the storage column (what the cluster was started with).
    #[arg(long, default_value = "?")]
    storage: String,
    /// Label for the repetition column, when a caller repeats runs.
    #[arg(long, default_value = "-")]
    rep: String,
    /// Concurrency levels to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Measured seconds per point [default: $BENCH_DURATION_S, else 10].
    #[arg(long = "duration_s", default_value_t = env_or("BENCH_DURATION_S", 10.0))]
    duration_s: f64,
    /// Unmeasured seconds before each point [default: $BENCH_WARMUP_S, else 2].
    #[arg(long = "warmup_s", default_value_t = env_or("BENCH_WARMUP_S", 2.0))]
    warmup_s: f64,
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Key distribution: uniform, zipf (YCSB's scrambled zipfian) or zipf-exact.
    #[arg(long, default_value = "uniform")]
    dist: KeyDistribution,
    #[arg(long = "value_size", default_value_t = 100)]
    value_size: usize,
    /// Fraction of operations that are reads.
    #[arg(long = "read_fraction", default_value_t = 0.5)]
    read_fraction: f64,
    #[arg(long, default_value_t = 2)]
    r: usize,
    #[arg(long, default_value_t = 2)]
    w: usize,
    /// Load generator runtime: `current` (one thread) or `multi:<workers>`
    /// [default: $BENCH_RUNTIME, else current].
    #[arg(long, default_value_t = env_or("BENCH_RUNTIME", "current".to_owned()))]
    runtime: String,
    /// Also keep the context a PUT answers with, as if it were a read
    /// (fewer siblings; not the workload, for comparison only).
    #[arg(long = "context_from_put")]
    context_from_put: bool,
    /// Skip the preload (the keys are already there).
    #[arg(long = "no_preload")]
    no_preload: bool,
    /// Print the header line (off to append rows to an existing table).
    #[arg(long = "no_header")]
    no_header: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = match args.runtime.as_str() {
        "current" => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        other => {
            let workers: usize = other
                .strip_prefix("multi:")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("--runtime is `current` or `multi:<workers>`, not {other:?}"))?;
            tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cluster = Cluster::read(&args.cluster_procs)?;
    let nodes = cluster.nodes();
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(nodes.iter().map(|n| n.addr).collect());
    if !args.no_preload {
        let started = Instant::now();
        preload(&args, &addrs).await?;
        eprintln!("preloaded {} keys in {:.2} s", args.keys, started.elapsed().as_secs_f64());
    }
    if !args.no_header {
        print_header();
    }
    for &concurrency in &args.concurrency {
        let point = run_point(&args, &addrs, nodes, concurrency).await?;
        point.print(&args.storage, &args.rep, &args.runtime)?;
    }
    Ok(())
}

fn value(size: usize, rng: &mut SmallRng) -> Bytes {
    let mut v = vec![0u8; size];
    for b in v.iter_mut() {
        *b = rng.random_range(b'a'..=b'z');
    }
    Bytes::from(v)
}

/// Writes every key once (W as configured), 16 at a time.
async fn preload(args: &Args, addrs: &Arc<Vec<SocketAddr>>) -> anyhow::Result<()> {
    let workers = 16.min(args.keys.max(1));
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (addrs, args) = (addrs.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut clients: Vec<Client> = addrs.iter().map(|a| Client::new(*a)).collect();
            let mut rng = SmallRng::seed_from_u64(args.seed ^ 0xabcd ^ worker as u64);
            for i in (worker..args.keys).step_by(workers) {
                let node = i % clients.len();
                let answer = clients[node]
                    .put(&format!("user{i}"), value(args.value_size, &mut rng), None, Some(args.w))
                    .await
                    .with_context(|| format!("preloading user{i}"))?;
                if !answer.status.is_success() {
                    bail!("preloading user{i}: {} {}", answer.status, answer.reason());
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

struct WorkerResult {
    get: Histogram<u64>,
    put: Histogram<u64>,
    errors: u64,
    siblings: u64,
    get_body_bytes: u64,
    first_error: Option<String>,
}

impl WorkerResult {
    fn new() -> Self {
        WorkerResult {
            get: histogram(),
            put: histogram(),
            errors: 0,
            siblings: 0,
            get_body_bytes: 0,
            first_error: None,
        }
    }

    fn absorb(&mut self, other: WorkerResult) -> anyhow::Result<()> {
        self.get.add(&other.get)?;
        self.put.add(&other.put)?;
        self.errors += other.errors;
        self.siblings += other.siblings;
        self.get_body_bytes += other.get_body_bytes;
        self.first_error = self.first_error.take().or(other.first_error);
        Ok(())
    }
}

/// One concurrency point: every worker's results together, and the CPU
/// the measured window cost.
struct Point {
    concurrency: usize,
    seconds: f64,
    totals: WorkerResult,
    node_cpu_s: Option<f64>,
    own_cpu_s: f64,
}

async fn run_point(
    args: &Args,
    addrs: &Arc<Vec<SocketAddr>>,
    nodes: &[Node],
    concurrency: usize,
) -> anyhow::Result<Point> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup_s);
    let measure_until = measure_from + Duration::from_secs_f64(args.duration_s);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (addrs, args) = (addrs.clone(), args.clone());
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add((concurrency * 10_000 + worker) as u64);
        tasks.push(tokio::spawn(async move { worker_loop(args, addrs, seed, measure_from, measure_until).await }));
    }
    // Sample CPU counters at the edges of the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let nodes_before = nodes_cpu(nodes);
    let own_before = own_cpu();
    tokio::time::sleep_until(measure_until.into()).await;
    let nodes_after = nodes_cpu(nodes);
    let own_after = own_cpu();
    let mut point = Point {
        concurrency,
        seconds: args.duration_s,
        totals: WorkerResult::new(),
        node_cpu_s: nodes_before.zip(nodes_after).map(|(b, a)| a - b),
        own_cpu_s: own_after - own_before,
    };
    for task in tasks {
        point.totals.absorb(task.await?)?;
    }
    if let Some(e) = &point.totals.first_error {
        eprintln!("c={concurrency}: first error: {e}");
    }
    Ok(point)
}

async fn worker_loop(
    args: Args,
    addrs: Arc<Vec<SocketAddr>>,
    seed: u64,
    measure_from: Instant,
    measure_until: Instant,
) -> WorkerResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut clients: Vec<Client> = addrs.iter().map(|a| Client::new(*a)).collect();
    // This worker's last read context of each key.
    let mut contexts: HashMap<usize, String> = HashMap::new();
    let keys: Vec<String> = (0..args.keys).map(|i| format!("user{i}")).collect();
    let chooser = KeyChooser::new(args.dist, args.keys as u64);
    let mut result = WorkerResult::new();
    loop {
        let began = Instant::now();
        if began >= measure_until {
            break;
        }
        let key = chooser.next(&mut rng) as usize;
        let node = rng.random_range(0..clients.len());
        let is_read = rng.random_bool(args.read_fraction);
        let (mut sibling, mut body_bytes) = (false, 0);
        let outcome = if is_read {
            match clients[node].get(&keys[key], Some(args.r)).await {
                Ok(answer) => {
                    match (answer.status, answer.context.clone()) {
                        (StatusCode::OK | StatusCode::MULTIPLE_CHOICES, Some(context)) => {
                            contexts.insert(key, context);
                        }
                        _ => {
                            contexts.remove(&key);
                        }
                    }
                    sibling = answer.status == StatusCode::MULTIPLE_CHOICES;
                    body_bytes = answer.body.len() as u64;
                    let ok =
                        matches!(answer.status, StatusCode::OK | StatusCode::MULTIPLE_CHOICES | StatusCode::NOT_FOUND);
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("GET {}: {} {}", keys[key], answer.status, answer.reason()))
                    }
                }
                Err(e) => Err(format!("GET {}: {e}", keys[key])),
            }
        } else {
            let v = value(args.value_size, &mut rng);
            match clients[node].put(&keys[key], v, contexts.get(&key).map(String::as_str), Some(args.w)).await {
                Ok(answer) if answer.status.is_success() => {
                    if let (true, Some(context)) = (args.context_from_put, answer.context) {
                        contexts.insert(key, context);
                    }
                    Ok(())
                }
                Ok(answer) => Err(format!("PUT {}: {} {}", keys[key], answer.status, answer.reason())),
                Err(e) => Err(format!("PUT {}: {e}", keys[key])),
            }
        };
        let ended = Instant::now();
        if began < measure_from || ended > measure_until {
            continue;
        }
        match outcome {
            Ok(()) => {
                result.siblings += sibling as u64;
                result.get_body_bytes += body_bytes;
                let us = (ended - began).as_micros().max(1) as u64;
                let h = if is_read { &mut result.get } else { &mut result.put };
                h.saturating_record(us);
            }
            Err(e) => {
                result.errors += 1;
                if result.first_error.is_none() {
                    result.first_error = Some(e);
                }
            }
        }
    }
    result
}

/// CPU seconds (user + system) of every node process, if all are readable.
fn nodes_cpu(nodes: &[Node]) -> Option<f64> {
    let ticks: u64 =
        nodes.iter().map(|n| netns::process::stat(n.entry.pid).map(|s| s.cpu_ticks)).sum::<Option<u64>>()?;
    Some(ticks as f64 / netns::process::ticks_per_second() as f64)
}

/// CPU seconds (user + system) of this process.
fn own_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn print_header() {
    println!(
        "{:<12} {:>3} {:>4} {:>9} | {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7} | {:>6} {:>6} {:>6} | {:>10} {:>9} | runtime",
        "storage",
        "rep",
        "conc",
        "ops/s",
        "p50",
        "p99",
        "p99.9",
        "GET p50",
        "p99",
        "PUT p50",
        "p99",
        "errors",
        "sibl%",
        "GET B",
        "node µs/op",
        "gen µs/op"
    );
}

impl Point {
    fn print(&self, storage: &str, rep: &str, runtime: &str) -> anyhow::Result<()> {
        let t = &self.totals;
        let ops = t.get.len() + t.put.len();
        let rate = ops as f64 / self.seconds;
        let mut all = t.get.clone();
        all.add(&t.put)?;
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.3}", h.value_at_quantile(q) as f64 / 1000.0)
            }
        };
        let per_op = |cpu_s: f64| if ops == 0 { "-".to_owned() } else { format!("{:.1}", cpu_s * 1e6 / ops as f64) };
        println!(
            "{:<12} {:>3} {:>4} {:>9.0} | {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7} | {:>6} {:>6.1} {:>6.0} | {:>10} {:>9} | {}",
            storage,
            rep,
            self.concurrency,
            rate,
            ms(&all, 0.5),
            ms(&all, 0.99),
            ms(&all, 0.999),
            ms(&t.get, 0.5),
            ms(&t.get, 0.99),
            ms(&t.put, 0.5),
            ms(&t.put, 0.99),
            t.errors,
            100.0 * t.siblings as f64 / t.get.len().max(1) as f64,
            t.get_body_bytes as f64 / t.get.len().max(1) as f64,
            self.node_cpu_s.map(per_op).unwrap_or_else(|| "-".to_owned()),
            per_op(self.own_cpu_s),
            runtime,
        );
        Ok(())
    }
}
