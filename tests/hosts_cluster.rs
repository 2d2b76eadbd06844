//! A cluster on hosts reached over SSH (root only), on three emulated hosts
//! of `scripts/emulated-hosts` — namespaces with their own sshd — two
//! nodes each: the nodes run in the hosts' namespaces, the seed's crash
//! and partition experiments lose no write, a pause, a partition and a CPU
//! quota made by hand are healed on the hosts, and both `cluster down` and `cleanup`
//! (after the cluster files are gone, as after a lost control machine)
//! leave no node, no firewall table and no shared SSH connection behind.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{ok_output as ok, privileged, reclaim, BIN};
use dynabed::cluster::running::Cluster;
use dynabed::cluster::runstate;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/emulated-hosts");
/// The emulated hosts' prefix, and the clusters' on them.
const HOSTS: &str = "ehc";
const CLUSTER: &str = "hc1";

/// Three emulated hosts, removed (with any cluster of ours on them) when dropped.
struct EmulatedHosts {
    dir: tempfile::TempDir,
}

impl EmulatedHosts {
    fn up() -> EmulatedHosts {
        reclaim(CLUSTER);
        // An earlier run killed before its `down`: remove its hosts first.
        ok(&script(&["down", "--prefix", HOSTS]));
        let hosts = EmulatedHosts { dir: tempfile::tempdir().unwrap() };
        let file = hosts.file().display().to_string();
        ok(&script(&["up", "3", "--prefix", HOSTS, "--out", &file]));
        hosts
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("hosts.toml")
    }

    fn procs(&self) -> PathBuf {
        self.dir.path().join("cluster_procs.json")
    }

    fn dynabed(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).current_dir(self.dir.path()).output().expect("running dynabed")
    }

    fn cluster_up(&self) -> Cluster {
        let file = self.file().display().to_string();
        ok(&self.dynabed(&["cluster", "up", "--hosts", &file, "--prefix", CLUSTER, "--storage", "memory"]));
        Cluster::read(&self.procs()).unwrap()
    }
}

