//! A cluster's delay-line daemons as the run state owns them: started when
//! a delay needs one, stopped once it delays nothing, and always known by
//! their records (pid and start time, and host), never by their sockets.
//!
//! A namespaced cluster has one, in its hub. A cluster on hosts has one on
//! each host and one on this machine (in its own namespace): there is no
//! hub that sees every packet, so packets are held where they arrive (see
//! [`crate::faults::exec::delay`]).
//!
//! The socket cannot tell whether a daemon runs: a SIGKILLed daemon leaves
//! its socket file behind, and a refused connection says nothing about what
//! is delayed. The record can: because the rules use queue-bypass, a daemon
//! that is gone took every delay it held with it. Its faults have lapsed
//! (see [`crate::api::fault::FaultRecord::lapse`]); healing them asks nothing of it and
//! only removes their rules, its record and its stale socket.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use netns::command::Site;
use netns::firewall::{Chain, Hook};

use super::delay_line::{self, Control};
use crate::api::cluster::OwnedProcess;
use crate::cluster::deploy::cluster_dir;
use crate::cluster::place::{at_once, Place};
use crate::cluster::runstate::RunState;

/// The run state's name for a daemon.
pub const ROLE: &str = "delay-line";

/// Where one daemon runs, and how it is reached.
pub struct LineSite {
    /// Where it is started (in the hub, for a namespaced cluster).
    pub place: Place,
    pub socket: PathBuf,
    log: PathBuf,
    pub queue: u16,
}

impl LineSite {
    /// This machine's daemon: in `hub` for a namespaced cluster, else in
    /// this machine's own namespace.
    pub fn here(state: &RunState, hub: Option<String>) -> anyhow::Result<LineSite> {
        let queue = if hub.is_some() { delay_line::QUEUE } else { shared_queue(state) };
        let place = Place::Local { netns: hub };
        Ok(LineSite {
            place,
            socket: delay_line::socket_path(state.dir()),
            log: state.dir().join("delay-line.log"),
            queue,
        })
    }

    /// The daemon of host `name`, in its cluster folder.
    pub fn on_host(state: &RunState, name: &str) -> anyhow::Result<LineSite> {
        let deployed = state.owned()?.hosts.context("the run state lists no hosts")?;
        let place = Place::host(&deployed, name)?;
        let host = deployed.host(name).context("a host of the inventory")?;
        let dir = cluster_dir(host, &state.prefix());
        Ok(LineSite {
            socket: delay_line::socket_path(&dir),
            log: dir.join("delay-line.log"),
            queue: shared_queue(state),
            place,
        })
    }

    /// The site a journal entry or a record names.
    pub fn of(state: &RunState, host: Option<&str>) -> anyhow::Result<LineSite> {
        match host {
            Some(name) => Self::on_host(state, name),
            None => Self::here(state, None),
        }
    }

    /// Where commands for this site's firewall run.
    pub fn command_site(&self) -> Site {
        match &self.place {
            Place::Local { netns: Some(namespace) } => Site::Netns(namespace.clone()),
            Place::Local { netns: None } => Site::Here,
            Place::Host(ssh) => ssh.site(),
        }
    }

    pub fn control(&self) -> Control {
        Control { place: self.place.clone(), socket: self.socket.clone() }
    }

    /// Its host; `None` on this machine.
    pub fn host(&self) -> Option<&str> {
        self.place.host_name()
    }

    fn is_ours(&self, process: &OwnedProcess) -> bool {
        process.role == ROLE && process.host.as_deref() == self.host()
    }
}

/// The queue a daemon outside a hub reads: a namespace shared with other
/// clusters (a host's, this machine's), so one per prefix, away from 0.
fn shared_queue(state: &RunState) -> u16 {
    1000 + (xxhash_rust::xxh3::xxh3_64(state.prefix().as_bytes()) % 30_000) as u16
}

/// The site's recorded daemon, if that very process still runs.
pub fn running(state: &RunState, site: &LineSite) -> anyhow::Result<Option<OwnedProcess>> {
    let owned = state.owned()?;
    let mut ours = owned.processes.into_iter().filter(|p| site.is_ours(p));
    Ok(ours.find(|p| site.place.is_alive(p.record())))
}

