//! The `faults` section of `scripts/bench`: what the `slow` fault really
//! does to a round trip, per backend, against a running namespaced cluster.
//!
//! For each layer (kernel: netem or the NFQUEUE delay line; app: the node's
//! own hold) and each asked delay D it measures, on one kept-alive
//! connection from the client namespace, `--samples` round trips of
//! `GET /status` to the node before the fault (baseline) and during it, and
//! prints the median and p99 of the added time (measured − baseline
//! median). It also measures how soon the fault takes effect after
//! `dynabed fault slow` returns (probing the kept-alive connection until a
//! round trip exceeds D/2) and how soon after `dynabed fault heal` returns
//! round trips on fresh connections are back under their baseline + 1 ms.
//! Last, the delay line's rate: a closed loop of many kept-alive clients
//! hammering the node with no fault and with `slow_ms` = 20 (10 ms held per
//! packet per direction), with the packets counted by the hub's NFQUEUE
//! rules (iptables counters).
//!
//! Every socket is made inside the cluster's client namespace (via
//! `dynabed::cluster::reach`); the `dynabed fault` commands run from there too
//! (they enter the namespaces they need by name).
//!
//!   fault_bench --dynabed target/release/dynabed --cluster_procs F [--node node3]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use dynabed::client::Client;
use dynabed::cluster::reach::reach;
use dynabed::cluster::running::Cluster;

#[derive(Parser, Debug, Clone)]
#[command(about = "Slow-fault accuracy, reaction time and delay-line rate")]
struct Args {
    #[arg(long)]
    dynabed: PathBuf,
    #[arg(long = "cluster_procs", default_value = "cluster_procs.json")]
    cluster_procs: PathBuf,
    #[arg(long, default_value = "node3")]
    node: String,
    /// Fault layers to measure.
    #[arg(long, value_delimiter = ',', default_value = "kernel,app")]
    layers: Vec<String>,
    /// Asked delays (slow_ms), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50,200")]
    delays: Vec<u64>,
    /// Round trips per baseline and per fault.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// slow_ms of the rate test (0: skip it).
    #[arg(long = "rate_slow_ms", default_value_t = 20)]
    rate_slow_ms: u64,
    /// Concurrent kept-alive clients of the rate test, comma-separated.
    #[arg(long = "rate_concurrency", value_delimiter = ',', default_value = "64")]
    rate_concurrency: Vec<usize>,
    #[arg(long = "rate_seconds", default_value_t = 5.0)]
    rate_seconds: f64,
}

struct Target {
    addr: SocketAddr,
    client_ns: String,
    hub: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = Cluster::read(&args.cluster_procs)?;
    let client_ns = cluster.client_netns().context("not a namespaced cluster (no client namespace)")?.to_owned();
    let target = Target { addr: cluster.node(&args.node)?.addr, client_ns, hub: format!("{}-hub", cluster.prefix()) };

    println!(
        "{:<6} {:<18} {:>5} | {:>8} {:>8} | {:>9} {:>9} {:>7} | {:>8} {:>10} {:>6} | {:>8} {:>11} {:>6}",
        "layer",
        "backend",
        "D ms",
        "base p50",
        "base p99",
        "added p50",
        "added p99",
        "err %",
        "apply ms",
        "effect +ms",
        "fast",
        "heal ms",
        "recover +ms",
        "slow"
    );
    for layer in &args.layers {
        for &delay in &args.delays {
            let row = point(&args, &target, layer, delay).with_context(|| format!("{layer} layer, {delay} ms"))?;
            println!("{row}");
        }
    }

