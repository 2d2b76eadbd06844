//! Helpers for `scripts/bench` sections other than the YCSB load (which is
//! `examples/cluster_bench.rs`), against a running cluster described by its
//! cluster file:
//!
//! - `config`: sets the admin switches (hint delivery, anti-entropy) on every node;
//! - `preload`: writes many keys fast, with many concurrent clients;
//! - `rss`: resident memory of the node processes (from /proc);
//! - `repair`: the anti-entropy cost experiment (see [`repair`]), which
//!   needs a loopback cluster with persistent (fjall) storage.
//!
//! Only loopback clusters are reachable from here: it never enters a
//! namespace, so it refuses a netns cluster for anything that talks to nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use dynabed::api::admin::{Fanout, RepairRound, SwitchChange, SyncStats};
use dynabed::api::status::Switches;
use dynabed::client::Client;
use dynabed::cluster::running::Cluster;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(about = "Benchmark helpers for a running dynabed cluster")]
struct Args {
    /// The cluster file written by `dynabed cluster up`.
    #[arg(long = "cluster_procs", alias = "cluster-procs", global = true, default_value = "cluster_procs.json")]
    cluster_procs: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// POST /admin/config to every node.
    Config {
        #[arg(long = "hint_delivery")]
        hint_delivery: Option<bool>,
        #[arg(long = "anti_entropy")]
        anti_entropy: Option<bool>,
    },
    /// Writes `key_prefix<i>` for i in 0..keys.
    Preload(PreloadArgs),
    /// Resident memory of the node processes: prints
    /// "nodes mean_kb max_kb total_kb max_node nodes_at_or_over_20MB".
    Rss,
    /// CPU the node processes burn over a window: prints "cpu_ms_per_s" (sum over nodes).
    Cpu {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// The anti-entropy cost experiment; prints a table.
    Repair {
        /// The dynabed binary (for `cluster restart`).
        #[arg(long)]
        dynabed: PathBuf,
        /// Numbers of differing keys to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0,10,100,1000")]
        diffs: Vec<usize>,
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        #[arg(long = "value_size", default_value_t = 100)]
        value_size: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seed of the measured round.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fanout of the measured round: `all` reconciles node1 with both
        /// other replicas (so every differing key is found); `one` with one
        /// drawn per partition (about half of them then).
        #[arg(long, default_value = "all")]
        fanout: String,
        /// The node that is killed and comes back behind.
        #[arg(long, default_value = "node3")]
        victim: String,
        /// The node that coordinates the writes and runs the measured round.
        #[arg(long, default_value = "node1")]
        coordinator: String,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct PreloadArgs {
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    #[arg(long = "key_prefix", default_value = "user")]
    key_prefix: String,
    #[arg(long = "value_size", default_value_t = 100)]
    value_size: usize,
    #[arg(long, default_value_t = 3)]
    w: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Only through this node (default: spread over all nodes).
    #[arg(long)]
    via: Option<String>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// How long an admin call may take: a repair round over many keys is slow.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The cluster, refused when its nodes live in namespaces: their addresses
/// are not to be dialled from the host.
fn reachable(path: &Path) -> anyhow::Result<Cluster> {
    let cluster = Cluster::read(path)?;
    ensure!(
        cluster.client_netns().is_none(),
        "{} is a netns cluster: its nodes are not reachable from here",
        path.display()
    );
    Ok(cluster)
}

fn admin_client(cluster: &Cluster, id: &str) -> anyhow::Result<Client> {
    Ok(cluster.admin(cluster.node(id)?, ADMIN_TIMEOUT))
}

async fn set_switches(cluster: &Cluster, id: &str, change: SwitchChange) -> anyhow::Result<Switches> {
    admin_client(cluster, id)?.set_switches(change).await.with_context(|| format!("{id}: /admin/config"))
}

async fn repair_round(cluster: &Cluster, id: &str, round: RepairRound) -> anyhow::Result<SyncStats> {
    admin_client(cluster, id)?.repair_round(round).await.with_context(|| format!("{id}: /admin/repair/round"))
}

/// Partitions whose roots differ between any two nodes that both replicate them.
async fn differing_partitions(cluster: &Cluster) -> anyhow::Result<usize> {
    let mut all: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for node in cluster.nodes() {
        let roots = cluster
            .admin(node, ADMIN_TIMEOUT)
            .merkle_roots()
            .await
            .with_context(|| format!("{}: /admin/merkle", node.id))?;
        for (p, root) in roots.partitions {
            all.entry(p).or_default().push(root);
        }
    }
    Ok(all.values().filter(|roots| roots.iter().any(|r| r != &roots[0])).count())
}

async fn configure(cluster: &Cluster, ids: &[String], change: SwitchChange) -> anyhow::Result<()> {
    for id in ids {
        set_switches(cluster, id, change).await?;
    }
    Ok(())
}

/// Waits until every node answers and sees every member alive.
async fn wait_all_alive(cluster: &Cluster, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut ok = true;
        for node in cluster.nodes() {
            let mut client = Client::new(node.addr).with_timeout(Duration::from_secs(1));
            let sees_all = match client.status().await {
                Ok(status) => status.members.len() == cluster.nodes().len() && status.down().next().is_none(),
                Err(_) => false,
            };
            ok &= sees_all;
        }
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("after {timeout:?} not every node sees all members alive");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Cmd::Rss => {
            let cluster = Cluster::read(&args.cluster_procs)?;
            let mut rss = Vec::new();
            for node in cluster.nodes() {
                let pid = node.entry.pid;
                let kb = vm_rss_kb(pid).with_context(|| format!("{}: pid {pid} gone?", node.id))?;
                rss.push((kb, node.id.clone()));
            }
            let total: u64 = rss.iter().map(|r| r.0).sum();
            let (max, max_id) = rss.iter().max().cloned().unwrap_or_default();
            let over = rss.iter().filter(|r| r.0 >= 20 * 1024).count();
            println!("{} {} {max} {total} {max_id} {over}", rss.len(), total / rss.len().max(1) as u64);
        }
        Cmd::Cpu { seconds } => {
            let cluster = Cluster::read(&args.cluster_procs)?;
            let before = nodes_cpu_s(&cluster)?;
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            let used = nodes_cpu_s(&cluster)? - before;
            println!("{:.1}", used * 1000.0 / started.elapsed().as_secs_f64());
        }
        Cmd::Config { hint_delivery, anti_entropy } => {
            let cluster = reachable(&args.cluster_procs)?;
            let change = SwitchChange { hint_delivery, anti_entropy, read_repair: None };
            for id in cluster.ids() {
                let now = set_switches(&cluster, &id, change).await?;
                eprintln!("{id}: {}", serde_json::to_string(&now)?);
            }
        }
        Cmd::Preload(p) => {
            let cluster = reachable(&args.cluster_procs)?;
            let started = Instant::now();
            let errors = preload(&cluster, &p, 0..p.keys).await?;
            ensure!(errors == 0, "{errors} writes failed");
            let s = started.elapsed().as_secs_f64();
            eprintln!("preloaded {} keys (w={}) in {s:.2} s, {:.0} writes/s", p.keys, p.w, p.keys as f64 / s);
        }
        Cmd::Repair { dynabed, diffs, keys, value_size, concurrency, seed, fanout, victim, coordinator } => {
            let cluster = reachable(&args.cluster_procs)?;
            let setup = RepairSetup { dynabed, keys, value_size, concurrency, seed, fanout, victim, coordinator };
            repair(cluster, setup, &diffs).await?;
        }
    }
    Ok(())
}

/// CPU seconds (user + system) of every node process.
fn nodes_cpu_s(cluster: &Cluster) -> anyhow::Result<f64> {
    let mut ticks = 0;
    for node in cluster.nodes() {
        let pid = node.entry.pid;
        let stat = netns::process::stat(pid).with_context(|| format!("{}: pid {pid} gone?", node.id))?;
        ticks += stat.cpu_ticks;
    }
    Ok(ticks as f64 / netns::process::ticks_per_second() as f64)
}

fn vm_rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    Ok(line.split_whitespace().nth(1).context("bad VmRSS line")?.parse()?)
}

fn value(size: usize, rng: &mut SmallRng) -> Bytes {
    let mut v = vec![0u8; size];
    for b in v.iter_mut() {
        *b = rng.random_range(b'a'..=b'z');
    }
    Bytes::from(v)
}

/// Writes `key_prefix<i>` for i in `range`, `concurrency` writes in flight,
/// each worker with one keep-alive connection per entry node. Returns the
/// number of failed writes (the first few are printed).
async fn preload(cluster: &Cluster, p: &PreloadArgs, range: std::ops::Range<usize>) -> anyhow::Result<u64> {
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(match &p.via {
        Some(id) => vec![cluster.node(id)?.addr],
        None => cluster.nodes().iter().map(|n| n.addr).collect(),
    });
    let workers = p.concurrency.clamp(1, range.len().max(1));
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (addrs, p, range) = (addrs.clone(), p.clone(), range.clone());
        tasks.push(tokio::spawn(async move {
            let mut clients: Vec<Client> = addrs.iter().map(|a| Client::new(*a)).collect();
            let mut rng = SmallRng::seed_from_u64(p.seed ^ (worker as u64).wrapping_mul(0x9e37_79b9));
            let mut errors = 0u64;
            for i in range.skip(worker).step_by(workers) {
                let key = format!("{}{i}", p.key_prefix);
                let node = i % clients.len();
                let failure = match clients[node].put(&key, value(p.value_size, &mut rng), None, Some(p.w)).await {
                    Ok(answer) if answer.status.is_success() => None,
                    Ok(answer) => Some(format!("{} {}", answer.status, answer.reason())),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(f) = failure {
                    if errors < 3 {
                        eprintln!("writing {key}: {f}");
                    }
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await?;
    }
    Ok(errors)
}

struct RepairSetup {
    dynabed: PathBuf,
    keys: usize,
    value_size: usize,
    concurrency: usize,
    seed: u64,
    fanout: String,
    victim: String,
    coordinator: String,
}

struct RepairRow {
    d: usize,
    partitions_differing: usize,
    stats: SyncStats,
    reset_rounds: usize,
}

/// The cost of anti-entropy against the size of the difference.
///
/// With every node's hint delivery and background anti-entropy off, and all
/// `keys` written to all replicas (W=3), for each d: SIGKILL the victim (the
/// pid the cluster file records), write d new keys with W=2 through the
/// coordinator (which keeps the victim's hints, undelivered), restart the
/// victim with its data (fjall), and let the coordinator alone run one
/// non-staged repair round with a fixed seed. Its stats are the cost. Then
/// rounds on all nodes until every Merkle root agrees, for the next d.
async fn repair(mut cluster: Cluster, s: RepairSetup, diffs: &[usize]) -> anyhow::Result<()> {
    ensure!(cluster.nodes().len() >= 3, "the repair experiment wants at least 3 nodes");
    cluster.node(&s.victim)?;
    cluster.node(&s.coordinator)?;
    let fanout: Fanout = serde_json::from_value(s.fanout.as_str().into())
        .with_context(|| format!("--fanout is all or one, not {:?}", s.fanout))?;
    let off = SwitchChange { hint_delivery: Some(false), anti_entropy: Some(false), read_repair: Some(false) };
    configure(&cluster, &cluster.ids(), off).await?;

    let started = Instant::now();
    let load = PreloadArgs {
        keys: s.keys,
        key_prefix: "user".into(),
        value_size: s.value_size,
        w: 3,
        concurrency: s.concurrency,
        via: None,
        seed: 7,
    };
    let errors = preload(&cluster, &load, 0..s.keys).await?;
    ensure!(errors == 0, "{errors} preload writes failed");
    let preload_s = started.elapsed().as_secs_f64();
    eprintln!("preloaded {} keys (w=3) in {preload_s:.2} s ({:.0} writes/s)", s.keys, s.keys as f64 / preload_s);
    let differing = differing_partitions(&cluster).await?;
    ensure!(differing == 0, "after the W=3 preload {differing} partitions still differ");

    let mut rows = Vec::new();
    for &d in diffs {
        // Kill the victim, only by the pid the cluster file records.
        let pid = cluster.node(&s.victim)?.entry.pid;
        ensure!(pid > 0, "no pid for {}", s.victim);
        eprintln!("d={d}: SIGKILL {} (pid {pid})", s.victim);
        // SAFETY: plain kill(2) on the recorded pid.
        let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        ensure!(rc == 0, "kill {pid}: {}", std::io::Error::last_os_error());
        wait_gone(pid, Duration::from_secs(10)).await?;

        let writes = PreloadArgs {
            keys: d,
            key_prefix: format!("diff{d}_"),
            value_size: s.value_size,
            w: 2,
            concurrency: s.concurrency.min(16),
            via: Some(s.coordinator.clone()),
            seed: 1000 + d as u64,
        };
        let errors = preload(&cluster, &writes, 0..d).await?;
        ensure!(errors == 0, "d={d}: {errors} W=2 writes failed while {} was down", s.victim);

        let out = Command::new(&s.dynabed)
            .args(["cluster", "restart", &s.victim, "--cluster_procs"])
            .arg(cluster.procs_path())
            .output()
            .context("running dynabed cluster restart")?;
        ensure!(out.status.success(), "cluster restart {}: {}", s.victim, String::from_utf8_lossy(&out.stderr).trim());
        cluster = reachable(cluster.procs_path())?;
        wait_all_alive(&cluster, Duration::from_secs(30)).await?;
        // A restarted node starts with its default switches.
        configure(&cluster, std::slice::from_ref(&s.victim), off).await?;
        let partitions_differing = differing_partitions(&cluster).await?;

        let round = RepairRound { seed: s.seed, staged: false, fanout };
        let stats = repair_round(&cluster, &s.coordinator, round).await?;
        eprintln!("d={d}: {}", serde_json::to_string(&stats)?);

        // Reset: rounds everywhere until every root agrees.
        let mut reset_rounds = 0;
        while differing_partitions(&cluster).await? > 0 {
            ensure!(reset_rounds < 10, "d={d}: roots still differ after 10 full rounds");
            reset_rounds += 1;
            let round = RepairRound { seed: s.seed + reset_rounds as u64, staged: false, fanout: Fanout::All };
            let all = futures::future::join_all(cluster.ids().into_iter().map(|id| {
                let cluster = &cluster;
                async move { repair_round(cluster, &id, round).await }
            }))
            .await;
            for result in all {
                result?;
            }
        }
        rows.push(RepairRow { d, partitions_differing, stats, reset_rounds });
    }

    let base_bytes = rows.iter().find(|r| r.d == 0).map(|r| r.stats.bytes_sent + r.stats.bytes_received);
    println!();
    println!(
        "anti-entropy cost: {} nodes, {} keys x {} B (fjall), one round on {} (fanout {}, seed {}), {} behind by d keys",
        cluster.nodes().len(),
        s.keys,
        s.value_size,
        s.coordinator,
        s.fanout,
        s.seed,
        s.victim
    );
    println!(
        "{:>5} | {:>5} | {:>5} {:>7} | {:>10} {:>9} {:>9} | {:>6} | {:>5} {:>5} | {:>6} | {:>8} {:>10} | {:>5}",
        "d",
        "parts≠",
        "exch",
        "in_sync",
        "bytes",
        "sent",
        "received",
        "leaves",
        "keys←",
        "keys→",
        "ms",
        "B/key",
        "(B-B0)/key",
        "reset"
    );
    for r in &rows {
        let st = &r.stats;
        let bytes = st.bytes_sent + st.bytes_received;
        let per_key = |b: u64| if r.d == 0 { "-".to_owned() } else { format!("{:.0}", b as f64 / r.d as f64) };
        println!(
            "{:>5} | {:>6} | {:>5} {:>7} | {:>10} {:>9} {:>9} | {:>6} | {:>5} {:>5} | {:>6} | {:>8} {:>10} | {:>5}",
            r.d,
            r.partitions_differing,
            st.exchanges,
            st.in_sync,
            bytes,
            st.bytes_sent,
            st.bytes_received,
            st.differing_leaves,
            st.keys_received,
            st.keys_sent,
            st.duration_ms,
            per_key(bytes),
            base_bytes.map(|b0| per_key(bytes.saturating_sub(b0))).unwrap_or_else(|| "-".into()),
            r.reset_rounds,
        );
        if st.failed > 0 {
            println!("      ^ {} exchanges failed", st.failed);
        }
    }
    if let Some(r0) = rows.iter().find(|r| r.d == 0) {
        let (ex, ins) = (r0.stats.exchanges, r0.stats.in_sync);
        println!(
            "d=0: {} (in_sync {ins} of {ex} exchanges: {})",
            if ex == ins && ex > 0 { "PASS" } else { "FAIL" },
            if ex == ins { "only roots compared" } else { "some exchanges went below the root" }
        );
    }
    println!(
        "parts≠ = partitions whose roots differ anywhere before the round; keys← received by {}, keys→ pushed by it; \
         reset = full rounds (all nodes, fanout all) until every root agreed",
        s.coordinator
    );
    Ok(())
}

/// Waits until `pid` no longer runs (gone or a zombie).
async fn wait_gone(pid: u32, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if matches!(netns::process::state(pid), None | Some('Z' | 'X')) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pid {pid} still runs {timeout:?} after SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
