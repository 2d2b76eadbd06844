//! `scripts/emulated-hosts`, which `cluster up --hosts` is tested against:
//! the hosts it makes take ssh logins whose shells run in the hosts' own
//! namespaces, and `down` (or a failed `up`) leaves nothing behind.
//!
//! One test, in phases: every `up` takes 198.19.0.0/16 in this namespace,
//! so two could not run at once.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/emulated-hosts");
const PREFIX: &str = "ehq";
const STATE: &str = "/run/dynabed/emulated-hosts/ehq";

fn script(args: &[&str]) -> Output {
    Command::new(SCRIPT).args(args).output().expect("running scripts/emulated-hosts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `down` when dropped, so a failing test removes its hosts too.
struct Hosts;

impl Drop for Hosts {
    fn drop(&mut self) {
        let output = script(&["down", "--prefix", PREFIX]);
        if !output.status.success() {
            eprintln!("emulated-hosts down failed: {}", text(&output.stderr));
        }
    }
}

/// One `[[host]]` of the hosts file.
#[derive(Debug, Default)]
struct Host {
    name: String,
    ssh: String,
    addrs: Vec<String>,
    dir: String,
    nodes: u32,
}

#[derive(Debug, Default)]
struct HostsFile {
    identity: String,
    known_hosts: String,
    hosts: Vec<Host>,
}

fn unquote(value: &str) -> String {
    let inner = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
    inner.unwrap_or_else(|| panic!("not a TOML string: {value}")).to_owned()
}

/// Reads the hosts file strictly: every line must be a comment, a known
/// table header or a known key (`toml` is no dependency of this crate).
fn parse_hosts_file(contents: &str) -> HostsFile {
    let mut file = HostsFile::default();
    let mut table = "";
    for line in contents.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line == "[ssh]" || line == "[[host]]" {
            table = line;
            if line == "[[host]]" {
                file.hosts.push(Host::default());
            }
            continue;
        }
        let (key, value) = line.split_once(" = ").unwrap_or_else(|| panic!("not a key = value line: {line}"));
        match (table, key) {
            ("[ssh]", "identity") => file.identity = unquote(value),
            ("[ssh]", "known_hosts") => file.known_hosts = unquote(value),
            ("[[host]]", _) => {
                let host = file.hosts.last_mut().unwrap();
                match key {
                    "name" => host.name = unquote(value),
                    "ssh" => host.ssh = unquote(value),
                    "dir" => host.dir = unquote(value),
                    "nodes" => host.nodes = value.parse().expect("nodes is a number"),
                    "addrs" => {
                        let list = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')).expect("addrs is a list");
                        host.addrs = list.split(", ").map(unquote).collect();
                    }
                    _ => panic!("unknown key in [[host]]: {line}"),
                }
            }
            _ => panic!("unknown line in {table:?}: {line}"),
        }
    }
    file
}

/// What the host's own shell says its IPv4 addresses are, over ssh with only
/// what the hosts file names.
fn remote_addrs(file: &HostsFile, host: &Host) -> String {
    let output = Command::new("ssh")
        .args(["-F", "none", "-i", &file.identity, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args(["-o", &format!("UserKnownHostsFile={}", file.known_hosts), "-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "ConnectTimeout=5", &host.ssh, "ip", "-4", "-o", "addr"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running ssh");
    assert!(output.status.success(), "ssh {}: {}", host.ssh, text(&output.stderr));
    text(&output.stdout)
}

/// Field 22 of /proc/PID/stat, None once the process is gone.
fn start_time(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    (fields[0] != "Z").then(|| fields[22 - 3].parse().unwrap())
}

/// The recorded sshds as (pid, start time).
fn recorded_sshds() -> Vec<(u64, u64)> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(STATE).join("state.json")).unwrap()).unwrap();
    let sshds = state["sshds"].as_array().expect("sshds in state.json");
    sshds.iter().map(|s| (s["pid"].as_u64().unwrap(), s["start_time"].as_u64().unwrap())).collect()
}

/// This namespace's addresses and routes.
fn root_network() -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for args in [["-o", "addr", "show"], ["-o", "route", "show"]] {
        lines.extend(text(&Command::new("ip").args(args).output().unwrap().stdout).lines().map(str::to_owned));
    }
    lines
}

