//! Detached processes started inside a named namespace, identified by pid
//! **and** start time so that nobody ever signals a recycled pid.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::kill;
pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::namespace;

/// A started process: its pid and its start time (field 22 of
/// `/proc/PID/stat`, clock ticks since boot). The pair names the process
/// for good: a recycled pid comes with another start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spawned {
    pub pid: u32,
    pub start_time: u64,
}

impl Spawned {
    /// The record of a running process, read from /proc.
    pub fn of(pid: u32) -> Option<Self> {
        start_time(pid).map(|start_time| Spawned { pid, start_time })
    }

    /// Sends `signal` only if this is still the recorded process; false
    /// otherwise (gone, or its pid now belongs to a stranger).
    pub fn signal(&self, signal: Signal) -> bool {
        self.is_alive() && kill(Pid::from_raw(self.pid as i32), signal).is_ok()
    }

    /// Waits up to `grace` for the process to end.
    pub fn wait_gone(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while self.is_alive() {
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
            return !self.is_alive();
        }
        // A stopped (SIGSTOPped) process handles SIGTERM only once continued.
        self.signal(Signal::SIGCONT);
        if self.wait_gone(grace) {
            return true;
        }
        self.signal(Signal::SIGKILL);
        self.wait_gone(Duration::from_secs(5))
    }

    /// Whether this very process (same pid, same start time) is still
    /// running — not a zombie, not a stranger that got its pid.
    pub fn is_alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start_time == self.start_time && s.state != 'Z' && s.state != 'X')
    }
}

/// Starts `argv` detached, inside network namespace `namespace` (or the
/// caller's own with `None`), and returns its pid and start time.
///
/// - The namespace file is opened in the parent, before fork; the child
///   only calls `setns(fd, CLONE_NEWNET)` (then `setsid`) between fork and
///   exec, so nothing that could allocate or lock runs in the child.
/// - Its own session (setsid): no controlling terminal, and a Ctrl-C on
///   the caller's terminal does not reach it.
/// - stdin is /dev/null; stdout and stderr are appended to `log` (created
///   if needed, mode 0600: what a process prints is its owner's to read).
/// - It inherits the caller's environment plus `env`.
/// - A background thread waits for it, so a long-lived caller collects no
///   zombies; its exit status is therefore not available to the caller.
pub fn spawn_in(namespace: Option<&str>, argv: &[String], log: &Path, env: &[(String, String)]) -> Result<Spawned> {
    let (program, args) = argv.split_first().ok_or(Error::EmptyArgv)?;
    let fail =
        |action, source| Error::Spawn { namespace: describe(namespace), program: program.clone(), action, source };
    let ns: Option<File> = namespace.map(namespace::open).transpose()?;
    let stdout =
        OpenOptions::new().create(true).append(true).mode(0o600).open(log).map_err(|e| fail("open the log file", e))?;
    let stderr = stdout.try_clone().map_err(|e| fail("duplicate the log file", e))?;

    let mut command = Command::new(program);
    command.args(args).envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes two system calls (setns, setsid); it neither allocates nor
    // takes locks. Errors become io::Error::from_raw_os_error-style values.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = &ns {
                setns(fd, CloneFlags::CLONE_NEWNET)?;
            }
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| fail("spawn", e))?;
    let pid = child.id();
    // Read before the reaper can run: until it is reaped the process is at
    // least a zombie, so /proc/PID/stat is there even if it already exited.
    let started = start_time(pid);
    // If no thread can be made, the process still runs; it will only stay
    // a zombie after it exits. Not worth failing a running process for.
    let _ = std::thread::Builder::new().name(format!("reap-{pid}")).spawn(move || child.wait());
    let start_time = started.ok_or_else(|| {
        fail("read /proc/PID/stat", io::Error::new(io::ErrorKind::NotFound, format!("no start time for pid {pid}")))
    })?;
    Ok(Spawned { pid, start_time })
}

/// Start time of process `pid` (field 22 of `/proc/PID/stat`, in clock
/// ticks since boot), or `None` if there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// The scheduler state of process `pid` (`R`, `S`, `T` for stopped, ...).
pub fn state(pid: u32) -> Option<char> {
    stat(pid).map(|s| s.state)
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    /// User plus system CPU time, in clock ticks (see `ticks_per_second`).
    pub cpu_ticks: u64,
    /// Clock ticks after boot.
    pub start_time: u64,
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The unit of `Stat`'s tick counts.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Fields 3, 14 + 15 and 22 of a `/proc/PID/stat` line. Fields are counted
/// after the LAST `)`: the command name (field 2) is in parentheses and may
/// itself contain spaces and `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat { state: fields.first()?.chars().next()?, cpu_ticks: field(14)? + field(15)?, start_time: field(22)? })
}

fn describe(namespace: Option<&str>) -> String {
    match namespace {
        Some(name) => format!("network namespace {name:?}"),
        None => "the current network namespace".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_last_parenthesis() {
        // A command name with spaces and a `)` must not shift the fields.
        let stat = "4242 (evil) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1 2 0 0 20 0 1 0 987654 1234567 89 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(Stat { state: 'S', cpu_ticks: 1 + 2, start_time: 987654 }));
    }

    #[test]
    fn a_truncated_stat_line_gives_none() {
        assert_eq!(parse_stat("1 (init) S 0 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_start_time_is_readable_and_stable() {
        let me = std::process::id();
        let first = start_time(me).expect("own /proc/PID/stat");
        assert_eq!(start_time(me), Some(first));
        assert!(Spawned { pid: me, start_time: first }.is_alive());
        assert!(!Spawned { pid: me, start_time: first + 1 }.is_alive());
    }

    #[test]
    fn an_empty_argv_is_refused() {
        let log = std::env::temp_dir().join("netns-empty-argv.log");
        assert!(matches!(spawn_in(None, &[], &log, &[]), Err(Error::EmptyArgv)));
    }

    #[test]
    fn spawns_detached_in_the_current_namespace_with_env_and_log() {
        let dir = std::env::temp_dir().join(format!("netns-spawn-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("out.log");
        fs::write(&log, "before\n").expect("seed log");
        let argv: Vec<String> = ["sh", "-c", "echo \"$NETNS_TEST_VAR\"; echo err >&2; cut -d' ' -f6 /proc/$$/stat"]
            .map(String::from)
            .to_vec();
        let env = [("NETNS_TEST_VAR".to_owned(), "hello".to_owned())];
        let spawned = spawn_in(None, &argv, &log, &env).expect("spawn sh");
        assert!(spawned.start_time > 0);
        let text = wait_for_lines(&log, 4);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "before", "log is appended to, not truncated");
        assert!(lines.contains(&"hello"), "env reached the child: {text}");
        assert!(lines.contains(&"err"), "stderr goes to the log: {text}");
        // Its own session: session id == its own pid.
        let sid = spawned.pid.to_string();
        assert!(lines.iter().any(|l| l.trim() == sid), "setsid: {text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_log_it_creates_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("netns-log-mode-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("new.log");
        let spawned = spawn_in(None, &["true".to_owned()], &log, &[]).expect("spawn true");
        assert!(spawned.wait_gone(Duration::from_secs(5)));
        assert_eq!(fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    /// The log once it has `n` lines, or as it is after 20 s: a deadline
    /// only a hang reaches, however busy the machine.
    fn wait_for_lines(log: &Path, n: usize) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(log).unwrap_or_default();
            if text.lines().count() >= n || std::time::Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
