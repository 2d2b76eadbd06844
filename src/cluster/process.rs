//! Processes the test bed started, known by pid *and* start time.
//!
//! A pid alone can be recycled by the kernel once its process is gone; the
//! start time (field 22 of /proc/PID/stat) tells the original from an
//! unrelated newcomer, so a signal is only ever sent to the process that
//! was recorded.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRecord {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessRecord {
    /// The record of a running process, read from /proc.
    pub fn of(pid: u32) -> Option<Self> {
        start_time(pid).map(|start_time| ProcessRecord { pid, start_time })
    }

    /// True while the recorded process (not a recycled pid) exists and has
    /// not exited; a zombie counts as gone.
    pub fn is_running(&self) -> bool {
        start_time(self.pid) == Some(self.start_time) && !is_zombie(self.pid)
    }

    /// Sends `sig` if this is still the recorded process; false otherwise.
    pub fn signal(&self, sig: Signal) -> bool {
        self.is_running() && signal::kill(Pid::from_raw(self.pid as i32), sig).is_ok()
    }

    /// Waits up to `grace` for the process to end.
    pub fn wait_gone(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while self.is_running() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// SIGTERM, then SIGKILL after `grace`. True when the process is gone.
    pub fn stop(&self, grace: Duration) -> bool {
        if !self.signal(Signal::SIGTERM) {
            return !self.is_running();
        }
        // A stopped (SIGSTOPped) process handles SIGTERM only once continued.
        self.signal(Signal::SIGCONT);
        if self.wait_gone(grace) {
            return true;
        }
        self.signal(Signal::SIGKILL);
        self.wait_gone(Duration::from_secs(5))
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fixed fields start after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn start_time(pid: u32) -> Option<u64> {
    // Field 22 overall is the 20th after the command name (fields 3..).
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    stat_fields(pid).and_then(|f| f.first().cloned()).is_some_and(|state| state == "Z" || state == "X")
}

/// Starts `argv` detached (its own session, stdin from /dev/null, output
/// appended to `log`), so it outlives the command that started it.
pub fn spawn_detached(argv: &[String], log: &Path) -> anyhow::Result<ProcessRecord> {
    let (program, args) = argv.split_first().context("empty command line")?;
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no parent state.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = command.spawn().with_context(|| format!("starting {program}"))?;
    let pid = child.id();
    // Reap it when it ends, so a long-lived parent (the driver restarting
    // crashed nodes) collects no zombies; if this process exits first, init
    // takes over.
    std::thread::spawn(move || child.wait());
    ProcessRecord::of(pid).with_context(|| format!("{program} (pid {pid}) exited at once; see {}", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_record_is_running_and_a_wrong_start_time_is_not() {
        let me = ProcessRecord::of(std::process::id()).unwrap();
        assert!(me.is_running());
        let recycled = ProcessRecord { start_time: me.start_time + 1, ..me };
        assert!(!recycled.is_running());
        assert!(!recycled.signal(Signal::SIGTERM), "a mismatched record is never signalled");
    }

    #[test]
    fn spawns_detached_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let argv = ["sleep", "30"].map(String::from);
        let record = spawn_detached(&argv, &dir.path().join("log")).unwrap();
        assert!(record.is_running());
        let sid = nix::unistd::getsid(Some(Pid::from_raw(record.pid as i32))).unwrap();
        assert_eq!(sid.as_raw() as u32, record.pid, "the child leads its own session");
        assert!(record.stop(Duration::from_secs(2)));
        assert!(!record.is_running());
    }
}