/// Asserts that nothing of the prefix is left: namespaces, the control veth, the state.
fn assert_nothing_left() {
    let namespaces = text(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout);
    assert!(!namespaces.contains("ehq-"), "namespaces left: {namespaces}");
    let ctl = Command::new("ip").args(["link", "show", "dev", "ehq-ctl"]).output().unwrap();
    assert!(!ctl.status.success(), "ehq-ctl left: {}", text(&ctl.stdout));
    assert!(!Path::new(STATE).exists(), "{STATE} left");
}

fn a_failed_up_removes_what_it_made(tmp: &Path) {
    // The hosts file is written last; a folder in its place fails that step.
    let out = tmp.join("in-the-way");
    std::fs::create_dir(&out).unwrap();
    let output = script(&["up", "1", "--prefix", PREFIX, "--out", out.to_str().unwrap()]);
    assert!(!output.status.success(), "up wrote its hosts file over a folder");
    assert!(text(&output.stderr).contains("removing what it made"), "{}", text(&output.stderr));
    assert_nothing_left();
}

fn hosts_answer_in_their_namespaces(file: &HostsFile) {
    assert_eq!(file.identity, format!("{STATE}/id_ed25519"));
    assert_eq!(file.known_hosts, format!("{STATE}/known_hosts"));
    assert_eq!(file.hosts.len(), 2, "{file:?}");
    for (i, host) in (1..).zip(&file.hosts) {
        assert_eq!(host.name, format!("h{i}"));
        assert_eq!(host.ssh, format!("root@198.19.{i}.1"));
        assert_eq!(host.addrs, (11..=18).map(|k| format!("198.19.{i}.{k}")).collect::<Vec<_>>());
        assert_eq!(host.nodes, 2);
        let mode = std::fs::metadata(&host.dir).expect("host dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", host.dir);

        let seen = remote_addrs(file, host);
        for addr in std::iter::once(&format!("198.19.{i}.1")).chain(&host.addrs) {
            assert!(seen.contains(&format!("inet {addr}/16")), "h{i} lacks {addr}: {seen}");
        }
        // Only its own: not the other host's, not this namespace's control end.
        let other = 3 - i;
        assert!(!seen.contains(&format!("198.19.{other}.")) && !seen.contains("198.19.0.254"), "{seen}");
    }
}

#[test]
fn emulated_hosts_take_ssh_logins_in_their_namespaces_and_leave_nothing() {
    if !common::privileged("emulated_hosts_take_ssh_logins_in_their_namespaces_and_leave_nothing") {
        return;
    }
    let _guard = Hosts;
    script(&["down", "--prefix", PREFIX]); // what an interrupted earlier run left
    let before = root_network();
    let tmp = tempfile::tempdir().unwrap();
    a_failed_up_removes_what_it_made(tmp.path());

    let out: PathBuf = tmp.path().join("hosts.toml");
    let up = script(&["up", "2", "--prefix", PREFIX, "--out", out.to_str().unwrap()]);
    assert!(up.status.success(), "up failed: {}", text(&up.stderr));
    assert!(text(&up.stdout).contains(out.to_str().unwrap()), "{}", text(&up.stdout));
    let file = parse_hosts_file(&std::fs::read_to_string(&out).unwrap());
    hosts_answer_in_their_namespaces(&file);
    let sshds = recorded_sshds();
    assert_eq!(sshds.len(), 2);
    assert!(sshds.iter().all(|&(pid, started)| start_time(pid) == Some(started)), "sshds not running: {sshds:?}");

    // A second up on the same prefix refuses and leaves the first one working.
    let again = script(&["up", "1", "--prefix", PREFIX, "--out", tmp.path().join("again.toml").to_str().unwrap()]);
    assert!(!again.status.success(), "a second up on {PREFIX} succeeded");
    let refusal = text(&again.stderr);
    assert!(refusal.contains("already exists") && refusal.lines().count() == 1, "{refusal}");
    assert!(!tmp.path().join("again.toml").exists());
    remote_addrs(&file, &file.hosts[0]);

    let down = script(&["down", "--prefix", PREFIX]);
    assert!(down.status.success(), "down failed: {}", text(&down.stderr));
    assert_nothing_left();
    assert!(sshds.iter().all(|&(pid, started)| start_time(pid) != Some(started)), "an sshd survived down");
    assert_eq!(root_network(), before, "this namespace changed");
    let again = script(&["down", "--prefix", PREFIX]);
    assert!(again.status.success() && text(&again.stdout).contains("nothing to remove"), "{again:?}");
}