    if args.rate_slow_ms > 0 {
        println!();
        println!(
            "{:<24} {:>5} | {:>9} {:>8} {:>8} | {:>8} {:>10} {:>7} | {:>6}",
            "delay line rate", "conc", "req/s", "p50 ms", "p99 ms", "errors", "queued pkt", "pkt/s", "pkt/req"
        );
        for &conc in &args.rate_concurrency {
            for line in rate(&args, &target, conc)? {
                println!("{line}");
            }
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The q-quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// One round trip of GET /status; its time in ms.
async fn round_trip(client: &mut Client) -> anyhow::Result<f64> {
    let started = Instant::now();
    client.status().await?;
    Ok(ms(started.elapsed()))
}

/// `n` round trips on the client's connection: (times of the good ones, errors).
async fn series(client: &mut Client, n: usize) -> (Vec<f64>, usize) {
    let mut times = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        match round_trip(client).await {
            Ok(t) => times.push(t),
            Err(_) => errors += 1,
        }
    }
    (times, errors)
}

/// Runs `dynabed ARGS --cluster_procs F`; its stdout.
async fn dynabed(args: &Args, command: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(&args.dynabed)
        .args(command)
        .arg("--cluster_procs")
        .arg(&args.cluster_procs)
        .output()
        .await
        .with_context(|| format!("running {} {}", args.dynabed.display(), command.join(" ")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("dynabed {} failed: {}{}", command.join(" "), stdout, String::from_utf8_lossy(&out.stderr));
    }
    Ok(stdout)
}

/// The id and the backend of the fault record line `dynabed fault` printed:
/// "fault 3: Slow on node3 (Kernel layer, nfqueue-delay-line); verified: ...".
fn parse_record(out: &str) -> anyhow::Result<(u32, String)> {
    let line = out.lines().find(|l| l.starts_with("fault ")).with_context(|| format!("no record line in {out:?}"))?;
    let id = line["fault ".len()..].split(':').next().unwrap_or("").trim().parse()?;
    let backend = line
        .split_once("layer, ")
        .and_then(|(_, rest)| rest.split(')').next())
        .with_context(|| format!("no backend in {line:?}"))?;
    Ok((id, backend.to_owned()))
}

fn slow_args<'a>(node: &'a str, slow_ms: &'a str, layer: &'a str) -> Vec<&'a str> {
    vec!["fault", "slow", "--node", node, "--slow_ms", slow_ms, "--fault_layer", layer]
}

/// One (layer, delay) point: a table row.
fn point(args: &Args, target: &Target, layer: &str, delay: u64) -> anyhow::Result<String> {
    eprintln!("== faults: {layer} layer, slow_ms {delay}");
    let addr = target.addr;
    reach(Some(&target.client_ns), || async move {
        let fresh = || Client::new(addr).with_timeout(Duration::from_secs(10));
        // Fresh-connection baseline (connect + request), for the recovery test.
        let mut fresh_times = Vec::new();
        for _ in 0..50 {
            fresh_times.push(round_trip(&mut fresh()).await?);
        }
        let fresh_p50 = quantile(&sorted(fresh_times), 0.5);
        // Kept-alive baseline.
        let mut client = fresh();
        series(&mut client, 20).await; // warm up
        let (base, base_err) = series(&mut client, args.samples).await;
        ensure!(base_err == 0, "{base_err} errors in the baseline");
        let base = sorted(base);
        let base_p50 = quantile(&base, 0.5);

        // Apply, then probe the kept-alive connection until a round trip exceeds D/2.
        let slow_ms = delay.to_string();
        let t0 = Instant::now();
        let out = dynabed(args, &slow_args(&args.node, &slow_ms, layer)).await?;
        let applied = Instant::now();
        let (_, backend) = parse_record(&out)?;
        let mut fast_probes = 0;
        let effect = loop {
            let sent = Instant::now();
            let t = round_trip(&mut client).await?;
            if t > delay as f64 / 2.0 {
                break ms(sent - applied);
            }
            fast_probes += 1;
            ensure!(applied.elapsed() < Duration::from_secs(10), "no slow round trip in 10 s");
        };
        let apply_ms = ms(applied - t0);

        // During the fault.
        let (during, during_err) = series(&mut client, args.samples).await;
        let added = sorted(during.iter().map(|t| t - base_p50).collect());
        let err_pct = 100.0 * during_err as f64 / args.samples as f64;

        // Heal, then fresh connections until one is back under its baseline + 1 ms.
        let t1 = Instant::now();
        dynabed(args, &["fault", "heal"]).await?;
        let healed = Instant::now();
        let mut slow_probes = 0;
        let recovery = loop {
            let sent = Instant::now();
            if let Ok(t) = round_trip(&mut fresh()).await {
                if t < fresh_p50 + 1.0 {
                    break ms(sent - healed);
                }
            }
            slow_probes += 1;
            ensure!(healed.elapsed() < Duration::from_secs(10), "not recovered 10 s after heal");
        };
        let heal_ms = ms(healed - t1);
        drop(client);

        Ok(format!(
            "{:<6} {:<18} {:>5} | {:>8.3} {:>8.3} | {:>9.3} {:>9.3} {:>7.1} | {:>8.0} {:>10.3} {:>6} | {:>8.0} {:>11.3} {:>6}",
            layer,
            backend,
            delay,
            base_p50,
            quantile(&base, 0.99),
            quantile(&added, 0.5),
            quantile(&added, 0.99),
            err_pct,
            apply_ms,
            effect,
            fast_probes,
            heal_ms,
            recovery,
            slow_probes
        ))
    })
}

/// Packets the hub's NFQUEUE rules of fault `id` have sent to the queue.
fn queued_packets(hub: &str, id: u32) -> anyhow::Result<u64> {
    let chain = format!("DYNABED_SLOW{id}");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", hub, "iptables", "-w", "-nvxL", &chain])
        .output()
        .context("running iptables in the hub")?;
    ensure!(out.status.success(), "iptables -L {chain}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("NFQUEUE"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum())
}

/// A closed loop of `conc` kept-alive clients for the rate window:
/// (requests, errors, sorted latencies in ms, seconds).
async fn closed_loop(addr: SocketAddr, conc: usize, seconds: f64) -> (u64, u64, Vec<f64>, f64) {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::new(addr).with_timeout(Duration::from_secs(5));
                let (mut times, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < end {
                    match round_trip(&mut client).await {
                        Ok(t) => times.push(t),
                        Err(_) => errors += 1,
                    }
                }
                (times, errors)
            })
        })
        .collect();
    let (mut times, mut errors) = (Vec::new(), 0);
    for task in futures::future::join_all(tasks).await {
        let (t, e) = task.expect("a load client panicked");
        times.extend(t);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (times.len() as u64, errors, sorted(times), elapsed)
}

