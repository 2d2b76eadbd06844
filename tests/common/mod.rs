//! A loopback cluster of real `dynabed` processes for integration tests.
//!
//! Each test takes its own `slot`, which gives it its own address
//! (127.0.<slot>.2, every node on it with the seed's ports 60000, 60001, …)
//! and prefix, so tests run in parallel without colliding. The
//! cluster is stopped when the harness is dropped — also when the test
//! panics — by the same ownership records `dynabed cluster down` uses.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod experiment;

use dynabed::api::admin::Held;
use dynabed::client::{Answer, Client};
use dynabed::cluster::{files, manage, running::Cluster, runstate};
use nix::sys::signal::Signal;

pub const BIN: &str = env!("CARGO_BIN_EXE_dynabed");

pub struct TestCluster {
    /// What `cluster up` printed.
    pub startup: String,
    pub dir: tempfile::TempDir,
    pub procs: PathBuf,
    pub token: String,
    pub nodes: BTreeMap<String, SocketAddr>,
}

/// Node flags for test clusters: the suite runs many clusters at once on
/// two cores, where the store's short default timeouts (made for a machine
/// running one cluster) would fail requests that were only late. Tests of
/// the timeouts themselves set their own (an `extra` flag overrides these).
const LOADED_MACHINE: &[&str] = &[
    "--node_arg=--fail_after_ms=1000",
    "--node_arg=--gossip_ms=100",
    "--node_arg=--handoff_ms=200",
    "--node_arg=--timeout_floor_ms=500",
    "--node_arg=--timeout_cap_ms=1500",
];

/// Whether `extra` sets the same node flag as `default`.
fn overridden(default: &str, extra: &[&str]) -> bool {
    let flag = |arg: &str| arg.split('=').take(2).collect::<Vec<_>>().join("=");
    extra.iter().any(|e| flag(e) == flag(default))
}

