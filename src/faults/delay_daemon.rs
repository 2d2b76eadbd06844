//! The cluster's delay-line daemon as the run state owns it: started when a
//! delay needs it, stopped once it delays nothing, and always known by its
//! record (pid and start time), never by its socket.
//!
//! The socket cannot tell: a SIGKILLed daemon leaves its socket file
//! behind, and a refused connection says nothing about what is delayed.
//! The record can: because the rules use queue-bypass, a daemon that is
//! gone took every delay it held with it. Its faults have lapsed (see
//! [`crate::api::fault::FaultRecord::lapse`]); healing them asks nothing of it and only
//! removes their rules, its record and its stale socket.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;

use super::delay_line;
use crate::api::cluster::OwnedProcess;
use crate::cluster::runstate::RunState;

/// The run state's name for the daemon.
pub const ROLE: &str = "delay-line";

/// The recorded daemon, if that very process still runs.
pub fn running(state: &RunState) -> anyhow::Result<Option<OwnedProcess>> {
    Ok(state.owned()?.processes.into_iter().find(|p| p.role == ROLE && p.record().is_alive()))
}

/// The running daemon; one is started in `hub` when there is none (after
/// forgetting a dead one).
pub fn ensure(state: &RunState, hub: &str) -> anyhow::Result<OwnedProcess> {
    if let Some(daemon) = running(state)? {
        return Ok(daemon);
    }
    forget_dead(state)?;
    let socket = delay_line::socket_path(state.dir());
    let exe = std::env::current_exe().context("locating the dynabed binary")?.to_string_lossy().into_owned();
    let argv = vec![exe, "delay-line".into(), "--socket".into(), socket.to_string_lossy().into_owned()];
    let log = state.dir().join("delay-line.log");
    let spawned = netns::process::spawn_in(Some(hub), &argv, &log, &[]).context("starting the delay line")?;
    let daemon = OwnedProcess { role: ROLE.into(), pid: spawned.pid, start_time: spawned.start_time, host: None };
    state.update(|owned| owned.processes.push(daemon.clone()))?;
    delay_line::wait_ready(&socket, Duration::from_secs(5))?;
    Ok(daemon)
}

/// Ends fault `fault`'s impairment of `addr` (every one of `addr`'s when
/// `None`) on `daemon` — unless that daemon is gone, which took it along.
pub fn clear(state: &RunState, daemon: &OwnedProcess, fault: Option<u32>, addr: Ipv4Addr) -> anyhow::Result<()> {
    if !daemon.record().is_alive() {
        return Ok(());
    }
    delay_line::clear(&delay_line::socket_path(state.dir()), fault, addr)
        .with_context(|| format!("asking the delay line (pid {}) to stop delaying {addr}", daemon.pid))?;
    Ok(())
}

/// Stops the daemon once it delays nothing (it releases the packets it
/// holds first), then forgets it; a dead one is forgotten at once.
pub fn stop_if_idle(state: &RunState) -> anyhow::Result<()> {
    if let Some(daemon) = running(state)? {
        let socket = delay_line::socket_path(state.dir());
        // One that does not answer delays nothing anyone can clear.
        if !delay_line::status(&socket).map(|r| r.impaired.is_empty()).unwrap_or(true) {
            return Ok(());
        }
        anyhow::ensure!(
            daemon.record().stop(Duration::from_secs(5)),
            "the delay line (pid {}) would not stop",
            daemon.pid
        );
    }
    forget_dead(state)
}

/// Removes the records of daemons that are gone, and the socket file a
/// killed one left (nothing listens on it).
fn forget_dead(state: &RunState) -> anyhow::Result<()> {
    state.update(|owned| owned.processes.retain(|p| p.role != ROLE || p.record().is_alive()))?;
    let socket = delay_line::socket_path(state.dir());
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the stale socket {}", socket.display()))
        }
        _ => Ok(()),
    }
}