/// The rate test at one concurrency: a no-fault row and a delay-line row.
fn rate(args: &Args, target: &Target, conc: usize) -> anyhow::Result<Vec<String>> {
    eprintln!("== faults: delay line rate, {conc} clients, slow_ms {}", args.rate_slow_ms);
    let addr = target.addr;
    let hub = target.hub.clone();
    reach(Some(&target.client_ns), || async move {
        let mut rows = Vec::new();
        let (n, errors, times, secs) = closed_loop(addr, conc, args.rate_seconds).await;
        rows.push(format!(
            "{:<24} {:>5} | {:>9.0} {:>8.3} {:>8.3} | {:>8} {:>10} {:>7} | {:>6}",
            "no fault",
            conc,
            n as f64 / secs,
            quantile(&times, 0.5),
            quantile(&times, 0.99),
            errors,
            "-",
            "-",
            "-"
        ));
        let slow_ms = args.rate_slow_ms.to_string();
        let out = dynabed(args, &slow_args(&args.node, &slow_ms, "kernel")).await?;
        let (id, backend) = parse_record(&out)?;
        let measured = async {
            // Warm the connections up under the fault first, so that every
            // counted packet belongs to the window.
            closed_loop(addr, conc, 0.5).await;
            let before = if backend == "nfqueue-delay-line" { Some(queued_packets(&hub, id)?) } else { None };
            let result = closed_loop(addr, conc, args.rate_seconds).await;
            let after = if backend == "nfqueue-delay-line" { Some(queued_packets(&hub, id)?) } else { None };
            anyhow::Ok((result, before.zip(after).map(|(b, a)| a - b)))
        }
        .await;
        dynabed(args, &["fault", "heal"]).await?;
        let ((n, errors, times, secs), packets) = measured?;
        let (pkts, pps, per_req) = match packets {
            Some(p) => (p.to_string(), format!("{:.0}", p as f64 / secs), format!("{:.2}", p as f64 / n.max(1) as f64)),
            None => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        rows.push(format!(
            "{:<24} {:>5} | {:>9.0} {:>8.3} {:>8.3} | {:>8} {:>10} {:>7} | {:>6}",
            format!("{backend} {}ms", args.rate_slow_ms),
            conc,
            n as f64 / secs,
            quantile(&times, 0.5),
            quantile(&times, 0.99),
            errors,
            pkts,
            pps,
            per_req
        ));
        Ok(rows)
    })
}
