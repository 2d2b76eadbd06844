//! Applying one fault: the journal first, then the change, then a probe
//! that checks the change took effect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use netns::cgroup::CpuGroup;
use netns::firewall::{self, Chain, Direction, Family, NfqueueRule, QueueMatch, Rule, Table};
use netns::process::{Signal, Spawned};
use netns::qdisc::{self, Netem, Tbf};

use super::{admin, delay_daemon, delay_line, FaultRecord, Kind, Layer, Undo};
use crate::cluster::files::{self, Meta, Mode, NodeEntry};
use crate::cluster::launch::record_of;
use crate::cluster::runstate::RunState;
use crate::cluster::topology::Topology;
use crate::node::replica::now_ms;

/// What to break, as `dynabed fault` (and later the driver) asks for it.
#[derive(Debug, Clone)]
pub struct FaultRequest {
    pub kind: Kind,
    pub node: String,
    pub layer: Layer,
    pub slow_ms: u64,
    /// Partitions: cut the node from clients too.
    pub isolate_clients: bool,
    /// Crashes: restart the node when healed.
    pub restart: bool,
    /// Loss: the chance of dropping each packet, per direction.
    pub loss_pct: u8,
    /// Bandwidth: the rate of the node's link, each direction.
    pub rate_kbit: u64,
    /// Cpu: the share of one core the node may use.
    pub cpu_pct: u32,
    /// Partitions: more nodes on the target's side of the split (the rest
    /// of the cluster is the other side).
    pub with: Vec<String>,
    /// Partitions: which way packets are dropped, seen from the target's side.
    pub direction: CutDirection,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CutDirection {
    /// Nothing crosses the split.
    #[default]
    Both,
    /// The target's side receives nothing from the other side.
    In,
    /// The target's side sends nothing to the other side.
    Out,
}

/// Applies `request` to the cluster of `cluster_procs` and returns its record.
pub fn apply(cluster_procs: &Path, request: &FaultRequest) -> anyhow::Result<FaultRecord> {
    let (procs, meta) = files::read_cluster(cluster_procs)?;
    let entry = procs.get(&request.node).with_context(|| {
        format!(
            "no node {:?} in {} (nodes: {:?})",
            request.node,
            cluster_procs.display(),
            procs.keys().collect::<Vec<_>>()
        )
    })?;
    for node in &request.with {
        anyhow::ensure!(procs.contains_key(node), "no node {node:?} in {}", cluster_procs.display());
    }
    if !request.with.is_empty() && request.kind != Kind::Partition {
        bail!("--with groups nodes for partitions only");
    }
    if request.direction != CutDirection::Both && (request.kind != Kind::Partition || request.layer != Layer::Kernel) {
        bail!("one-way cuts are kernel-level partitions only");
    }
    let process = record_of(&meta, &request.node, entry).filter(|r| r.is_alive());
    let state = RunState::open(&meta.prefix)?;
    let id = state.owned()?.faults.iter().map(|f| f.id).max().unwrap_or(0) + 1;
    let (backend, undo) = plan(request, id, &meta, entry, process)?;
    let record = FaultRecord {
        id,
        kind: request.kind,
        targets: std::iter::once(&request.node).chain(&request.with).cloned().collect(),
        layer: request.layer,
        backend: backend.to_owned(),
        applied_at_ms: now_ms(),
        commands: Vec::new(),
        verified: None,
        undo,
        held_by: None,
    };
    // The journal first: a heal must be possible whatever happens next.
    state.update(|owned| owned.faults.push(record))?;
    let target = Target { fault_id: id, backend, state: &state, request, entry, meta: &meta, procs: &procs, process };
    let outcome = target.change(id).and_then(|commands| Ok((commands, target.verify()?)));
    match outcome {
        Ok((commands, verified)) => {
            // The journaled record, which the change may have completed (a holder).
            let mut applied = None;
            state.update(|owned| {
                if let Some(journaled) = owned.faults.iter_mut().find(|f| f.id == id) {
                    journaled.commands = commands;
                    journaled.verified = Some(verified);
                    applied = Some(journaled.clone());
                }
            })?;
            applied.with_context(|| format!("fault {id} left the journal while it was applied"))
        }
        Err(e) => {
            // Undo what may have been done before reporting the failure.
            if let Err(heal) = super::heal(&state, Some(id), false) {
                eprintln!("warning: could not heal the failed fault {id}: {heal:#}");
            }
            Err(e)
        }
    }
}

/// The backend a request runs on and the steps that will heal it.
fn plan(
    request: &FaultRequest,
    id: u32,
    meta: &Meta,
    entry: &NodeEntry,
    process: Option<Spawned>,
) -> anyhow::Result<(&'static str, Vec<Undo>)> {
    let node = request.node.clone();
    let running = || process.with_context(|| format!("{node} is not running"));
    Ok(match (request.kind, request.layer) {
        (Kind::Crash, _) => {
            ("signal", if request.restart { vec![Undo::Restart { node: node.clone() }] } else { vec![] })
        }
        (Kind::Pause, _) => {
            let p = running()?;
            ("signal", vec![Undo::Continue { pid: p.pid, start_time: p.start_time }])
        }
        (Kind::Partition | Kind::Loss, Layer::Kernel) => {
            namespaced(meta)?;
            let hub = Topology::new(&meta.prefix, 0).hub();
            ("nft-bridge", vec![Undo::DeleteBridgeTable { namespace: hub, name: table_name(id) }])
        }
        (Kind::Bandwidth, Layer::Kernel) => {
            namespaced(meta)?;
            let links = node_links(meta, &node)?;
            ("tbf", links.into_iter().map(|(namespace, device)| Undo::ClearQdisc { namespace, device }).collect())
        }
        (Kind::Cpu, _) => {
            running()?;
            ("cgroup-cpu", vec![Undo::RemoveCgroup { name: cgroup_name(meta, id) }])
        }
        (Kind::Loss | Kind::Bandwidth, Layer::App) => {
            bail!("{:?} has no application-level form: use --fault_layer kernel", request.kind)
        }
        (Kind::Slow, Layer::Kernel) => {
            namespaced(meta)?;
            if qdisc::probe_netem().is_supported() {
                let links = node_links(meta, &node)?;
                ("netem", links.into_iter().map(|(namespace, device)| Undo::ClearQdisc { namespace, device }).collect())
            } else {
                let hub = Topology::new(&meta.prefix, 0).hub();
                let addr = entry.host.parse().context("a namespaced node has an IPv4 address")?;
                let chain = Undo::RemoveForwardChain { namespace: hub, name: chain_name(id) };
                ("nfqueue-delay-line", vec![chain, Undo::DelayClear { addr }, Undo::StopIdleDelayLine])
            }
        }
        (Kind::Slow, Layer::App) => {
            running()?;
            ("admin-api", vec![Undo::HealApp { node }])
        }
        (Kind::Partition, Layer::App) => {
            running()?;
            let side = std::iter::once(node).chain(request.with.iter().cloned());
            ("admin-api", side.map(|node| Undo::HealApp { node }).collect())
        }
    })
}

fn table_name(id: u32) -> String {
    format!("dynabed_fault{id}")
}

fn chain_name(id: u32) -> String {
    format!("DYNABED_SLOW{id}")
}

fn cgroup_name(meta: &Meta, id: u32) -> String {
    format!("dynabed-{}-fault{id}", meta.prefix)
}

fn namespaced(meta: &Meta) -> anyhow::Result<()> {
    if meta.mode != Mode::Netns {
        bail!("kernel faults need a namespaced cluster; this one runs on loopback: use --fault_layer app");
    }
    Ok(())
}

/// Both ends of a node's link: (namespace, device), shaped each its way.
fn node_links(meta: &Meta, node: &str) -> anyhow::Result<Vec<(String, String)>> {
    let index: u16 = node
        .strip_prefix("node")
        .and_then(|i| i.parse().ok())
        .with_context(|| format!("{node} is not a launched node"))?;
    let topology = Topology::new(&meta.prefix, 0);
    Ok(vec![(topology.hub(), topology.hub_link(index)), (topology.node(index), "eth0".to_owned())])
}

struct Target<'a> {
    fault_id: u32,
    backend: &'static str,
    state: &'a RunState,
    request: &'a FaultRequest,
    entry: &'a NodeEntry,
    meta: &'a Meta,
    procs: &'a std::collections::BTreeMap<String, NodeEntry>,
    process: Option<Spawned>,
}

