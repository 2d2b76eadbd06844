//! Crash and pause: a signal to the node's process.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use netns::process::Signal;

use super::{ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, Undo};
use crate::cluster::place::Place;

/// SIGKILL; healing restarts the node from its recorded command line when `restart`.
pub struct Kill {
    pub restart: bool,
}

impl Executor for Kill {
    fn backend(&self) -> Backend {
        Backend::Signal
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        Ok(if self.restart { vec![Undo::Restart { node: target.name().to_owned() }] } else { vec![] })
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        Ok(vec![send(target, Signal::SIGKILL)?])
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        Ok(format!("{} is gone", target.name()))
    }
}

/// SIGSTOP; healing sends SIGCONT to that very process.
pub struct Stop;

impl Executor for Stop {
    fn backend(&self) -> Backend {
        Backend::Signal
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        let process = target.running()?;
        let host = target.node.place.host_name().map(str::to_owned);
        Ok(vec![Undo::Continue { pid: process.pid, start_time: process.start_time, host }])
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        Ok(vec![send(target, Signal::SIGSTOP)?])
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        let node = target.name();
        let pid = target.process.map(|p| p.pid).unwrap_or_default();
        // A signal is delivered asynchronously: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut state = target.node.place.state(pid);
        while state != Some('T') && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            state = target.node.place.state(pid);
        }
        anyhow::ensure!(state == Some('T'), "{node} (pid {pid}) is in state {state:?}, not stopped");
        Ok(format!("{node} (pid {pid}) is stopped (state T)"))
    }
}

/// Sends `signal` to the node where it lives (waiting for a SIGKILLed one
/// to be gone).
fn send(target: &Target, signal: Signal) -> anyhow::Result<Vec<String>> {
    let process = target.running()?;
    let place = &target.node.place;
    if !place.signal(process, signal).with_context(|| format!("signalling {}", target.name()))? {
        bail!("{} (pid {}) is gone", target.name(), process.pid);
    }
    let kill = vec!["kill".into(), format!("-{}", signal.as_str().trim_start_matches("SIG")), process.pid.to_string()];
    Ok(match place {
        Place::Host(ssh) => ["ssh".to_owned(), ssh.host.ssh.clone()].into_iter().chain(kill).collect(),
        Place::Local { .. } => kill,
    })
}
