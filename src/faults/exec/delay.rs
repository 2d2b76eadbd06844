//! Kernel network faults on the hub's NFQUEUE delay line: where the kernel
//! has no sch_netem, and for per-port faults everywhere (the line matches
//! the port; see [`crate::faults::line_loop`]).

use std::net::Ipv4Addr;

use anyhow::Context;
use netns::firewall::{self, Chain, NfqueueRule, QueueMatch};

use super::{check, ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, Undo};
use crate::faults::fault::Fault;
use crate::faults::impairment::{Gilbert, Impairment};
use crate::faults::{delay_daemon, delay_line, journal};

/// Queues every packet from and to the node, in the hub's FORWARD path,
/// to the cluster's delay line, which gives each the fault's fate.
pub struct DelayLine {
    pub fault: Fault,
}

fn chain_name(target: &Target) -> String {
    format!("DYNABED_SLOW{}", target.id)
}

fn ipv4(target: &Target) -> anyhow::Result<Ipv4Addr> {
    target.node.entry.host.parse().context("a namespaced node has an IPv4 address")
}

impl Executor for DelayLine {
    fn backend(&self) -> Backend {
        Backend::NfqueueDelayLine
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.namespaced()?;
        let chain = Undo::RemoveForwardChain { namespace: target.hub(), name: chain_name(target) };
        let entry = Undo::DelayClear { addr: ipv4(target)?, fault: Some(target.id) };
        Ok(vec![chain, entry, Undo::StopIdleDelayLine])
    }

    fn available(&self, target: &Target) -> Result<(), String> {
        match firewall::bridge_nf_call_iptables(&target.hub()) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("the NFQUEUE delay line: the hub has no bridge netfilter (br_netfilter is not loaded; \
                             `modprobe br_netfilter` on the host; see `dynabed doctor`)"
                .into()),
            Err(e) => Err(format!("the NFQUEUE delay line: {e}")),
        }
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let impairment = impairment(&self.fault, target.port(self.fault.port()))?;
        let hub = target.hub();
        let daemon = delay_daemon::ensure(target.state, &hub)?;
        // Which daemon holds the fault is journaled before it is asked to:
        // a heal asks that one, and its death is this fault's lapse.
        journal::amend(target.state, target.id, |record| record.held_by = Some(daemon.clone()))?;
        let mut commands = firewall::set_bridge_nf_call_iptables(&hub, true)?.commands;
        let chain = Chain::forward(&hub, &chain_name(target))?;
        commands.extend(chain.create()?.commands);
        let addr = ipv4(target)?;
        for matcher in [QueueMatch::Source(addr), QueueMatch::Dest(addr)] {
            let rule = NfqueueRule { matcher, queue_num: delay_line::QUEUE, bypass: true };
            commands.extend(chain.add_nfqueue(&rule)?.commands);
        }
        delay_line::set(&delay_line::socket_path(target.state.dir()), target.id, addr, impairment)?;
        let described = serde_json::to_string(&impairment).context("describing the impairment")?;
        commands.push(vec!["delay-line".into(), "set".into(), addr.to_string(), described]);
        Ok(commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        check::verify(target, &self.fault)
    }
}

/// What the delay line does for `fault`, each direction, on `port` (all
/// when `None`): half of a round-trip delay and of its variance, the whole
/// of each share.
fn impairment(fault: &Fault, port: Option<u16>) -> anyhow::Result<Impairment> {
    let share = |pct: u8| f64::from(pct) / 100.0;
    let base = Impairment { port, ..Impairment::default() };
    Ok(match *fault {
        Fault::Slow { slow_ms, jitter, .. } => Impairment {
            delay_ms: slow_ms as f64 / 2.0,
            jitter_ms: jitter.map_or(0.0, |j| j.ms as f64 / 2f64.sqrt()),
            dist: jitter.map(|j| j.dist).unwrap_or_default(),
            ..base
        },
        Fault::Loss { pct, correlation_pct, .. } => {
            let loss = match correlation_pct {
                Some(correlation) => Gilbert::new(share(pct), share(correlation)),
                None => Gilbert::independent(share(pct)),
            };
            Impairment { loss: Some(loss), ..base }
        }
        Fault::Reorder { pct, slow_ms, .. } => {
            Impairment { delay_ms: slow_ms as f64 / 2.0, reorder: share(pct), ..base }
        }
        Fault::Corrupt { pct, .. } => Impairment { corrupt: share(pct), ..base },
        _ => anyhow::bail!("the delay line cannot make {:?}", fault.kind()),
    })
}
