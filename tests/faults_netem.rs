//! The new network faults on netem, where the kernel has sch_netem:
//! `scripts/vm-test` runs this file inside a VM with Debian's stock
//! kernel (this CI kernel has no netem, and takes the delay line; see
//! tests/faults_network.rs). Each fault must run on netem, pass its own
//! probe (the tool measures the effect before it reports success) and heal
//! without leftovers.

mod common;

use common::{ok_output as ok, privileged, NetnsCluster};
use dynabed::cluster::runstate::RunState;
use dynabed::faults::heal::{heal, HealFor};
use dynabed::faults::leftovers::leftovers;

#[test]
fn jitter_correlated_loss_duplicate_reorder_and_corrupt_run_on_netem() {
    if !privileged("netem_faults") {
        return;
    }
    if !netns::qdisc::probe_netem().is_supported() {
        eprintln!("netem_faults: skipped: this kernel has no sch_netem (scripts/vm-test runs it on a stock kernel)");
        return;
    }
    let cluster = NetnsCluster::new("j7");
    ok(&cluster.up(3));
    let faults: [&[&str]; 5] = [
        // Emulation adds ~25 ms and ~15 ms of its own spread to a handshake:
        // a wide jitter keeps the probe's 20 % band about netem, not the VM.
        &["slow", "--slow_ms", "200", "--jitter_ms", "60"],
        &["loss", "--loss_pct", "20", "--loss_correlation_pct", "60"],
        &["duplicate", "--duplicate_pct", "20"],
        &["reorder", "--reorder_pct", "25"],
        &["corrupt", "--corrupt_pct", "10"],
    ];
    for args in faults {
        let mut command = vec!["fault"];
        command.extend(args);
        command.extend(["--node", "node2"]);
        let out = ok(&cluster.dynabed(&command));
        println!("netem network fault ran: {out}");
        assert!(out.contains("(Kernel layer, netem)"), "{args:?} ran on netem: {out}");
        let state = RunState::existing("j7").unwrap().unwrap();
        let healed = heal(&state, None, HealFor::Service).unwrap();
        let left = leftovers(&state, &healed).unwrap();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}