impl TestCluster {
    /// Starts `nodes` nodes with `dynabed cluster up --loopback`.
    pub fn up(slot: u8, nodes: u16, storage: &str, extra: &[&str]) -> Self {
        reclaim(&format!("t{slot}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let procs = dir.path().join("cluster_procs.json");
        let output = Command::new(BIN)
            .args(["cluster", "up", "--loopback", "--nodes", &nodes.to_string(), "--storage", storage])
            .args(["--prefix", &format!("t{slot}"), "--loopback_host", &format!("127.0.{slot}.2")])
            .arg("--cluster_procs")
            .arg(&procs)
            .args(LOADED_MACHINE.iter().filter(|arg| !overridden(arg, extra)))
            .args(extra)
            .output()
            .expect("running dynabed cluster up");
        let mut cluster = Self::adopt(dir, procs);
        assert!(output.status.success(), "cluster up failed: {}", String::from_utf8_lossy(&output.stderr));
        cluster.startup = String::from_utf8_lossy(&output.stdout).into_owned();
        cluster
    }

    /// Takes ownership of whatever cluster the file describes.
    pub fn adopt(dir: tempfile::TempDir, procs: PathBuf) -> Self {
        let mut cluster =
            TestCluster { startup: String::new(), dir, procs, token: String::new(), nodes: BTreeMap::new() };
        cluster.refresh();
        cluster
    }

    /// Reads the cluster files again (addresses and token; none when no cluster runs).
    pub fn refresh(&mut self) {
        let Some(read) = Cluster::read_if_any(&self.procs).expect("cluster files") else { return };
        self.token = read.meta().admin_token.clone();
        self.nodes = read.nodes().iter().map(|node| (node.id.clone(), node.addr)).collect();
    }

    pub fn client(&self, id: &str) -> Client {
        Client::new(self.nodes[id]).with_token(Some(self.token.clone())).with_timeout(Duration::from_secs(10))
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.nodes.keys().cloned().collect();
        ids.sort_by_key(|id| files::natural_key(id));
        ids
    }

    /// Sends `signal` to the node's recorded process and, for SIGKILL, waits until it is gone.
    pub fn signal(&self, id: &str, signal: Signal) {
        let record = manage::node_record(&self.procs, id).expect("node record");
        assert!(record.signal(signal), "{id} was not running");
        if signal == Signal::SIGKILL {
            assert!(record.wait_gone(Duration::from_secs(5)), "{id} survived SIGKILL");
        }
    }

    /// Restarts a stopped node and waits until it serves and sees everyone.
    pub async fn restart(&self, id: &str) {
        manage::restart(&self.procs, id).expect("restart");
        self.wait_all_alive(id).await;
    }

    pub async fn status(&self, id: &str) -> serde_json::Value {
        serde_json::to_value(self.client(id).status().await.expect("status")).expect("status JSON")
    }

    /// Waits until `id` sees every member alive.
    pub async fn wait_all_alive(&self, id: &str) {
        let want = self.nodes.len();
        wait_until(&format!("{id} sees all {want} members alive"), Duration::from_secs(15), || async {
            let Ok(status) = self.client(id).status().await else { return false };
            status.members.len() == want && status.down().next().is_none()
        })
        .await;
    }

    /// What each replica of `key` holds: node → values (tombstones as None);
    /// every replica must answer.
    pub async fn replicas(&self, via: &str, key: &str) -> BTreeMap<String, Vec<Option<Vec<u8>>>> {
        let answer = self.client(via).replicas(key).await.expect("replicas");
        answer
            .replicas
            .into_iter()
            .map(|r| match r.held {
                Held::Versions { versions } => (r.node, versions.iter().map(|v| v.value.as_deref().map(b64)).collect()),
                Held::Unreadable { error } => panic!("replica {} unreadable: {error}", r.node),
            })
            .collect()
    }
}

impl TestCluster {
    /// Starts one more node with `dynabed node ARGS` and records it in the
    /// cluster files, so that it is stopped with the others.
    pub async fn add_node(&mut self, id: &str, args: &[String]) {
        let mut argv = vec![BIN.to_owned(), "node".to_owned(), "--id".to_owned(), id.to_owned()];
        argv.extend(args.iter().cloned());
        argv.extend(["--cluster_procs".to_owned(), self.procs.to_string_lossy().into_owned()]);
        let log = self.dir.path().join(format!("{id}.log"));
        let record = netns::process::spawn_in(None, &argv, &log, &[]).expect("spawn node");
        let locked = files::Locked::acquire(&self.procs).unwrap();
        let mut current = locked.read().unwrap();
        let arg = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone()).unwrap();
        current.procs.insert(
            id.to_owned(),
            dynabed::api::cluster::NodeEntry {
                pid: record.pid,
                port: arg("--port").parse().unwrap(),
                host: arg("--host"),
                peer_port: arg("--peer_port").parse().unwrap(),
                netns: None,
                data_dir: self.dir.path().join(id),
                ssh: None,
            },
        );
        let node = dynabed::api::cluster::NodeMeta { argv, start_time: record.start_time, log: Some(log), host: None };
        current.meta.as_mut().unwrap().nodes.insert(id.to_owned(), node);
        locked.write(&current).unwrap();
        drop(locked);
        self.refresh();
        self.wait_all_alive(id).await;
    }

    /// `POST /admin/<route>` on one node; the answer must be 200.
    pub async fn admin(&self, id: &str, route: &str, body: serde_json::Value) -> serde_json::Value {
        let answer = self.client(id).admin(route, &body).await.expect(route);
        assert_eq!(answer.status, 200, "{route} on {id}: {}", answer.reason());
        answer.json().unwrap()
    }

    /// Sets run-time switches on every node in `ids`.
    pub async fn switch(&self, ids: &[&str], hint_delivery: bool, anti_entropy: bool) {
        for id in ids {
            self.admin(id, "config", serde_json::json!({"hint_delivery": hint_delivery, "anti_entropy": anti_entropy}))
                .await;
        }
    }

    /// One staged repair round on every node at once, then the commit on
    /// every node; returns each node's round statistics.
    pub async fn repair_round(&self, seed: u64) -> Vec<serde_json::Value> {
        let ids = self.ids();
        let body = serde_json::json!({"seed": seed, "staged": true});
        let rounds = futures::future::join_all(ids.iter().map(|id| self.admin(id, "repair/round", body.clone()))).await;
        for id in &ids {
            self.admin(id, "repair/commit", serde_json::json!({})).await;
        }
        rounds
    }

    /// Partition → Merkle root, as one node reports it.
    pub async fn merkle_roots(&self, id: &str) -> serde_json::Map<String, serde_json::Value> {
        let answer =
            self.client(id).send(hyper::Method::GET, "/admin/merkle", None, bytes::Bytes::new()).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.reason());
        answer.json().unwrap()["partitions"].as_object().unwrap().clone()
    }

