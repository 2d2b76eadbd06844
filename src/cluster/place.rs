//! Where a process the test bed started lives — on this machine (in a
//! namespace or not) or on a host reached over SSH — and the few things
//! done to it: start it, ask whether that very process still runs, signal
//! it, stop it, read the end of its log.
//!
//! Everything that acts on node processes (cluster up, down and restart,
//! cleanup, the crash and pause faults) goes through a `Place`, so a
//! cluster on hosts is driven by the same code as a local one; only where
//! the system call happens changes.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use netns::cgroup::CpuGroup;
use netns::process::{Signal, Spawned};

use super::agent::record;
use super::ssh::Ssh;
use crate::api::hosts::Deployed;

#[derive(Debug, Clone)]
pub enum Place {
    /// This machine; processes start in `netns` when given.
    Local { netns: Option<String> },
    /// A host, through `dynabed host-agent` (the binary deployed there).
    Host(Box<Ssh>),
}

impl Place {
    /// The place of host `name` of a deployment.
    pub fn host(deployed: &Deployed, name: &str) -> anyhow::Result<Place> {
        Ok(Place::Host(Box::new(Ssh::of(deployed, name)?)))
    }

    /// The host's name, or `None` on this machine.
    pub fn host_name(&self) -> Option<&str> {
        match self {
            Place::Local { .. } => None,
            Place::Host(ssh) => Some(&ssh.host.name),
        }
    }

    /// Starts `argv` detached, its output appended to `log`.
    pub fn spawn(&self, argv: &[String], log: &Path, env: &[(String, String)]) -> anyhow::Result<Spawned> {
        match self {
            Place::Local { netns } => Ok(netns::process::spawn_in(netns.as_deref(), argv, log, env)?),
            Place::Host(_) => {
                let mut remote = vec!["spawn".to_owned(), "--log".to_owned(), log.display().to_string()];
                remote.extend(env.iter().flat_map(|(k, v)| ["--env".to_owned(), format!("{k}={v}")]));
                remote.push("--".to_owned());
                remote.extend(argv.iter().cloned());
                let out = self.agent(&remote)?;
                let (pid, start) = out.trim().split_once(' ').with_context(|| format!("the agent said {out:?}"))?;
                Ok(Spawned { pid: pid.parse()?, start_time: start.parse()? })
            }
        }
    }

    /// Whether `process` still runs. A host that cannot be asked counts
    /// its processes as running: they are never forgotten for being out
    /// of reach, and stopping them later says why it fails.
    pub fn is_alive(&self, process: Spawned) -> bool {
        match self {
            Place::Local { .. } => process.is_alive(),
            Place::Host(ssh) => match self.agent(&["alive".to_owned(), record(process)]) {
                Ok(out) => out.trim() != "0",
                Err(e) => {
                    eprintln!("warning: cannot ask host {} about pid {}: {e:#}", ssh.host.name, process.pid);
                    true
                }
            },
        }
    }

