//! `dynabed doctor` against an independent probe of the same kernel.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dynabed");

/// Tries `tc qdisc add ... KIND ...` on a veth in a scratch namespace made
/// with iproute2 alone, and removes the namespace again.
fn tc_accepts(kind_args: &[&str]) -> bool {
    let ns = format!("docind{}", std::process::id());
    let run =
        |args: &[&str]| Command::new(args[0]).args(&args[1..]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(run(&["ip", "netns", "add", &ns]), "ip netns add");
    assert!(run(&["ip", "-n", &ns, "link", "add", "ia", "type", "veth", "peer", "name", "ib"]));
    let mut tc = vec!["ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "ia", "root"];
    tc.extend_from_slice(kind_args);
    let accepted = run(&tc);
    assert!(run(&["ip", "netns", "del", &ns]), "ip netns del");
    accepted
}

#[test]
fn doctor_agrees_with_an_independent_probe() {
    if !netns::has_netns_capabilities() {
        eprintln!("doctor_agrees_with_an_independent_probe: skipped: needs CAP_NET_ADMIN and CAP_SYS_ADMIN");
        return;
    }
    let out = Command::new(BIN).args(["doctor", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let works = |prefix: &str| {
        findings.as_array().unwrap().iter().find(|f| f["mechanism"].as_str().unwrap().starts_with(prefix)).unwrap()
            ["works"]
            .as_bool()
            .unwrap()
    };
    assert_eq!(works("tc netem"), tc_accepts(&["netem", "delay", "1ms"]), "netem: {findings}");
    assert_eq!(works("tc tbf"), tc_accepts(&["tbf", "rate", "1mbit", "burst", "10kb", "latency", "50ms"]));
    assert!(works("network namespaces"));
}

#[test]
fn doctor_says_a_clock_skew_is_made_by_the_node_only() {
    let out = Command::new(BIN).args(["doctor", "--json"]).output().unwrap();
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skew = findings.as_array().unwrap().iter().find(|f| f["mechanism"] == "clock skew (app layer only)").unwrap();
    assert_eq!(skew["works"], true, "{skew}");
    assert!(skew["detail"].as_str().unwrap().contains("--fault_layer kernel is refused"), "{skew}");
}
