//! The capability check that decides between netns and loopback clusters.

use std::fs;

/// Capability bits from `linux/capability.h`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process holds both CAP_NET_ADMIN and CAP_SYS_ADMIN in its
/// effective set — what namespaced clusters need. Checked as capabilities,
/// not as uid 0, so that unprivileged containers running as root are told
/// the truth.
pub fn has_netns_capabilities() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| both_in(&status))
}

/// Whether a `/proc/PID/status` text grants both capabilities.
fn both_in(status: &str) -> bool {
    effective_capabilities(status)
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0 && caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Whether RLIMIT_NPROC does not bind this process: the kernel exempts
/// holders of CAP_SYS_ADMIN or CAP_SYS_RESOURCE (root in a privileged container).
pub fn exempt_from_nproc() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        effective_capabilities(&status).is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN | 1 << CAP_SYS_RESOURCE) != 0)
    })
}

fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(cap_eff: &str) -> String {
        format!("Name:\tx\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff}\n")
    }

    #[test]
    fn needs_both_capabilities_in_the_effective_set() {
        assert!(both_in(&status("000001ffffffffff")), "full root set");
        assert!(both_in(&status(&format!("{:016x}", (1u64 << 21) | (1 << 12)))), "exactly the two");
        assert!(!both_in(&status(&format!("{:016x}", 1u64 << 12))), "CAP_NET_ADMIN alone");
        assert!(!both_in(&status(&format!("{:016x}", 1u64 << 21))), "CAP_SYS_ADMIN alone");
        assert!(!both_in(&status("0000000000000000")), "an unprivileged process");
        assert!(!both_in("Name:\tx\n"), "no CapEff line");
    }

    #[test]
    fn reads_this_process() {
        let own = fs::read_to_string("/proc/self/status").unwrap();
        assert!(effective_capabilities(&own).is_some(), "/proc/self/status has CapEff");
        assert_eq!(has_netns_capabilities(), both_in(&own));
    }
}
