//! Throwaway network namespaces for capability probes and tests.
//!
//! A [`Throwaway`] creates namespaces (with [`crate::namespace`]) under
//! fresh, unique names and, when dropped (also on panic), deletes exactly
//! the names it created — never by pattern — so a probe or a failing test
//! leaves nothing behind and parallel users never collide.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::Result;
use crate::{link, namespace};

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
    pub fn namespace(&mut self, tag: &str) -> Result<String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tw{}-{n}-{tag}", std::process::id());
        namespace::create(&name)?;
        self.names.push(name.clone());
        link::set_up(&name, "lo")?;
        Ok(name)
    }

    /// Creates a veth pair `dev_a` (in `ns_a`) — `dev_b` (in `ns_b`), both up.
    pub fn veth(&self, ns_a: &str, dev_a: &str, ns_b: &str, dev_b: &str) -> Result<()> {
        link::create_veth(ns_a, dev_a, ns_b, dev_b)?;
        link::set_up(ns_a, dev_a)?;
        link::set_up(ns_b, dev_b)
    }

    /// Two namespaces joined by a veth pair with addresses (see [`Pair`]).
    pub fn pair(&mut self, tag: &str) -> Result<Pair> {
        let a = self.namespace(&format!("{tag}a"))?;
        let b = self.namespace(&format!("{tag}b"))?;
        self.veth(&a, "twa", &b, "twb")?;
        link::add_ipv4(&a, "twa", ADDR_A.parse::<Ipv4Addr>().expect("constant"), 24)?;
        link::add_ipv4(&b, "twb", ADDR_B.parse::<Ipv4Addr>().expect("constant"), 24)?;
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
            if let Err(e) = namespace::delete(name) {
                eprintln!("throwaway: could not delete namespace {name}: {e}");
            }
        }
    }
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
