//! `dynabed doctor`'s container checks, each run against a situation made to
//! fail the way containers fail: a private `/run/netns`, a read-only `/sys`,
//! a cgroup that cannot be written, low descriptor limits, legacy iptables
//! tables beside nf_tables ones. Each situation lives in a throwaway mount
//! or network namespace (`unshare`), so nothing outlives the test.

mod common;

use std::process::Command;

use common::{TestCluster, BIN};

/// Runs `doctor --json` after `setup` (a shell snippet taking no input) in
/// fresh namespaces made by `unshare` with `unshare_args`; returns the
/// finding whose mechanism starts with `mechanism`.
fn finding_after(unshare_args: &[&str], setup: &str, mechanism: &str) -> serde_json::Value {
    let script = format!("set -e; {setup}; exec \"$0\" doctor --json");
    let out = Command::new("unshare").args(unshare_args).args(["sh", "-c", &script, BIN]).output().unwrap();
    assert!(out.status.success(), "doctor: {}", String::from_utf8_lossy(&out.stderr));
    find(&out.stdout, mechanism)
}

fn find(json: &[u8], mechanism: &str) -> serde_json::Value {
    let findings: Vec<serde_json::Value> = serde_json::from_slice(json).unwrap();
    findings.into_iter().find(|f| f["mechanism"].as_str().unwrap().starts_with(mechanism)).unwrap()
}

fn assert_fails_with_fix(finding: &serde_json::Value, reason: &str) {
    assert_eq!(finding["works"], false, "{finding}");
    assert!(finding["detail"].as_str().unwrap().contains(reason), "{finding}");
    assert!(!finding["fix"].as_str().unwrap_or_default().is_empty(), "no fix given: {finding}");
}

fn privileged(test: &str) -> bool {
    let ok = netns::has_netns_capabilities();
    if !ok {
        eprintln!("{test}: skipped: needs CAP_NET_ADMIN and CAP_SYS_ADMIN");
    }
    ok
}

const PRIVATE_MOUNTS: &[&str] = &["--mount", "--propagation", "private"];

#[test]
fn a_private_run_netns_is_reported() {
    if !privileged("a_private_run_netns_is_reported") {
        return;
    }
    let setup = "mkdir -p /run/netns; mount -t tmpfs dynabed-doctor-test /run/netns";
    assert_fails_with_fix(&finding_after(PRIVATE_MOUNTS, setup, "/run/netns"), "private mount");
}

#[test]
fn a_read_only_sys_is_reported() {
    if !privileged("a_read_only_sys_is_reported") {
        return;
    }
    let finding = finding_after(PRIVATE_MOUNTS, "mount -o remount,bind,ro /sys", "/sys");
    assert_fails_with_fix(&finding, "/sys mounted read-only");
}

#[test]
fn a_cgroup_that_cannot_take_a_quota_is_reported() {
    if !privileged("a_cgroup_that_cannot_take_a_quota_is_reported") {
        return;
    }
    // Whichever hierarchy carries the cpu controller, made read-only.
    let setup = "if [ -d /sys/fs/cgroup/cpu ]; then mount -o remount,bind,ro /sys/fs/cgroup/cpu; \
                 else mount -o remount,bind,ro /sys/fs/cgroup; fi";
    assert_fails_with_fix(&finding_after(PRIVATE_MOUNTS, setup, "cgroup cpu quota"), "no CPU quota can be set");
}

/// Graceful degradation: without a CPU quota the cpu fault refuses before
/// journaling or changing anything, with the doctor's reason.
#[test]
fn the_cpu_fault_refuses_where_no_quota_can_be_set() {
    if !privileged("the_cpu_fault_refuses_where_no_quota_can_be_set") {
        return;
    }
    let cluster = TestCluster::up(97, 3, "memory", &[]);
    let procs = cluster.procs.to_str().unwrap();
    let script = "set -e; if [ -d /sys/fs/cgroup/cpu ]; then mount -o remount,bind,ro /sys/fs/cgroup/cpu; \
                  else mount -o remount,bind,ro /sys/fs/cgroup; fi; \
                  exec \"$0\" fault cpu --cpu_pct 20 --node node1 --cluster_procs \"$1\"";
    let out = Command::new("unshare").args(PRIVATE_MOUNTS).args(["sh", "-c", script, BIN, procs]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the cpu fault was applied: {stderr}");
    assert!(stderr.contains("the cpu fault cannot be made on this machine: no CPU quota"), "{stderr}");
    let list = Command::new(BIN).args(["fault", "list", "--cluster_procs", procs]).output().unwrap();
    assert!(list.status.success());
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("cpu"),
        "journaled: {}",
        String::from_utf8_lossy(&list.stdout)
    );

    // An experiment whose plan needs it refuses before its workload starts.
    let plan = cluster.dir.path().join("cpu.json");
    std::fs::write(&plan, r#"[{"at_s": 1, "duration_s": 1, "kind": "cpu", "targets": ["node1"]}]"#).unwrap();
    let out_dir = cluster.dir.path().join("run");
    let script = script.replace(
        "fault cpu --cpu_pct 20 --node node1 --cluster_procs \"$1\"",
        "experiment --plan \"$2\" --duration 3 --warmup 1 --cluster_procs \"$1\" --out \"$3\"",
    );
    assert!(script.contains("experiment --plan"));
    let (plan, out_dir_arg) = (plan.to_str().unwrap(), out_dir.to_str().unwrap());
    let out = Command::new("unshare")
        .args(PRIVATE_MOUNTS)
        .args(["sh", "-c", &script, BIN, procs, plan, out_dir_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the experiment ran: {stderr}");
    assert!(stderr.contains("the cpu fault cannot be made on this machine"), "{stderr}");
    let written = std::fs::read_dir(&out_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "the refused experiment wrote files");
}

#[test]
fn low_descriptor_limits_are_reported() {
    let out = Command::new("prlimit").args(["--nofile=300:300", BIN, "doctor", "--json"]).output().unwrap();
    assert!(out.status.success(), "doctor: {}", String::from_utf8_lossy(&out.stderr));
    assert_fails_with_fix(&find(&out.stdout, "file-descriptor"), "descriptors 300 per process");
}

#[test]
fn legacy_tables_beside_nf_tables_are_reported() {
    if !privileged("legacy_tables_beside_nf_tables_are_reported") {
        return;
    }
    let iptables = Command::new("iptables").arg("--version").output().unwrap();
    if !String::from_utf8_lossy(&iptables.stdout).contains("nf_tables") {
        eprintln!("legacy_tables_beside_nf_tables_are_reported: skipped: iptables is not the nf_tables backend here");
        return;
    }
    // A legacy table in a fresh network namespace, where the doctor then runs.
    let probe = Command::new("unshare").args(["--net", "iptables-legacy", "-L"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("legacy_tables_beside_nf_tables_are_reported: skipped: this kernel has no legacy iptables");
        return;
    }
    let finding = finding_after(&["--net"], "iptables-legacy -L >/dev/null", "iptables backend");
    assert_fails_with_fix(&finding, "legacy iptables tables are in use too");
}
