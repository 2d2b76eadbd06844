//! Applying one fault: pick its executor, journal the record with its undo
//! steps, make the change, then probe that it took effect.

use std::path::Path;

use anyhow::{bail, Context};

use super::exec::delay::DelayLine;
use super::exec::duplicate::NftDup;
use super::exec::netem::Netem;
use super::exec::skew::NodeClockSkew;
use super::exec::{app, cpu, host, loss, partition, shape, signal, ChangeError, Executor, Target};
use super::fault::{Fault, FaultError, FaultRequest};
use super::heal::{heal, HealFor};
use super::journal;
use crate::api::cluster::Mode;
use crate::api::fault::{FaultRecord, Layer, PortSelector};
use crate::api::now_ms;
use crate::cluster::running::Cluster;
use crate::cluster::runstate::RunState;

/// The executor that makes `request`'s fault on `cluster`: chosen once, here.
fn executor(request: &FaultRequest, cluster: &Cluster) -> anyhow::Result<Box<dyn Executor>> {
    if cluster.mode() == Mode::Hosts {
        return on_hosts(request);
    }
    Ok(match (&request.fault, request.layer) {
        (&Fault::Crash { restart }, _) => Box::new(signal::Kill { restart }),
        (Fault::Pause, _) => Box::new(signal::Stop),
        (Fault::Partition { with, direction, clients }, Layer::Kernel) => {
            Box::new(partition::HubCut { with: with.clone(), direction: *direction, clients: *clients })
        }
        (Fault::Partition { with, .. }, Layer::App) => Box::new(partition::NodeCut { with: with.clone() }),
        (&Fault::Slow { slow_ms, .. }, Layer::App) => Box::new(app::AppSlow { slow_ms }),
        // Plain loss stays in the bridge's nftables: no daemon, any kernel.
        (&Fault::Loss { pct, correlation_pct: None, port: PortSelector::All }, Layer::Kernel) => {
            Box::new(loss::HubLoss { pct })
        }
        (&Fault::Bandwidth { rate_kbit }, Layer::Kernel) => Box::new(shape::TokenBucket { rate_kbit }),
        (&Fault::Cpu { pct }, _) => Box::new(cpu::CpuQuota { pct }),
        (&Fault::Skew(skew), Layer::App) => Box::new(NodeClockSkew { skew }),
        // `FaultRequest::new` refuses a kernel-level skew already, as here.
        (Fault::Skew(_), Layer::Kernel) => bail!(FaultError::SkewNotKernel),
        (fault, Layer::Kernel) => network(fault),
        // `FaultRequest::new` refuses these already; a request built by hand is refused the same way.
        (fault, Layer::App) => bail!(FaultError::KernelOnly(fault.kind())),
    })
}

/// The executors of a cluster on hosts: signals and the nodes' own hooks
/// as anywhere, and the kernel faults that a rule on a node's own address
/// makes on its host; the others (qdiscs on a link, the delay line, cgroups)
/// act on objects only a local cluster has, and are refused by name.
fn on_hosts(request: &FaultRequest) -> anyhow::Result<Box<dyn Executor>> {
    Ok(match (&request.fault, request.layer) {
        (&Fault::Crash { restart }, _) => Box::new(signal::Kill { restart }),
        (Fault::Pause, _) => Box::new(signal::Stop),
        (Fault::Partition { with, direction, clients }, Layer::Kernel) => {
            Box::new(host::HostCut { with: with.clone(), direction: *direction, clients: *clients })
        }
        (&Fault::Loss { pct, correlation_pct: None, port: PortSelector::All }, Layer::Kernel) => {
            Box::new(host::HostLoss { pct })
        }
        (&Fault::Cpu { pct }, _) => Box::new(cpu::CpuQuota { pct }),
        (Fault::Slow { .. } | Fault::Reorder { .. } | Fault::Corrupt { .. } | Fault::Loss { .. }, Layer::Kernel) => {
            Box::new(DelayLine { fault: request.fault.clone() })
        }
        (Fault::Partition { with, .. }, Layer::App) => Box::new(partition::NodeCut { with: with.clone() }),
        (&Fault::Slow { slow_ms, .. }, Layer::App) => Box::new(app::AppSlow { slow_ms }),
        (&Fault::Skew(skew), Layer::App) => Box::new(NodeClockSkew { skew }),
        (fault, Layer::Kernel) => bail!(
            "a kernel-level {} is not made on hosts yet (bandwidth and duplicate act on a local cluster's links): use --fault_layer app where it has an app form",
            fault.kind().as_str()
        ),
        (fault, Layer::App) => bail!(FaultError::KernelOnly(fault.kind())),
    })
}

