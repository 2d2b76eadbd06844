//! Throwaway network namespaces for capability probes and tests.
//!
//! A [`Throwaway`] creates namespaces with `ip netns add` under fresh, unique names and, when
//! dropped (also on panic), deletes exactly the names it created — never by pattern — so a
//! probe or a failing test leaves nothing behind and parallel users never collide.

use crate::command::{argv, run, Applied, CommandError};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The first address of the two-namespace test link.
pub const ADDR_A: &str = "198.18.0.1";
/// The second address of the two-namespace test link.
pub const ADDR_B: &str = "198.18.0.2";

/// A set of namespaces owned by this guard.
#[derive(Debug, Default)]
pub struct Throwaway {
    names: Vec<String>,
}

/// Two namespaces joined by a veth pair: `a` holds `twa` with [`ADDR_A`]/24, `b` holds `twb`
/// with [`ADDR_B`]/24; both links and both loopbacks are up.
#[derive(Debug, Clone)]
pub struct Pair {
    pub a: String,
    pub b: String,
}

impl Throwaway {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a namespace with a unique name (`tw<pid>-<n>-<tag>`), loopback up.
    pub fn namespace(&mut self, tag: &str) -> Result<String, CommandError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tw{}-{n}-{tag}", std::process::id());
        run(&argv(&["ip", "netns", "add", &name]))?;
        self.names.push(name.clone());
        run(&argv(&["ip", "-n", &name, "link", "set", "lo", "up"]))?;
        Ok(name)
    }

    /// Creates a veth pair `dev_a` (in `ns_a`) — `dev_b` (in `ns_b`), both up.
    pub fn veth(&self, ns_a: &str, dev_a: &str, ns_b: &str, dev_b: &str) -> Result<Applied, CommandError> {
        let cmds = vec![
            argv(&["ip", "-n", ns_a, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b]),
            argv(&["ip", "-n", ns_a, "link", "set", dev_a, "up"]),
            argv(&["ip", "-n", ns_b, "link", "set", dev_b, "up"]),
        ];
        run_all(cmds)
    }

    /// Adds `cidr` to `dev` in `ns`.
    pub fn address(&self, ns: &str, dev: &str, cidr: &str) -> Result<Applied, CommandError> {
        run_all(vec![argv(&["ip", "-n", ns, "addr", "add", cidr, "dev", dev])])
    }

    /// Two namespaces joined by a veth pair with addresses (see [`Pair`]).
    pub fn pair(&mut self, tag: &str) -> Result<Pair, CommandError> {
        let a = self.namespace(&format!("{tag}a"))?;
        let b = self.namespace(&format!("{tag}b"))?;
        self.veth(&a, "twa", &b, "twb")?;
        self.address(&a, "twa", &format!("{ADDR_A}/24"))?;
        self.address(&b, "twb", &format!("{ADDR_B}/24"))?;
        Ok(Pair { a, b })
    }

    /// The namespaces this guard created (and will delete).
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if let Err(e) = run(&argv(&["ip", "netns", "del", name])) {
                eprintln!("throwaway: could not delete namespace {name}: {e}");
            }
        }
    }
}

fn run_all(cmds: Vec<Vec<String>>) -> Result<Applied, CommandError> {
    let mut applied = Applied::none();
    for cmd in cmds {
        run(&cmd)?;
        applied.commands.push(cmd);
    }
    Ok(applied)
}

/// True when running as root (tests that touch the kernel skip otherwise).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Test helpers shared by the modules' kernel tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Mutex, MutexGuard};

    static TIMING: Mutex<()> = Mutex::new(());

    /// Serialises the tests whose assertions are timings (CPU share, RTT), so that parallel
    /// tests on a 2-core machine do not skew them.
    pub fn timing_lock() -> MutexGuard<'static, ()> {
        TIMING.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns false (after saying so) when the test cannot run without root.
    pub fn need_root() -> bool {
        if super::is_root() {
            return true;
        }
        eprintln!("skipped: needs root");
        false
    }
}
