//! `dynabed get|put|delete KEY`: the store for people at a terminal.
//!
//! The value goes to stdout; the causal context, clock and coordinator go to
//! stderr, so `dynabed get k > file` stores just the value and the context
//! can still be copied into the next `put --context`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use hyper::StatusCode;

use crate::client::{Answer, Client};
use crate::cluster::{reach::reach, running::Cluster};

/// Which node to talk to.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// A node of --cluster_procs by its id (e.g. node2), as everywhere else;
    /// default: the first node that answers.
    #[arg(long, conflicts_with = "entry")]
    pub node: Option<String>,
    /// A node's client address (host:port) instead, e.g. for nodes started
    /// by hand without a cluster file.
    #[arg(long)]
    pub entry: Option<SocketAddr>,
    #[arg(long = "cluster_procs", visible_alias = "cluster-procs", default_value = "cluster_procs.json")]
    pub cluster_procs: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    pub key: String,
    /// Read quorum [default: majority of N].
    #[arg(long = "R", visible_alias = "r")]
    pub r: Option<usize>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    pub key: String,
    /// The value; `-` reads it from stdin.
    pub value: String,
    /// The context from an earlier read (X-Dynamo-Context).
    #[arg(long)]
    pub context: Option<String>,
    /// Write quorum [default: majority of N].
    #[arg(long = "W", visible_alias = "w")]
    pub w: Option<usize>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    pub key: String,
    /// The context from an earlier read; without it, the coordinator deletes
    /// what its replica has seen.
    #[arg(long)]
    pub context: Option<String>,
    #[arg(long = "W", visible_alias = "w")]
    pub w: Option<usize>,
    #[command(flatten)]
    pub target: Target,
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let (key, r) = (args.key.clone(), args.r);
    let answer = on_cluster(&args.target, |mut client| async move { Ok(client.get(&key, r).await?) })?;
    describe(&answer);
    match answer.status {
        StatusCode::OK | StatusCode::MULTIPLE_CHOICES => {
            let values = answer.values().map_err(anyhow::Error::msg)?;
            let mut out = std::io::stdout().lock();
            // Siblings are printed one per line so they can be told apart.
            let siblings = answer.status == StatusCode::MULTIPLE_CHOICES;
            for value in values {
                out.write_all(&value)?;
                if siblings {
                    out.write_all(b"\n")?;
                }
            }
            Ok(())
        }
        StatusCode::NOT_FOUND => bail!("{}: not found", args.key),
        _ => bail!("{}: {} {}", args.key, answer.status, answer.reason()),
    }
}

pub fn put(args: PutArgs) -> anyhow::Result<()> {
    let value = if args.value == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading the value from stdin")?;
        Bytes::from(buf)
    } else {
        Bytes::from(args.value.into_bytes())
    };
    let (key, context, w) = (args.key.clone(), args.context.clone(), args.w);
    let answer =
        on_cluster(
            &args.target,
            |mut client| async move { Ok(client.put(&key, value, context.as_deref(), w).await?) },
        )?;
    finish_write(&args.key, &answer)
}

pub fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let (key, context, w) = (args.key.clone(), args.context.clone(), args.w);
    let answer =
        on_cluster(&args.target, |mut client| async move { Ok(client.delete(&key, context.as_deref(), w).await?) })?;
    finish_write(&args.key, &answer)
}

fn finish_write(key: &str, answer: &Answer) -> anyhow::Result<()> {
    describe(answer);
    if answer.status.is_success() {
        Ok(())
    } else {
        bail!("{key}: {} {}", answer.status, answer.reason())
    }
}

fn describe(answer: &Answer) {
    let fields = [
        ("coordinator", &answer.coordinator),
        ("clock", &answer.clock),
        ("dot", &answer.dot),
        ("context", &answer.context),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            eprintln!("{name}: {value}");
        }
    }
    if answer.status == StatusCode::MULTIPLE_CHOICES {
        eprintln!("siblings: {} concurrent values, one per line", answer.values().map(|v| v.len()).unwrap_or(0));
    }
}

/// Runs `work` with a client to the chosen node, or to the first node of
/// the cluster file that answers — from the cluster's client namespace when
/// it has one.
fn on_cluster<F, Fut>(target: &Target, work: F) -> anyhow::Result<Answer>
where
    F: FnOnce(Client) -> Fut + Send,
    Fut: std::future::Future<Output = anyhow::Result<Answer>>,
{
    let cluster = Cluster::read_if_any(&target.cluster_procs)?;
    let client_netns = cluster.as_ref().and_then(|c| c.client_netns().map(str::to_owned));
    let candidates: Vec<SocketAddr> = match (target.entry, &target.node, &cluster) {
        (Some(addr), _, _) => vec![addr],
        (None, Some(id), Some(cluster)) => vec![cluster.node(id)?.addr],
        (None, None, Some(cluster)) => cluster.nodes().iter().map(|node| node.addr).collect(),
        (None, _, None) => bail!(
            "no cluster described by {}: pass --cluster_procs, or --entry HOST:PORT for a node without one",
            target.cluster_procs.display()
        ),
    };
    reach(client_netns.as_deref(), || async move {
        for addr in &candidates {
            let mut client = Client::new(*addr).with_timeout(std::time::Duration::from_secs(2));
            if candidates.len() == 1 || client.status().await.is_ok() {
                return work(client.with_timeout(std::time::Duration::from_secs(10))).await;
            }
        }
        bail!("no node of {} answers", target.cluster_procs.display())
    })
}