/// The kernel network faults: netem where the kernel has it (its fallback
/// otherwise); a per-port one straight on the mechanism that matches ports.
fn network(fault: &Fault) -> Box<dyn Executor> {
    match (fault, fault.port()) {
        (_, PortSelector::All) => Box::new(Netem { fault: fault.clone() }),
        (&Fault::Duplicate { pct, port }, _) => Box::new(NftDup { pct, port }),
        _ => Box::new(DelayLine { fault: fault.clone() }),
    }
}

/// Applies `request` to the cluster of `cluster_procs` and returns its record.
pub fn apply(cluster_procs: &Path, request: &FaultRequest) -> anyhow::Result<FaultRecord> {
    let cluster = Cluster::read(cluster_procs)?;
    let node = cluster.node(&request.node)?;
    let targets = request.targets();
    for target in &targets {
        cluster.node(target)?;
    }
    let state = RunState::open(cluster.prefix())?;
    let target =
        Target { id: journal::next_id(&state)?, state: &state, cluster: &cluster, node, process: node.running() };
    let executor = executor(request, &cluster)?;
    let record = FaultRecord {
        id: target.id,
        kind: request.fault.kind(),
        targets,
        layer: request.layer,
        backend: executor.backend(),
        applied_at_ms: now_ms(),
        commands: Vec::new(),
        verified: None,
        undo: executor.undo(&target)?,
        held_by: None,
    };
    executor.available(&target).map_err(|reason| unavailable(request, reason))?;
    // The journal first: a heal must be possible whatever happens next.
    journal::record(&state, record)?;
    match change(executor, &target) {
        Ok((commands, verified)) => {
            let applied = journal::amend(&state, target.id, |journaled| {
                journaled.commands = commands;
                journaled.verified = Some(verified);
            })?;
            applied.with_context(|| format!("fault {} left the journal while it was applied", target.id))
        }
        Err(e) => {
            // Undo what may have been done before reporting the failure.
            if let Err(heal) = heal(&state, Some(target.id), HealFor::Service) {
                eprintln!("warning: could not heal the failed fault {}: {heal:#}", target.id);
            }
            Err(e)
        }
    }
}

/// Fails when this machine lacks the mechanism `request` needs, before any
/// of it is made: an experiment asks before its workload starts.
pub fn precheck(cluster: &Cluster, request: &FaultRequest) -> anyhow::Result<()> {
    let node = cluster.node(&request.node)?;
    let state = RunState::open(cluster.prefix())?;
    let target = Target { id: 0, state: &state, cluster, node, process: node.running() };
    let executor = executor(request, cluster)?;
    executor.undo(&target)?;
    executor.available(&target).map_err(|reason| unavailable(request, reason))
}

fn unavailable(request: &FaultRequest, reason: String) -> anyhow::Error {
    anyhow::anyhow!("the {} fault cannot be made on this machine: {reason}", request.fault.kind().as_str())
}

/// Makes the change of the journaled fault and probes it. An executor the
/// kernel does not support changed nothing: its fallback takes over, once
/// the journal holds the fallback's backend and undo steps.
fn change(executor: Box<dyn Executor>, target: &Target) -> anyhow::Result<(Vec<Vec<String>>, String)> {
    let (executor, commands) = match (executor.apply(target), executor.fallback()) {
        (Err(ChangeError::Unsupported { .. }), Some(fallback)) => {
            let (backend, undo) = (fallback.backend(), fallback.undo(target)?);
            journal::amend(target.state, target.id, |journaled| {
                journaled.backend = backend;
                journaled.undo = undo;
            })?;
            let commands = fallback.apply(target);
            (fallback, commands)
        }
        (commands, _) => (executor, commands),
    };
    let commands = commands?;
    Ok((commands, executor.verify(target)?))
}