    /// Sends `signal` if `process` is still the one recorded; false when it
    /// is gone. After SIGKILL waits until it is gone.
    pub fn signal(&self, process: Spawned, signal: Signal) -> anyhow::Result<bool> {
        const GONE_WITHIN: Duration = Duration::from_secs(5);
        match self {
            Place::Local { .. } => {
                if !process.signal(signal) {
                    return Ok(false);
                }
                if signal == Signal::SIGKILL && !process.wait_gone(GONE_WITHIN) {
                    bail!("pid {} survived SIGKILL", process.pid);
                }
                Ok(true)
            }
            Place::Host(_) => {
                let mut remote = vec!["signal".to_owned(), signal.as_str().to_owned(), record(process)];
                if signal == Signal::SIGKILL {
                    remote.extend(["--wait_gone_ms".to_owned(), GONE_WITHIN.as_millis().to_string()]);
                }
                Ok(self.agent(&remote)?.trim() == "sent")
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`, to each of `processes`, all at
    /// once; the pids that survived.
    pub fn stop(&self, processes: &[Spawned], grace: Duration) -> anyhow::Result<Vec<u32>> {
        match self {
            Place::Local { .. } => Ok(super::cleanup::stop_within(processes, grace)),
            Place::Host(_) if processes.is_empty() => Ok(vec![]),
            Place::Host(_) => {
                let mut remote = vec!["stop".to_owned(), "--grace_ms".to_owned(), grace.as_millis().to_string()];
                remote.extend(processes.iter().map(|&p| record(p)));
                let out = self.agent(&remote)?;
                out.lines().map(|l| l.trim().parse().with_context(|| format!("the agent said {l:?}"))).collect()
            }
        }
    }

    /// A process's state letter (`T` when stopped), if it exists.
    pub fn state(&self, pid: u32) -> Option<char> {
        match self {
            Place::Local { .. } => netns::process::state(pid),
            Place::Host(_) => self.agent(&["state".to_owned(), pid.to_string()]).ok()?.trim().chars().next(),
        }
        .filter(|&c| c != '-')
    }

    /// Puts `process` in CPU cgroup `name`, limited to `pct` % of one
    /// core; the group's folder (on its host), and the commands run.
    pub fn limit_cpu(&self, name: &str, pct: u32, process: Spawned) -> anyhow::Result<(String, Vec<Vec<String>>)> {
        match self {
            Place::Local { .. } => {
                let (group, mut applied) = CpuGroup::create(name, pct)?;
                applied.extend(group.add(process.pid)?);
                Ok((group.path.display().to_string(), applied.commands))
            }
            Place::Host(ssh) => {
                let args = ["cpu-limit".to_owned(), name.to_owned(), pct.to_string(), record(process)];
                let path = self.agent(&args)?.trim().to_owned();
                let command = ["ssh", &ssh.host.ssh, "dynabed", "host-agent"].map(str::to_owned);
                Ok((path, vec![command.into_iter().chain(args).collect()]))
            }
        }
    }

    /// The pids in CPU cgroup `name`.
    pub fn cpu_members(&self, name: &str) -> anyhow::Result<Vec<u32>> {
        match self {
            Place::Local { .. } => Ok(CpuGroup::open(name)?.pids()?),
            Place::Host(_) => {
                let out = self.agent(&["cpu-members".to_owned(), name.to_owned()])?;
                out.lines().map(|l| l.trim().parse().with_context(|| format!("the agent said {l:?}"))).collect()
            }
        }
    }

    /// Removes CPU cgroup `name`, its processes moved back to its parent.
    pub fn release_cpu(&self, name: &str) -> anyhow::Result<()> {
        match self {
            Place::Local { .. } => drop(CpuGroup::open(name)?.remove()?),
            Place::Host(_) => drop(self.agent(&["cpu-release".to_owned(), name.to_owned()])?),
        }
        Ok(())
    }

    /// Sends `line` to the Unix socket `socket` where this place is; the
    /// line it answers.
    pub fn call_unix(&self, socket: &Path, line: &str) -> anyhow::Result<String> {
        match self {
            Place::Local { .. } => super::agent::call_unix(socket, line),
            Place::Host(_) => {
                let socket = socket.display().to_string();
                self.agent(&["unix-call", "--socket", &socket, line].map(str::to_owned))
            }
        }
    }

    /// Whether a handshake from address `from` on this host to `to`
    /// completes within `timeout` (only asked of hosts).
    pub fn connects(&self, from: IpAddr, to: SocketAddr, timeout: Duration) -> anyhow::Result<bool> {
        let timeout_ms = timeout.as_millis().to_string();
        let args = ["connect", "--from", &from.to_string(), &to.to_string(), "--timeout_ms", &timeout_ms];
        Ok(self.agent(&args.map(str::to_owned))?.trim() == "1")
    }

    /// Copies file `from` (where the process lives) to `to` on this machine.
    pub fn fetch(&self, from: &Path, to: &Path) -> anyhow::Result<()> {
        match self {
            Place::Local { .. } => {
                std::fs::copy(from, to)?;
            }
            Place::Host(ssh) => {
                let text = ssh.run(&["cat".to_owned(), from.display().to_string()], None)?;
                std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
            }
        }
        Ok(())
    }

    /// Removes file `path` where this place is; one already gone is fine.
    pub fn remove_file(&self, path: &Path) -> anyhow::Result<()> {
        match self {
            Place::Local { .. } => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            },
            Place::Host(ssh) => {
                ssh.run(&["rm".into(), "-f".into(), path.display().to_string()], None)?;
                Ok(())
            }
        }
    }

    /// The last lines of a log: why a node exited, in its own words.
    pub fn last_lines(&self, log: &Path) -> String {
        let text = match self {
            Place::Local { .. } => std::fs::read_to_string(log).ok(),
            Place::Host(ssh) => {
                ssh.run(&["tail".to_owned(), "-n".to_owned(), "20".to_owned(), log.display().to_string()], None).ok()
            }
        };
        let Some(text) = text else { return "no log".into() };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// The dynabed binary where this place is.
    pub fn binary(&self) -> anyhow::Result<PathBuf> {
        match self {
            Place::Local { .. } => std::env::current_exe().context("locating the dynabed binary"),
            Place::Host(ssh) => ssh.agent.clone().context("the agent is not deployed on this host"),
        }
    }

    /// Runs the host agent with `args`; its output.
    fn agent(&self, args: &[String]) -> anyhow::Result<String> {
        let Place::Host(ssh) = self else { bail!("the agent runs only on hosts") };
        let bin = ssh.agent.as_ref().context("the agent is not deployed on this host")?;
        let mut remote = vec![bin.display().to_string(), "host-agent".to_owned()];
        remote.extend(args.iter().cloned());
        ssh.run(&remote, None)
    }
}

/// Runs `work` for every item at once — an item at a host costs SSH round
/// trips, so hosts are asked side by side; the results in order, or the
/// first failure.
pub fn at_once<I: Sync, T: Send>(items: &[I], work: impl Fn(&I) -> anyhow::Result<T> + Sync) -> anyhow::Result<Vec<T>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| work(item))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a step at a place panicked"))?).collect()
    })
}

/// Processes grouped by the place each lives at (by host; this machine is one).
pub fn by_place(processes: impl IntoIterator<Item = (Place, Spawned)>) -> Vec<(Place, Vec<Spawned>)> {
    let mut groups: Vec<(Place, Vec<Spawned>)> = Vec::new();
    for (place, process) in processes {
        match groups.iter_mut().find(|(p, _)| p.host_name() == place.host_name()) {
            Some((_, records)) => records.push(process),
            None => groups.push((place, vec![process])),
        }
    }
    groups
}

/// SIGTERM, then SIGKILL after `grace`, to every process still running,
/// every place at once: how many ran, and the pids that survived.
pub fn stop_everywhere(groups: &[(Place, Vec<Spawned>)], grace: Duration) -> anyhow::Result<(usize, Vec<u32>)> {
    let stopped = at_once(groups, |(place, records)| {
        let running: Vec<Spawned> = records.iter().copied().filter(|&r| place.is_alive(r)).collect();
        Ok((running.len(), place.stop(&running, grace)?))
    })?;
    Ok(stopped.into_iter().fold((0, Vec::new()), |(ran, mut stuck), (n, s)| {
        stuck.extend(s);
        (ran + n, stuck)
    }))
}
