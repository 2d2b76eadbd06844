//! Kernel network faults on the NFQUEUE delay line: where the kernel has
//! no sch_netem, and for per-port faults everywhere (the line matches the
//! port; see [`crate::faults::line_loop`]).
//!
//! In a namespaced cluster every packet from and to the node is queued in
//! the hub's FORWARD path. A cluster on hosts has no such path: a packet is
//! held where it arrives, on the receiver's INPUT hook (holding it on the
//! sender's OUTPUT hook would collapse TCP; see KERNEL-FACTS.md) — packets
//! to the node on its host, packets from it on every host and on this
//! machine, where the clients are — each by that place's own daemon.

use std::net::Ipv4Addr;

use anyhow::Context;
use netns::firewall::{self, Chain, Hook, NfqueueRule, QueueMatch};

use super::{check, ChangeError, Commands, Executor, Target};
use crate::api::cluster::Mode;
use crate::api::fault::{Backend, Undo};
use crate::faults::delay_daemon::{self, LineSite};
use crate::faults::fault::Fault;
use crate::faults::impairment::{Gilbert, Impairment};
use crate::faults::{delay_line, journal};

/// Queues every packet from and to the node to a delay line, which gives
/// each the fault's fate.
pub struct DelayLine {
    pub fault: Fault,
}

fn chain_name(target: &Target) -> String {
    match target.cluster.mode() {
        // A namespace shared with other clusters (a host's, this machine's):
        // the prefix tells whose.
        Mode::Hosts => format!("DYNABED_{}_SLOW{}", target.cluster.prefix(), target.id),
        Mode::Netns | Mode::Loopback => format!("DYNABED_SLOW{}", target.id),
    }
}

fn ipv4(target: &Target) -> anyhow::Result<Ipv4Addr> {
    target.node.entry.host.parse().context("a namespaced node has an IPv4 address")
}

impl Executor for DelayLine {
    fn backend(&self) -> Backend {
        Backend::NfqueueDelayLine
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        let (addr, name) = (ipv4(target)?, chain_name(target));
        if target.cluster.mode() == Mode::Hosts {
            let undelay = Undo::UndelayOnSites { sites: sites(target), chain: name, addr, fault: target.id };
            return Ok(vec![undelay, Undo::StopIdleDelayLine]);
        }
        target.namespaced()?;
        let chain = Undo::RemoveForwardChain { namespace: target.hub(), name };
        Ok(vec![chain, Undo::DelayClear { addr, fault: Some(target.id) }, Undo::StopIdleDelayLine])
    }

    fn available(&self, target: &Target) -> Result<(), String> {
        if target.cluster.mode() == Mode::Hosts {
            return Ok(());
        }
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
        if target.cluster.mode() == Mode::Hosts {
            return Ok(on_hosts(target, impairment)?);
        }
        let hub = target.hub();
        let site = LineSite::here(target.state, Some(hub.clone()))?;
        let daemon = delay_daemon::ensure(target.state, &site)?;
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
        delay_line::set(&site.control(), target.id, addr, impairment)?;
        commands.push(set_command(addr, &impairment, None)?);
        Ok(commands)
    }

    /// Measured from the clients, as every network fault; on hosts, where
    /// no probe can be bound in a node's namespace, the shares (loss,
    /// reorder, corrupt) are checked by asking every delay line instead.
    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        match (&self.fault, target.cluster.mode()) {
            (Fault::Slow { .. }, _) | (_, Mode::Netns | Mode::Loopback) => check::verify(target, &self.fault),
            (_, Mode::Hosts) => held_everywhere(target),
        }
    }
}

/// This machine (`None`) and every host: where a cluster on hosts receives
/// the node's packets.
fn sites(target: &Target) -> Vec<Option<String>> {
    let hosts = target.cluster.meta().hosts.iter().flat_map(|d| d.inventory.hosts.iter().map(|h| Some(h.name.clone())));
    std::iter::once(None).chain(hosts).collect()
}

/// Holds the node's packets where they arrive: on every site, those from
/// it; on its own host, also those to it. Every site at once.
fn on_hosts(target: &Target, impairment: Impairment) -> anyhow::Result<Commands> {
    let addr = ipv4(target)?;
    let own_host = target.node.place.host_name();
    let sites =
        sites(target).iter().map(|h| LineSite::of(target.state, h.as_deref())).collect::<anyhow::Result<Vec<_>>>()?;
    let own = sites.iter().find(|s| s.host() == own_host).context("the node's host has no delay line site")?;
    // The node's own host holds what reaches the node: its daemon's death
    // is this fault's lapse (journaled before it is asked to hold any).
    let holder = delay_daemon::ensure(target.state, own)?;
    journal::amend(target.state, target.id, |record| record.held_by = Some(holder))?;
    let commands = delay_daemon::on_each(&sites, |site| {
        delay_daemon::ensure(target.state, site)?;
        let chain = Chain::at(site.command_site(), &chain_name(target), Hook::Input)?;
        let mut commands = chain.create()?.commands;
        let mut matchers = vec![QueueMatch::Source(addr)];
        if site.host() == own_host {
            matchers.push(QueueMatch::Dest(addr));
        }
        for matcher in matchers {
            let rule = NfqueueRule { matcher, queue_num: site.queue, bypass: true };
            commands.extend(chain.add_nfqueue(&rule)?.commands);
        }
        delay_line::set(&site.control(), target.id, addr, impairment)?;
        commands.push(set_command(addr, &impairment, site.host())?);
        anyhow::Ok(commands)
    })?;
    Ok(commands.into_iter().flatten().collect())
}

/// Every site's delay line holds this fault's impairment of the node.
fn held_everywhere(target: &Target) -> anyhow::Result<String> {
    let addr = ipv4(target)?;
    let sites = sites(target);
    for host in &sites {
        let status = delay_line::status(&LineSite::of(target.state, host.as_deref())?.control())?;
        let held = status.impaired.get(&target.id).is_some_and(|(a, _)| *a == addr);
        let place = host.as_deref().unwrap_or("this machine");
        anyhow::ensure!(held, "the delay line on {place} does not hold fault {} on {addr}", target.id);
    }
    Ok(format!("the delay lines of {} places impair {addr} as asked", sites.len()))
}

/// The record of asking a delay line (this machine's, or `host`'s) to impair `addr`.
fn set_command(addr: Ipv4Addr, impairment: &Impairment, host: Option<&str>) -> anyhow::Result<Vec<String>> {
    let described = serde_json::to_string(impairment).context("describing the impairment")?;
    let mut command = vec!["delay-line".into(), "set".into(), addr.to_string(), described];
    if let Some(host) = host {
        command.extend(["on".into(), host.to_owned()]);
    }
    Ok(command)
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
