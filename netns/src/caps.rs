//! The capability check that decides between netns and loopback clusters.

use std::fs;

/// Capability bits from `linux/capability.h`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process holds both CAP_NET_ADMIN and CAP_SYS_ADMIN in its
/// effective set — what namespaced clusters need. Checked as capabilities,
/// not as uid 0, so that unprivileged containers running as root are told
/// the truth.
pub fn has_netns_capabilities() -> bool {
    effective_capabilities()
        .map(|caps| caps & (1 << CAP_SYS_ADMIN) != 0 && caps & (1 << CAP_NET_ADMIN) != 0)
        .unwrap_or(false)
}

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_capabilities_of_this_process() {
        let caps = effective_capabilities().expect("/proc/self/status has CapEff");
        let root = unsafe_geteuid() == 0;
        // Root in a normal (privileged) environment has both; a non-root user has neither.
        if !root {
            assert!(!has_netns_capabilities(), "non-root with CapEff {caps:x}");
        }
    }

    fn unsafe_geteuid() -> u32 {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX)
    }
}