    /// True when every replica of `key` holds exactly the same versions
    /// (values, dots, clocks and tombstones).
    pub async fn converged(&self, key: &str) -> bool {
        let answer = self.client("node1").replicas(key).await.expect("replicas");
        let held: Vec<&Held> = answer.replicas.iter().map(|r| &r.held).collect();
        assert!(held.iter().all(|h| matches!(h, Held::Versions { .. })), "replica unreadable: {answer:?}");
        held.windows(2).all(|w| w[0] == w[1])
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Err(e) = dynabed::faults::down(&self.procs) {
            eprintln!("test cluster cleanup: {e:#}");
        }
    }
}

fn b64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64 value")
}

/// Polls `check` until it holds, or panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn ok(answer: &Answer) -> &Answer {
    assert!(answer.status.is_success(), "{} {}", answer.status, answer.reason());
    answer
}

/// True when this process may build namespaces; otherwise says so.
pub fn privileged(test: &str) -> bool {
    let ok = netns::has_netns_capabilities();
    if !ok {
        eprintln!("{test}: skipped: needs CAP_NET_ADMIN and CAP_SYS_ADMIN");
    }
    ok
}

/// Removes what an earlier run of the suite left under a test's own prefix.
///
/// A test's Drop cannot run when the runner itself is killed (a timeout, a
/// lost machine), and `cluster up` rightly refuses a prefix that still owns
/// remains; the suite's prefixes belong to the suite, so it reclaims them by
/// the same ownership records `dynabed cleanup` always uses.
pub fn reclaim(prefix: &str) {
    if !runstate::dir_of(prefix).exists() {
        return;
    }
    eprintln!("{prefix}: reclaiming what an earlier, interrupted run left under this prefix");
    let out = Command::new(BIN).args(["cleanup", "--prefix", prefix]).output().expect("running dynabed cleanup");
    assert!(out.status.success(), "cleanup --prefix {prefix}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A namespaced cluster, removed by its prefix's run state when dropped.
pub struct NetnsCluster {
    pub prefix: String,
    pub dir: tempfile::TempDir,
}

impl NetnsCluster {
    pub fn new(prefix: &str) -> Self {
        reclaim(prefix);
        NetnsCluster { prefix: prefix.to_owned(), dir: tempfile::tempdir().unwrap() }
    }

    pub fn procs(&self) -> PathBuf {
        self.dir.path().join("cluster_procs.json")
    }

    pub fn dynabed(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).current_dir(self.dir.path()).output().expect("running dynabed")
    }

    pub fn up(&self, nodes: u16) -> Output {
        self.up_with(nodes, "memory")
    }

    pub fn up_with(&self, nodes: u16, storage: &str) -> Output {
        self.dynabed(&[
            "cluster",
            "up",
            "--netns",
            "--nodes",
            &nodes.to_string(),
            "--prefix",
            &self.prefix,
            "--storage",
            storage,
        ])
    }

    pub fn namespaces(&self) -> Vec<String> {
        runstate::RunState::existing(&self.prefix).unwrap().map(|s| s.owned().unwrap().namespaces).unwrap_or_default()
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        if let Err(e) = dynabed::faults::teardown(&self.prefix) {
            eprintln!("cleanup of {}: {e:#}", self.prefix);
        }
    }
}

pub fn ok_output(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}