impl Target<'_> {
    /// Makes the change; returns the commands run.
    fn change(&self, id: u32) -> anyhow::Result<Vec<Vec<String>>> {
        match (self.request.kind, self.request.layer) {
            (Kind::Crash, _) => Ok(vec![self.signal(Signal::SIGKILL)?]),
            (Kind::Pause, _) => Ok(vec![self.signal(Signal::SIGSTOP)?]),
            (Kind::Partition, Layer::Kernel) => self.cut_in_hub(id),
            (Kind::Partition, Layer::App) => self.cut_in_nodes(),
            (Kind::Slow, Layer::App) => self.app(serde_json::json!({ "slow_ms": self.request.slow_ms })),
            (Kind::Slow, Layer::Kernel) if self.backend == "netem" => self.netem(),
            (Kind::Slow, Layer::Kernel) => self.delay_in_hub(id),
            (Kind::Loss, _) => self.lose_in_hub(id),
            (Kind::Bandwidth, _) => self.shape(),
            (Kind::Cpu, _) => self.throttle(id),
        }
    }

    /// netem on both ends of the node's link, half the delay each way.
    fn netem(&self) -> anyhow::Result<Vec<Vec<String>>> {
        let delay_ms = (self.request.slow_ms / 2) as u32;
        let mut commands = Vec::new();
        for (namespace, device) in node_links(self.meta, &self.request.node)? {
            commands
                .extend(qdisc::netem(&namespace, &device, Netem { delay_ms, jitter_ms: 0, loss_pct: 0.0 })?.commands);
        }
        Ok(commands)
    }

    /// Queues every packet from and to the node, in the hub's FORWARD path,
    /// to the cluster's delay line, which holds it half the delay per end.
    fn delay_in_hub(&self, id: u32) -> anyhow::Result<Vec<Vec<String>>> {
        let hub = Topology::new(&self.meta.prefix, 0).hub();
        let daemon = delay_daemon::ensure(self.state, &hub)?;
        // Which daemon holds the delay is journaled before it is asked to:
        // a heal asks that one, and its death is this fault's lapse.
        self.state.update(|owned| {
            if let Some(journaled) = owned.faults.iter_mut().find(|f| f.id == id) {
                journaled.held_by = Some(daemon.clone());
            }
        })?;
        let mut commands = firewall::set_bridge_nf_call_iptables(&hub, true)?.commands;
        let chain = Chain::forward(&hub, &chain_name(id))?;
        commands.extend(chain.create()?.commands);
        let addr: Ipv4Addr = self.entry.host.parse()?;
        for matcher in [QueueMatch::Source(addr), QueueMatch::Dest(addr)] {
            let rule = NfqueueRule { matcher, queue_num: delay_line::QUEUE, bypass: true };
            commands.extend(chain.add_nfqueue(&rule)?.commands);
        }
        let half = self.request.slow_ms / 2;
        delay_line::set(&delay_line::socket_path(self.state.dir()), addr, half)?;
        commands.push(vec!["delay-line".into(), "set".into(), addr.to_string(), format!("{half}ms")]);
        Ok(commands)
    }

    /// Drops each packet from and to the node with the asked chance.
    fn lose_in_hub(&self, id: u32) -> anyhow::Result<Vec<Vec<String>>> {
        let hub = Topology::new(&self.meta.prefix, 0).hub();
        let table = Table::new(&hub, Family::Bridge, &table_name(id));
        let mut applied = table.create()?;
        let addr: IpAddr = self.entry.host.parse()?;
        let percent = self.request.loss_pct;
        for direction in [Direction::From, Direction::To] {
            applied.extend(table.add_rule(&Rule::RandomLoss { addr, direction, percent })?);
        }
        Ok(applied.commands)
    }

    /// A token bucket at the asked rate on both ends of the node's link.
    fn shape(&self) -> anyhow::Result<Vec<Vec<String>>> {
        let rate_kbit = self.request.rate_kbit;
        // A bucket of 10 ms at the rate (at least a few full frames).
        let burst_bytes = (rate_kbit * 1000 / 8 / 100).max(4 * 1514) as u32;
        let tbf = Tbf { rate_kbit, burst_bytes, latency_ms: 50 };
        let mut commands = Vec::new();
        for (namespace, device) in node_links(self.meta, &self.request.node)? {
            commands.extend(qdisc::tbf(&namespace, &device, tbf)?.commands);
        }
        Ok(commands)
    }

    /// Moves the node's process into a cgroup with the asked CPU quota.
    fn throttle(&self, id: u32) -> anyhow::Result<Vec<Vec<String>>> {
        let process = self.process.with_context(|| format!("{} is not running", self.request.node))?;
        let (group, mut applied) = CpuGroup::create(&cgroup_name(self.meta, id), self.request.cpu_pct)?;
        applied.extend(group.add(process.pid)?);
        Ok(applied.commands)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<Vec<String>> {
        let process = self.process.with_context(|| format!("{} is not running", self.request.node))?;
        if !process.signal(signal) {
            bail!("{} (pid {}) is gone", self.request.node, process.pid);
        }
        if signal == Signal::SIGKILL && !process.wait_gone(Duration::from_secs(5)) {
            bail!("{} survived SIGKILL", self.request.node);
        }
        Ok(vec!["kill".into(), format!("-{}", signal.as_str().trim_start_matches("SIG")), process.pid.to_string()])
    }

    /// Drops, in the hub's bridge, every packet between the node and each
    /// other node (and the clients, when asked).
    fn cut_in_hub(&self, id: u32) -> anyhow::Result<Vec<Vec<String>>> {
        let hub = Topology::new(&self.meta.prefix, 0).hub();
        let table = Table::new(&hub, Family::Bridge, &table_name(id));
        let mut applied = table.create()?;
        let address = |e: &NodeEntry| e.host.parse::<IpAddr>().context("a node address");
        let side: Vec<IpAddr> = self.side().map(|(_, e)| address(e)).collect::<anyhow::Result<_>>()?;
        let mut others: Vec<IpAddr> = self.other_side().map(|(_, e)| address(e)).collect::<anyhow::Result<_>>()?;
        if self.request.isolate_clients {
            others.push(IpAddr::V4(Topology::client_addr()));
        }
        for (&ours, &theirs) in side.iter().flat_map(|s| others.iter().map(move |o| (s, o))) {
            let rule = match self.request.direction {
                CutDirection::Both => Rule::DropBetween { a: ours, b: theirs },
                CutDirection::In => Rule::DropOneWay { from: theirs, to: ours },
                CutDirection::Out => Rule::DropOneWay { from: ours, to: theirs },
            };
            applied.extend(table.add_rule(&rule)?);
        }
        Ok(applied.commands)
    }

    /// The application-level split: each node of the target's side drops
    /// every message to and from the other side (or from all peers, when
    /// the split is one node against the rest).
    fn cut_in_nodes(&self) -> anyhow::Result<Vec<Vec<String>>> {
        let body = if self.request.with.is_empty() {
            serde_json::json!({ "partition": "all" })
        } else {
            let others: Vec<&String> = self.other_side().map(|(id, _)| id).collect();
            serde_json::json!({ "partition": { "peers": others } })
        };
        let mut commands = Vec::new();
        for (_, entry) in self.side() {
            admin(self.meta, entry, hyper::Method::POST, "fault", Some(body.clone()))?;
            commands.push(vec![
                "POST".into(),
                format!("http://{}:{}/admin/fault", entry.host, entry.port),
                body.to_string(),
            ]);
        }
        Ok(commands)
    }

    /// The target and the nodes grouped with it.
    fn side(&self) -> impl Iterator<Item = (&String, &NodeEntry)> {
        self.procs.iter().filter(|(id, _)| **id == self.request.node || self.request.with.contains(id))
    }

    fn other_side(&self) -> impl Iterator<Item = (&String, &NodeEntry)> {
        self.procs.iter().filter(|(id, _)| **id != self.request.node && !self.request.with.contains(id))
    }

    fn app(&self, body: serde_json::Value) -> anyhow::Result<Vec<Vec<String>>> {
        admin(self.meta, self.entry, hyper::Method::POST, "fault", Some(body.clone()))?;
        Ok(vec![vec![
            "POST".into(),
            format!("http://{}:{}/admin/fault", self.entry.host, self.entry.port),
            body.to_string(),
        ]])
    }

    /// A probe that the fault took effect, as text for the record.
    fn verify(&self) -> anyhow::Result<String> {
        let node = &self.request.node;
        match (self.request.kind, self.request.layer) {
            (Kind::Crash, _) => Ok(format!("{node} is gone")),
            (Kind::Pause, _) => {
                let pid = self.process.map(|p| p.pid).unwrap_or_default();
                // A signal is delivered asynchronously: give it a moment.
                let deadline = std::time::Instant::now() + Duration::from_secs(1);
                let mut state = netns::process::state(pid);
                while state != Some('T') && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                    state = netns::process::state(pid);
                }
                anyhow::ensure!(state == Some('T'), "{node} (pid {pid}) is in state {state:?}, not stopped");
                Ok(format!("{node} (pid {pid}) is stopped (state T)"))
            }
            (Kind::Partition, Layer::Kernel) => self.verify_cut(),
            (Kind::Slow, Layer::Kernel) if self.request.slow_ms >= 2000 => {
                // The seed's huge-delay partition: waiting out a round trip
                // is pointless; a handshake must not complete in a second.
                let addr = SocketAddr::new(self.entry.host.parse()?, self.entry.port);
                let client_ns = self.meta.client_netns.clone().context("no client namespace")?;
                let answered = netns::namespace::run_in(&client_ns, || {
                    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
                })?;
                anyhow::ensure!(!answered, "{node} still completes a handshake within 1 s");
                Ok(format!("no handshake with {node} completes within 1 s"))
            }
            (Kind::Slow, Layer::Kernel) => {
                let rtt = self.connect_rtt()?;
                let asked = Duration::from_millis(self.request.slow_ms);
                anyhow::ensure!(rtt >= asked * 8 / 10, "a round trip to {node} takes {rtt:?}, not the {asked:?} asked");
                Ok(format!(
                    "a TCP handshake with {node} from the client namespace takes {:.1} ms",
                    rtt.as_secs_f64() * 1e3
                ))
            }
            (Kind::Loss, _) => {
                Ok(format!("{}% of packets from and to {node} dropped in the hub", self.request.loss_pct))
            }
            (Kind::Bandwidth, _) => {
                let mut seen = Vec::new();
                for (namespace, device) in node_links(self.meta, node)? {
                    let root = qdisc::root(&namespace, &device)?.with_context(|| format!("no qdisc on {device}"))?;
                    anyhow::ensure!(root.kind == "tbf", "{device} in {namespace} has {} instead of tbf", root.kind);
                    seen.push(format!("{namespace}/{device}: tbf {} B/s", root.rate_bytes_per_s.unwrap_or(0)));
                }
                Ok(seen.join(", "))
            }
            (Kind::Cpu, _) => {
                let pid = self.process.map(|p| p.pid).unwrap_or_default();
                let group = CpuGroup::open(&cgroup_name(self.meta, self.fault_id))?;
                anyhow::ensure!(group.pids()?.contains(&pid), "{node} (pid {pid}) is not in {}", group.path.display());
                Ok(format!(
                    "{node} (pid {pid}) limited to {}% of a core in {}",
                    self.request.cpu_pct,
                    group.path.display()
                ))
            }
            _ => {
                let now = admin(self.meta, self.entry, hyper::Method::GET, "fault", None)?;
                Ok(format!("{node} reports faults {now}"))
            }
        }
    }

    /// The median time of five TCP handshakes with the node from the
    /// client namespace: one round trip each.
    fn connect_rtt(&self) -> anyhow::Result<Duration> {
        let addr = SocketAddr::new(self.entry.host.parse()?, self.entry.port);
        let client_ns = self.meta.client_netns.clone().context("no client namespace")?;
        let mut times = netns::namespace::run_in(&client_ns, || {
            (0..5)
                .map(|_| {
                    let started = std::time::Instant::now();
                    TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map(|_| started.elapsed())
                })
                .collect::<std::io::Result<Vec<_>>>()
        })??;
        times.sort();
        Ok(times[2])
    }

    /// From another node's namespace the target's peer port no longer
    /// answers; from the client namespace its client port still does
    /// (unless clients are cut too).
    fn verify_cut(&self) -> anyhow::Result<String> {
        let peer = SocketAddr::new(self.entry.host.parse()?, self.entry.peer_port);
        let client = SocketAddr::new(self.entry.host.parse()?, self.entry.port);
        let Some((_, other)) = self.other_side().next() else {
            return Ok("no other node to probe from".into());
        };
        let other_ns = other.netns.clone().context("a namespaced node without a namespace")?;
        // On a local bridge a handshake takes microseconds; a dropped SYN
        // never answers, so a short timeout tells them apart.
        let probe = |addr: SocketAddr| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok();
        let from_peer = netns::namespace::run_in(&other_ns, || probe(peer))?;
        anyhow::ensure!(!from_peer, "{other_ns} still connects to {peer}");
        let client_ns = self.meta.client_netns.clone().context("no client namespace")?;
        let from_client = netns::namespace::run_in(&client_ns, || probe(client))?;
        anyhow::ensure!(from_client != self.request.isolate_clients, "clients reach {client}: {from_client}");
        Ok(format!(
            "{other_ns} cannot connect to {peer}; clients {} {client}",
            if from_client { "reach" } else { "cannot reach" }
        ))
    }
}
