//! The paths this CI kernel cannot take — netem, and cgroup v2's `cpu.max`
//! — tested where the kernel can: `scripts/vm-test` runs this file inside a
//! VM with Debian's stock kernel. Elsewhere each test says why it skipped.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ok_output as ok, privileged, NetnsCluster};
use dynabed::cluster::running::Cluster;

/// The median time of 21 TCP handshakes with `addr` from the client
/// namespace: one round trip each, handled by the kernel alone, so the
/// emulated machine's slowness barely adds to it.
fn median_rtt(addr: std::net::SocketAddr) -> Duration {
    let mut times = netns::namespace::run_in("tv1-client", || {
        (0..21)
            .map(|_| {
                let started = Instant::now();
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map(|_| started.elapsed())
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .unwrap()
    .unwrap();
    times.sort();
    times[10]
}

#[test]
fn slow_uses_netem_where_the_kernel_has_it() {
    if !privileged("netem") {
        return;
    }
    if !netns::qdisc::probe_netem().is_supported() {
        eprintln!("netem: skipped: this kernel has no sch_netem (scripts/vm-test runs it on a stock kernel)");
        return;
    }
    let cluster = NetnsCluster::new("tv1");
    ok(&cluster.up(3));
    let addr = Cluster::read(&cluster.procs()).unwrap().node("node3").unwrap().addr;
    let base = median_rtt(addr);
    let out = ok(&cluster.dynabed(&["fault", "slow", "--node", "node3", "--slow_ms", "40"]));
    assert!(out.contains("(Kernel layer, netem)"), "the netem backend ran: {out}");
    for (ns, dev) in [("tv1-hub", "tv1-n3"), ("tv1-n3", "eth0")] {
        let shown = Command::new("ip").args(["netns", "exec", ns, "tc", "qdisc", "show", "dev", dev]).output().unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        assert!(shown.contains("netem") && shown.contains("delay 20ms"), "{ns}/{dev}: {shown}");
    }
    let during = median_rtt(addr);
    println!("netem backend ran: asked 40 ms per round trip; round trip {base:?} before, {during:?} during");
    // The round trip takes at least the asked delay; above it, the bound
    // only has to tell 40 ms from a delay applied twice (80 ms), which
    // leaves room for coarse timers under emulation and a busy machine.
    assert!((Duration::from_millis(40)..Duration::from_millis(70)).contains(&during), "{during:?}");
    ok(&cluster.dynabed(&["fault", "heal"]));
    // Healed: less than half the delay above the baseline.
    let after = median_rtt(addr);
    assert!(after < base + Duration::from_millis(20), "healed: {after:?}, baseline {base:?}");
}

#[test]
fn cpu_uses_cpu_max_on_cgroup_v2() {
    if !privileged("cgroup_v2") {
        return;
    }
    match netns::cgroup::detect() {
        Ok((netns::cgroup::CgroupVersion::V2, _)) => {}
        other => {
            eprintln!("cgroup_v2: skipped: the cpu controller here is {other:?} (scripts/vm-test runs v2)");
            return;
        }
    }
    let cluster = NetnsCluster::new("tv2");
    ok(&cluster.up(3));
    let out = ok(&cluster.dynabed(&["fault", "cpu", "--node", "node1", "--cpu_pct", "10"]));
    let group = netns::cgroup::CpuGroup::open("dynabed-tv2-fault1").unwrap();
    let cpu_max = std::fs::read_to_string(group.path.join("cpu.max")).unwrap();
    println!("cgroup v2 ran: {out} cpu.max = {cpu_max}");
    assert_eq!(cpu_max.trim(), "10000 100000");
    ok(&cluster.dynabed(&["fault", "heal"]));
    assert!(!group.path.exists());
}