/// The site's running daemon; one is started when there is none (after
/// forgetting a dead one).
pub fn ensure(state: &RunState, site: &LineSite) -> anyhow::Result<OwnedProcess> {
    if let Some(daemon) = running(state, site)? {
        return Ok(daemon);
    }
    forget_dead(state, site)?;
    let exe = site.place.binary()?.display().to_string();
    let argv = [&exe, "delay-line", "--socket", &site.socket.to_string_lossy(), "--queue", &site.queue.to_string()]
        .map(|a| a.to_owned());
    let spawned = site.place.spawn(&argv, &site.log, &[]).context("starting the delay line")?;
    let daemon = OwnedProcess {
        role: ROLE.into(),
        pid: spawned.pid,
        start_time: spawned.start_time,
        host: site.host().map(str::to_owned),
    };
    state.update(|owned| owned.processes.push(daemon.clone()))?;
    delay_line::wait_ready(&site.control(), Duration::from_secs(5))?;
    Ok(daemon)
}

/// Ends fault `fault`'s impairment of `addr` (every one of `addr`'s when
/// `None`) on `daemon` — unless that daemon is gone, which took it along.
pub fn clear(state: &RunState, daemon: &OwnedProcess, fault: Option<u32>, addr: Ipv4Addr) -> anyhow::Result<()> {
    let site = LineSite::of(state, daemon.host.as_deref())?;
    if !site.place.is_alive(daemon.record()) {
        return Ok(());
    }
    delay_line::clear(&site.control(), fault, addr)
        .with_context(|| format!("asking the delay line (pid {}) to stop delaying {addr}", daemon.pid))?;
    Ok(())
}

/// Undoes a delay on a cluster on hosts, every site at once: its INPUT
/// chain, then its entry in the site's daemon (if that still runs).
pub fn undelay(
    state: &RunState,
    sites: &[Option<String>],
    chain: &str,
    addr: Ipv4Addr,
    fault: u32,
) -> anyhow::Result<()> {
    let sites = sites.iter().map(|host| LineSite::of(state, host.as_deref())).collect::<anyhow::Result<Vec<_>>>()?;
    on_each(&sites, |site| {
        Chain::at(site.command_site(), chain, Hook::Input)?.remove()?;
        if let Some(daemon) = running(state, site)? {
            clear(state, &daemon, Some(fault), addr)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Runs `work` for every site at once (see [`at_once`]); the first
/// failure, naming its site.
pub fn on_each<T: Send>(
    sites: &[LineSite],
    work: impl Fn(&LineSite) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    at_once(sites, |site| {
        let place = site.host().unwrap_or("this machine");
        work(site).with_context(|| format!("the delay line on {place}"))
    })
}

/// Stops every daemon that delays nothing (it releases the packets it
/// holds first), then forgets it; a dead one is forgotten at once.
pub fn stop_idle(state: &RunState) -> anyhow::Result<()> {
    let mut hosts: Vec<Option<String>> =
        state.owned()?.processes.into_iter().filter(|p| p.role == ROLE).map(|p| p.host).collect();
    hosts.sort();
    hosts.dedup();
    let sites = hosts.iter().map(|host| LineSite::of(state, host.as_deref())).collect::<anyhow::Result<Vec<_>>>()?;
    on_each(&sites, |site| stop_if_idle(state, site))?;
    Ok(())
}

fn stop_if_idle(state: &RunState, site: &LineSite) -> anyhow::Result<()> {
    if let Some(daemon) = running(state, site)? {
        // One that does not answer delays nothing anyone can clear.
        if !delay_line::status(&site.control()).map(|r| r.impaired.is_empty()).unwrap_or(true) {
            return Ok(());
        }
        let stuck = site.place.stop(&[daemon.record()], Duration::from_secs(5))?;
        anyhow::ensure!(stuck.is_empty(), "the delay line (pid {}) would not stop", daemon.pid);
    }
    forget_dead(state, site)
}

/// Removes the site's records of daemons that are gone, and the socket
/// file a killed one left (nothing listens on it).
fn forget_dead(state: &RunState, site: &LineSite) -> anyhow::Result<()> {
    state.update(|owned| owned.processes.retain(|p| !site.is_ours(p) || site.place.is_alive(p.record())))?;
    site.place.remove_file(&site.socket)
}
