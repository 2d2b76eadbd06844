//! Shared helpers for the root tests: unique names, a cleanup guard, and
//! the skip notice for unprivileged runs.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use netns::process::Spawned;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whether the root-only tests can run; says so on stderr when they cannot,
/// so a skipped test is never mistaken for a passed one.
pub fn privileged() -> bool {
    let ok = netns::has_netns_capabilities();
    if !ok {
        eprintln!("skipped: needs CAP_NET_ADMIN and CAP_SYS_ADMIN");
    }
    ok
}

/// A per-test name prefix `nt<pid%1000>-<testno>`: parallel tests (and
/// test binaries running at the same time) never collide, and
/// `<prefix>-xxx` still fits in 15 bytes for interface names.
pub fn prefix(testno: u32) -> String {
    format!("nt{}-{testno}", std::process::id() % 1000)
}

/// Owns what a test created: deletes its namespaces (by the exact names it
/// created, never by pattern) and kills its processes (only if pid AND
/// start time still match) when dropped — also when the test panics.
#[derive(Default)]
pub struct Guard {
    namespaces: Vec<String>,
    processes: Vec<Spawned>,
}

impl Guard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates namespace `name` and takes charge of deleting it.
    pub fn namespace(&mut self, name: &str) -> String {
        netns::namespace::create(name).unwrap_or_else(|e| panic!("create {name}: {e}"));
        self.namespaces.push(name.to_owned());
        name.to_owned()
    }

    /// Takes charge of killing `process`.
    pub fn process(&mut self, process: Spawned) -> Spawned {
        self.processes.push(process);
        process
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for p in &self.processes {
            if p.is_alive() {
                let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
            }
        }
        for name in &self.namespaces {
            if let Err(e) = netns::namespace::delete(name) {
                eprintln!("cleanup: delete namespace {name}: {e}");
            }
        }
    }
}

/// Inode of the network namespace a path like `/proc/PID/ns/net` points to.
pub fn ns_inode_of(path: &str) -> u64 {
    fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}")).ino()
}

/// Names of the links in the calling thread's own network namespace, read
/// from /proc/thread-self/net/dev (no netlink needed for the host).
pub fn links_of_this_thread() -> Vec<String> {
    let dev = fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev");
    dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_owned()).collect()
}

/// Polls `check` every 10 ms until it holds or `timeout` passes; callers
/// give a timeout only a hang reaches, however busy the machine.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
