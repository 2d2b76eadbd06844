//! The kernel-level slow fault: netem on the node's link where the kernel
//! has sch_netem, else the hub's NFQUEUE delay line. Netem is tried first;
//! its typed "unsupported" answer hands the fault to the delay line.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use netns::firewall::{self, Chain, NfqueueRule, QueueMatch};
use netns::qdisc::{self, QdiscError};

use super::{ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, Undo};
use crate::faults::{delay_daemon, delay_line, journal};

/// Half of `slow_ms` on each end of the node's link.
pub struct Netem {
    pub slow_ms: u64,
}

impl Executor for Netem {
    fn backend(&self) -> Backend {
        Backend::Netem
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.clear_links()
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let netem = qdisc::Netem { delay_ms: (self.slow_ms / 2) as u32, jitter_ms: 0, loss_pct: 0.0 };
        let mut commands = Vec::new();
        for (namespace, device) in target.links()? {
            match qdisc::netem(&namespace, &device, netem) {
                Ok(applied) => commands.extend(applied.commands),
                // Only a refusal of the first link leaves nothing changed.
                Err(source @ QdiscError::Unsupported { .. }) if commands.is_empty() => {
                    return Err(ChangeError::Unsupported { backend: Backend::Netem, source })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        verify_slow(target, self.slow_ms)
    }

    /// The delay line is checked first: its check is a file read, netem's
    /// a throwaway namespace.
    fn available(&self, target: &Target) -> Result<(), String> {
        let delay_line = DelayLine { slow_ms: self.slow_ms }.available(target);
        match (delay_line, qdisc::probe_netem()) {
            (Ok(()), _) | (_, qdisc::Support::Supported) => Ok(()),
            (Err(line), qdisc::Support::Unsupported { reason }) => Err(format!("neither netem ({reason}) nor {line}")),
        }
    }

    fn fallback(&self) -> Option<Box<dyn Executor>> {
        Some(Box::new(DelayLine { slow_ms: self.slow_ms }))
    }
}

/// Queues every packet from and to the node, in the hub's FORWARD path,
/// to the cluster's delay line, which holds it half the delay per end.
pub struct DelayLine {
    pub slow_ms: u64,
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
        Ok(vec![chain, Undo::DelayClear { addr: ipv4(target)? }, Undo::StopIdleDelayLine])
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
        let hub = target.hub();
        let daemon = delay_daemon::ensure(target.state, &hub)?;
        // Which daemon holds the delay is journaled before it is asked to:
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
        let half = self.slow_ms / 2;
        delay_line::set(&delay_line::socket_path(target.state.dir()), addr, half)?;
        commands.push(vec!["delay-line".into(), "set".into(), addr.to_string(), format!("{half}ms")]);
        Ok(commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        verify_slow(target, self.slow_ms)
    }
}

/// Round trips to the node take the delay asked, measured from the client
/// namespace with fresh TCP handshakes.
fn verify_slow(target: &Target, slow_ms: u64) -> anyhow::Result<String> {
    let node = target.name();
    let addr = target.node.addr;
    let client_ns = target.cluster.meta().client_netns.clone().context("no client namespace")?;
    if slow_ms >= 2000 {
        // The seed's huge-delay partition: waiting out a round trip is
        // pointless; a handshake must not complete in a second.
        let answered =
            netns::namespace::run_in(&client_ns, || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())?;
        anyhow::ensure!(!answered, "{node} still completes a handshake within 1 s");
        return Ok(format!("no handshake with {node} completes within 1 s"));
    }
    let rtt = median_connect_time(&client_ns, addr)?;
    let asked = Duration::from_millis(slow_ms);
    anyhow::ensure!(rtt >= asked * 8 / 10, "a round trip to {node} takes {rtt:?}, not the {asked:?} asked");
    Ok(format!("a TCP handshake with {node} from the client namespace takes {:.1} ms", rtt.as_secs_f64() * 1e3))
}

/// The median time of five TCP handshakes with `addr` from `namespace`:
/// one round trip each.
fn median_connect_time(namespace: &str, addr: SocketAddr) -> anyhow::Result<Duration> {
    let mut times = netns::namespace::run_in(namespace, || {
        (0..5)
            .map(|_| {
                let started = Instant::now();
                TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map(|_| started.elapsed())
            })
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    times.sort();
    Ok(times[2])
}