impl Drop for EmulatedHosts {
    fn drop(&mut self) {
        if let Err(e) = dynabed::faults::teardown(CLUSTER) {
            eprintln!("cleanup of {CLUSTER}: {e:#}");
        }
        let out = script(&["down", "--prefix", HOSTS]);
        if !out.status.success() {
            eprintln!("emulated-hosts down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn script(args: &[&str]) -> Output {
    Command::new(SCRIPT).args(args).output().expect("running scripts/emulated-hosts")
}

fn host_namespace(host: u8) -> String {
    format!("{HOSTS}-h{host}")
}

/// The inode of a process's network namespace.
fn netns_of(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| m.ino())
}

/// The nftables tables in a host's namespace.
fn tables(host: u8) -> String {
    let out =
        Command::new("ip").args(["netns", "exec", &host_namespace(host), "nft", "list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The iptables rules of a host's namespace, or (`None`) of this machine's.
fn chains(host: Option<u8>) -> String {
    let argv: Vec<String> = match host {
        Some(host) => ["ip", "netns", "exec", &host_namespace(host), "iptables", "-w", "-S"].map(str::to_owned).into(),
        None => ["iptables", "-w", "-S"].map(str::to_owned).into(),
    };
    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an experiment; its summary.
fn experiment(hosts: &EmulatedHosts, mode: &str) -> serde_json::Value {
    let out = hosts.dir.path().join(mode);
    let args = ["--duration", "12", "--warmup", "3", "--failure_duration", "4", "--concurrency", "4"];
    let mut argv = vec!["experiment", "--failure_mode", mode, "--out", out.to_str().unwrap()];
    argv.extend(args);
    ok(&hosts.dynabed(&argv));
    let summary = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("summary_"))
        .expect("a summary");
    serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap()
}

/// The backends the run's faults used, and that each was verified.
fn backends(summary: &serde_json::Value, dir: &Path) -> Vec<String> {
    let stamp = summary["stamp"].as_str().map(str::to_owned);
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("faults_"))
        .unwrap_or_else(|| panic!("no faults file in {} ({stamp:?})", dir.display()));
    let faults: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let records = faults["events"].as_array().unwrap().iter().flat_map(|e| e["faults"].as_array().unwrap().clone());
    records
        .map(|f| {
            assert!(f["verified"].is_string(), "every fault was verified: {f}");
            f["backend"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn assert_nothing_left(nodes: &[(String, u32, u64)]) {
    for (id, pid, start) in nodes {
        // Exited: gone, or a zombie until its host's init reaps it.
        let process = netns::process::Spawned { pid: *pid, start_time: *start };
        assert!(!process.is_alive(), "{id} (pid {pid}) still runs");
    }
    for host in 1..=3 {
        assert!(!tables(host).contains(&format!("dynabed_{CLUSTER}_")), "a fault table is left on h{host}");
    }
    assert!(!runstate::dir_of(CLUSTER).exists(), "the run state (and its SSH control sockets) is gone");
    let daemons =
        Command::new("pgrep").args(["-f", "delay-line --socket /run/dynabed/emulated-hosts/ehc"]).output().unwrap();
    assert!(
        daemons.stdout.is_empty(),
        "a delay line still runs on a host: {}",
        String::from_utf8_lossy(&daemons.stdout)
    );
}

fn recorded(cluster: &Cluster) -> Vec<(String, u32, u64)> {
    cluster.nodes().iter().map(|n| (n.id.clone(), n.entry.pid, n.process.unwrap().start_time)).collect()
}

#[test]
fn a_cluster_on_three_hosts_survives_crash_and_partition_and_leaves_nothing() {
    if !privileged("hosts_cluster") {
        return;
    }
    let hosts = EmulatedHosts::up();
    let cluster = hosts.cluster_up();

    // Two nodes per host, each on its own address, each process in its host's namespace.
    assert_eq!(cluster.nodes().len(), 6);
    for (index, node) in cluster.nodes().iter().enumerate() {
        let host = index as u8 / 2 + 1;
        assert_eq!(node.entry.ssh.as_deref(), Some(format!("root@198.19.{host}.1").as_str()), "{}", node.id);
        assert_eq!(node.addr.ip().to_string(), format!("198.19.{host}.{}", 11 + index % 2), "{}", node.id);
        assert_eq!(node.place.host_name(), Some(format!("h{host}").as_str()));
        assert_eq!(netns_of(node.entry.pid), Some(netns::namespace::inode(&host_namespace(host)).unwrap()));
    }

    let crash = experiment(&hosts, "crash");
    assert_eq!(crash["lost_writes"]["lost"], 0, "{}", crash["lost_writes"]);
    assert!(crash["lost_writes"]["acknowledged"].as_u64().unwrap() > 0);
    assert_eq!(backends(&crash, &hosts.dir.path().join("crash")), ["signal"]);
    let partition = experiment(&hosts, "partition");
    assert_eq!(partition["lost_writes"]["lost"], 0, "{}", partition["lost_writes"]);
    assert_eq!(backends(&partition, &hosts.dir.path().join("partition")), ["nft-host"]);
    for host in 1..=3 {
        assert!(!tables(host).contains("dynabed_"), "the partition was healed on h{host}");
    }
    // Logs came back from the hosts with the run.
    let log = std::fs::read_dir(hosts.dir.path().join("crash"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("nodes_"))
        .map(|d| d.join("node1.log"))
        .expect("a nodes folder");
    assert!(std::fs::read_to_string(&log).unwrap().contains("node1"), "{}", log.display());

    // The crashed node runs again, as a new process on its host.
    let after = Cluster::read(&hosts.procs()).unwrap();
    assert!(after.nodes().iter().all(|n| n.running().is_some()), "every node runs after the runs");
    let nodes = recorded(&after);
    ok(&hosts.dynabed(&["cluster", "down"]));
    assert_nothing_left(&nodes);
}

#[test]
fn cleanup_heals_and_stops_everything_on_the_hosts_without_the_cluster_files() {
    if !privileged("hosts_cluster") {
        return;
    }
    let hosts = EmulatedHosts::up();
    let cluster = hosts.cluster_up();
    let nodes = recorded(&cluster);

    // A pause on h2 and a partition written on h3, both left in force.
    ok(&hosts.dynabed(&["fault", "pause", "--node", "node3"]));
    let paused = cluster.node("node3").unwrap().entry.pid;
    assert_eq!(netns::process::state(paused), Some('T'), "node3 is stopped on its host");
    ok(&hosts.dynabed(&["fault", "partition", "--node", "node5", "--with", "node6"]));
    assert!(tables(3).contains(&format!("dynabed_{CLUSTER}_fault")), "{}", tables(3));
    assert!(!tables(1).contains("dynabed_"), "only the partitioned side's host holds rules");
    // And a CPU quota, in a cgroup on node2's host.
    ok(&hosts.dynabed(&["fault", "cpu", "--node", "node2", "--cpu_pct", "20"]));
    let cgroups = netns::cgroup::detect().unwrap().1;
    let group = std::fs::read_dir(&cgroups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("dynabed-{CLUSTER}-fault")))
        .expect("the fault's cgroup");
    let members = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
    assert!(members.lines().any(|l| l == cluster.node("node2").unwrap().entry.pid.to_string()), "{members}");
    // And a kernel slow-down of node1: its packets are held where they
    // arrive, by a delay line on every host and on this machine.
    let slow = ok(&hosts.dynabed(&["fault", "slow", "--node", "node1", "--slow_ms", "150"]));
    assert!(slow.contains("nfqueue-delay-line") && slow.contains("from this machine takes"), "{slow}");
    let chain = format!("DYNABED_{CLUSTER}_SLOW");
    assert!(chains(None).contains(&chain), "this machine holds node1's packets");
    assert!(chains(Some(1)).contains(&format!("-d {}/32", cluster.node("node1").unwrap().addr.ip())));
    assert!(chains(Some(3)).contains(&chain) && !chains(Some(3)).contains("-d "), "h3 holds only what node1 sends");
    let listed = ok(&hosts.dynabed(&["fault", "list"]));
    for backend in ["nft-host", "signal", "cgroup-cpu", "nfqueue-delay-line"] {
        assert!(listed.contains(backend), "{backend}: {listed}");
    }

    // The control machine loses the cluster files: the run state still knows the hosts.
    std::fs::remove_file(hosts.procs()).unwrap();
    let out = ok(&Command::new(BIN).args(["cleanup", "--prefix", CLUSTER]).output().unwrap());
    assert!(out.contains("6"), "cleanup says what it stopped: {out}");
    assert_nothing_left(&nodes);
    assert!(!group.exists(), "the cgroup on node2's host was removed");
    for host in [None, Some(1), Some(2), Some(3)] {
        assert!(!chains(host).contains(&chain), "a delay chain is left on {host:?}: {}", chains(host));
    }
}
