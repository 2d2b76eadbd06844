//! `dynabed exec -- CMD ...`: a command run where the cluster is reachable,
//! so people can use curl, a shell or their own benchmark against it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::cluster::running::Cluster;

/// Replaces this process with `command`, inside the cluster's client
/// namespace (netns mode) or as it is (loopback mode).
pub fn exec(cluster_procs: &Path, command: &[String]) -> anyhow::Result<()> {
    let cluster = Cluster::read(cluster_procs)?;
    if let Some(namespace) = cluster.client_netns() {
        // Still single-threaded here, so the whole process moves, and the
        // command inherits the namespace through exec.
        netns::namespace::enter(namespace).with_context(|| format!("entering the client namespace {namespace}"))?;
    }
    let (program, args) = command.split_first().context("no command given")?;
    let error = Command::new(program).args(args).exec();
    Err(error).with_context(|| format!("running {program}"))
}
