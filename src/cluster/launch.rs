//! `dynabed cluster up`: starts K nodes, writes the cluster files and
//! returns once every node sees the whole ring.
//!
//! Node i listens on the seed's ports (see [`ports`](super::ports)) in
//! every mode: on loopback every node binds 127.0.0.1 (or
//! `--loopback_host`), and in a netns cluster the client namespace maps
//! `127.0.0.1:<port>` to the node with that port
//! ([`localhost`](super::localhost)), so the seed's `cluster_procs.json` is
//! all a tool needs to reach the nodes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use super::cleanup;
use super::deploy::{self, Delivery};
use super::files::{self, ClusterFiles, Locked};
use super::interrupt;
use super::localhost;
use super::place::{at_once, Place};
use super::ports::Ports;
use super::reach::reach;
use super::ready::{Look, Started};
use super::register::new_token;
use super::running::Cluster;
use super::runstate::{Owned, RunState};
use super::topology::{Topology, BRIDGE_PORTS, INSIDE};
use crate::api::cluster::OwnedProcess;
use crate::api::cluster::{Meta, Mode, NodeEntry, NodeMeta};
use crate::api::hosts::{Deployed, Host, Inventory};
use crate::api::ring::default_partitions;
use crate::node::storage::{Durability, EngineKind};
use netns::process::Spawned as ProcessRecord;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Number of nodes (past 1,023 the hosts are spread over several bridges) [default with --hosts: the hosts' total].
    #[arg(long, required_unless_present = "hosts", value_parser = clap::value_parser!(u16).range(1..=2000))]
    pub nodes: Option<u16>,
    /// Run the nodes on the hosts this file lists, reached over SSH (see README, "Many hosts").
    #[arg(long, conflicts_with_all = ["netns", "loopback"])]
    pub hosts: Option<PathBuf>,
    /// Replication factor, recorded in the meta file.
    #[arg(long = "N", visible_alias = "n", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub n: u8,
    /// Each node in its own network namespace (needs CAP_NET_ADMIN and CAP_SYS_ADMIN).
    #[arg(long, conflicts_with = "loopback")]
    pub netns: bool,
    /// Every node on 127.0.0.1 (or --loopback_host), each on its own ports.
    #[arg(long)]
    pub loopback: bool,
    /// Names every kernel object and run-state folder of this cluster.
    #[arg(long, default_value = "dyb", value_parser = parse_prefix)]
    pub prefix: String,
    /// Client port of node1; node i listens on this + i − 1, and for peers 1000 above (2000 above past 1000 nodes).
    #[arg(long = "base_port", visible_alias = "base-port", default_value_t = 60000)]
    pub base_port: u16,
    #[arg(long, default_value = "fjall")]
    pub storage: EngineKind,
    #[arg(long, default_value = "kernel")]
    pub sync: Durability,
    #[arg(long = "cluster_procs", visible_alias = "cluster-procs", default_value = "cluster_procs.json")]
    pub cluster_procs: PathBuf,
    /// Where node data and logs go, in folders closed to other users [default: dynabed-data/<prefix> beside the cluster file, mode 0700].
    #[arg(long = "data_root", visible_alias = "data-root")]
    pub data_root: Option<PathBuf>,
    /// Loopback mode: the address every node binds, in 127.0.0.0/8.
    /// `--loopback_base`, its name when node i took the i-th address from
    /// it, is still accepted so that scripts written then keep working.
    #[arg(long = "loopback_host", visible_alias = "loopback-host", alias = "loopback_base", alias = "loopback-base", default_value = "127.0.0.1", value_parser = parse_loopback)]
    pub loopback_host: Ipv4Addr,
    /// Ring partitions, a power of two ≥ nodes [default: the smallest power of two ≥ 4 × nodes, at least 256]; recorded in the meta file.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Ports per bridge of a netns cluster: the kernel's limit; lower only to test the multi-bridge layout.
    #[arg(long = "bridge_ports", visible_alias = "bridge-ports", default_value_t = BRIDGE_PORTS, value_parser = clap::value_parser!(u16).range(3..=BRIDGE_PORTS as i64))]
    pub bridge_ports: u16,
    /// Worker threads per node.
    #[arg(long, default_value_t = 1)]
    pub threads: u16,
    /// Extra flag passed to every node, e.g. --node-arg=--fail_after_ms=500 (repeatable).
    #[arg(long = "node_arg", visible_alias = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// Give up if the ring has not converged by then.
    #[arg(long = "ready_timeout_s", visible_alias = "ready-timeout-s", default_value_t = 60)]
    pub ready_timeout_s: u64,
}

fn parse_prefix(s: &str) -> Result<String, String> {
    // Interface names are at most 15 bytes: "<prefix>-n250-h" must fit.
    let ok = (1..=6).contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(s.into())
    } else {
        Err("a prefix is 1-6 lowercase letters or digits".into())
    }
}

fn parse_loopback(s: &str) -> Result<Ipv4Addr, String> {
    match s.parse::<Ipv4Addr>() {
        Ok(addr) if addr.is_loopback() => Ok(addr),
        _ => Err("a loopback host is an IPv4 address in 127.0.0.0/8".into()),
    }
}

impl UpArgs {
    /// The number of nodes, once [`up`] has resolved it.
    fn nodes(&self) -> u16 {
        self.nodes.expect("resolved by up")
    }
}

/// A node about to be started.
struct Planned {
    id: String,
    host: IpAddr,
    port: u16,
    peer_port: u16,
    namespace: Option<String>,
    data_dir: PathBuf,
    log: PathBuf,
    argv: Vec<String>,
    /// Where it runs: here, or on a host (with the host's name).
    place: Place,
}

/// Starts the cluster; on any failure, or a SIGINT or SIGTERM, removes
/// whatever it had created.
pub fn up(mut args: UpArgs) -> anyhow::Result<()> {
    // Noted, not obeyed at once: a node being started is recorded before
    // the start stops, so the cleanup below finds every one.
    interrupt::install()?;
    let hosts = args.hosts.as_deref().map(read_inventory).transpose()?;
    if let Some(inventory) = &hosts {
        let total = u16::try_from(inventory.nodes()).ok().filter(|&n| n <= 2000).context("more than 2,000 nodes")?;
        if args.nodes.is_some_and(|n| n != total) {
            bail!("--nodes {} but the hosts file lists {total} nodes", args.nodes.unwrap_or_default());
        }
        args.nodes = Some(total);
    }
    let mode = if hosts.is_some() { Mode::Hosts } else { choose_mode(&args)? };
    let ports = Ports::new(args.base_port, args.nodes())?;
    let cluster_procs = std::path::absolute(&args.cluster_procs)?;
    refuse_if_running(&cluster_procs)?;
    let state = RunState::open(&args.prefix)?;
    if state.owned()? != Owned::default() {
        bail!(
            "prefix {:?} already owns a cluster or its remains ({}): `dynabed cluster down` it, or `dynabed cleanup --prefix {}`",
            args.prefix,
            state.dir().display(),
            args.prefix
        );
    }
    let started = start(&args, mode, hosts, ports, &cluster_procs, &state);
    drop(state);
    if let Err(e) = started {
        if let Err(undo) = cleanup::cleanup(&args.prefix) {
            eprintln!("warning: cleaning up after the failed start: {undo:#}");
        }
        return Err(e.context("the cluster did not come up; everything it had started was removed"));
    }
    Ok(())
}

fn choose_mode(args: &UpArgs) -> anyhow::Result<Mode> {
    let capable = netns::has_netns_capabilities();
    match (args.netns, args.loopback) {
        (true, _) if !capable => {
            bail!("--netns needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root, or in a privileged container)")
        }
        (true, _) => Ok(Mode::Netns),
        (_, true) => Ok(Mode::Loopback),
        _ if capable => Ok(Mode::Netns),
        _ => {
            eprintln!("warning: no CAP_NET_ADMIN and CAP_SYS_ADMIN: starting a loopback cluster (only application and process faults are possible)");
            Ok(Mode::Loopback)
        }
    }
}

/// Reads and checks a hosts file.
fn read_inventory(path: &Path) -> anyhow::Result<Inventory> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Inventory::parse(&text).with_context(|| format!("in {}", path.display()))
}

fn start(
    args: &UpArgs,
    mode: Mode,
    hosts: Option<Inventory>,
    ports: Ports,
    cluster_procs: &Path,
    state: &RunState,
) -> anyhow::Result<()> {
    let data_root = match &args.data_root {
        Some(root) => std::path::absolute(root)?,
        None => cluster_procs.parent().unwrap_or(Path::new("/")).join("dynabed-data").join(&args.prefix),
    };
    // A data root named by --data_root may be a shared folder that exists
    // already (even /tmp): it is created private but never changed. The
    // default one is ours, and so are the node folders inside either.
    create_private(&data_root)?;
    if args.data_root.is_none() {
        close(&data_root)?;
    }
    let partitions = args.partitions.unwrap_or_else(|| default_partitions(usize::from(args.nodes())));
    if !partitions.is_power_of_two() || partitions < u32::from(args.nodes()) {
        bail!("--partitions {partitions}: a power of two at least the number of nodes ({})", args.nodes());
    }
    let topology = Topology::with_bridge_ports(&args.prefix, args.nodes(), args.bridge_ports);
    let deployed = match hosts {
        Some(inventory) => {
            let (binary, bytes) = deploy::this_binary()?;
            let control = state.dir().join("ssh");
            create_private(&control)?;
            Some((Deployed { inventory, binary, control: Some(control) }, bytes))
        }
        None => None,
    };
    let on_hosts = deployed.as_ref().map(|(d, _)| d);
    let sites = sites(args, mode, on_hosts, &topology, cluster_procs, &data_root)?;
    let plan = plan_nodes(args, sites, ports, partitions);
    state.update(|owned| {
        owned.cluster_procs = Some(cluster_procs.to_owned());
        owned.hosts = on_hosts.cloned();
    })?;

    let locked = Locked::acquire(cluster_procs)?;
    let mut meta = Meta {
        n: args.n,
        partitions,
        mode,
        prefix: args.prefix.clone(),
        client_netns: (mode == Mode::Netns).then(|| topology.client()),
        admin_token: new_token(),
        nodes: BTreeMap::new(),
        hosts: on_hosts.cloned(),
    };
    // The token must be on disk before the nodes start: they read it there.
    locked.write(&ClusterFiles { procs: BTreeMap::new(), meta: Some(meta.clone()) })?;
    let began = Instant::now();
    match mode {
        Mode::Netns => {
            topology.build(state)?;
            serve_seed_ports(&topology, ports, args.nodes())?;
        }
        Mode::Loopback => {
            if let Some(note) = ports.host_note()? {
                eprintln!("{note}");
            }
        }
        Mode::Hosts => {
            let (deployed, binary) = deployed.as_ref().expect("a cluster on hosts has its hosts");
            deploy::deliver(deployed, &deliveries(deployed, binary, &plan, &meta)?)?;
        }
    }
    go_on()?;
    let mut procs = BTreeMap::new();
    for (node, record) in spawn_all(&plan, state)? {
        let host = node.place.host_name();
        procs.insert(node.id.clone(), entry(node, record.pid));
        meta.nodes.insert(
            node.id.clone(),
            NodeMeta {
                argv: node.argv.clone(),
                start_time: record.start_time,
                log: Some(node.log.clone()),
                host: host.map(str::to_owned),
            },
        );
    }
    locked.write(&ClusterFiles { procs: procs.clone(), meta: Some(meta.clone()) })?;
    drop(locked);

    let timeout = Duration::from_secs(args.ready_timeout_s);
    let places: BTreeMap<&str, &Place> = plan.iter().map(|n| (n.id.as_str(), &n.place)).collect();
    reach(meta.client_netns.as_deref(), || wait_for_ring(&procs, &meta, &places, timeout))
        .with_context(|| format!("node logs are in {}", data_root.display()))?;
    print_table(&procs, cluster_procs);
    println!(
        "ring converged in {} ms ({} nodes, N={}, {} partitions, {} mode)",
        began.elapsed().as_millis(),
        plan.len(),
        args.n,
        partitions,
        format!("{mode:?}").to_lowercase()
    );
    Ok(())
}

/// Starts every planned node, each host's in turn and all hosts at once
/// (this machine being one), recording each process in the run state as
/// soon as it runs; the first failure, once every started node is recorded.
fn spawn_all<'p>(plan: &'p [Planned], state: &RunState) -> anyhow::Result<Vec<(&'p Planned, ProcessRecord)>> {
    let mut by_host: BTreeMap<Option<&str>, Vec<&Planned>> = BTreeMap::new();
    for node in plan {
        by_host.entry(node.place.host_name()).or_default().push(node);
    }
    let hosts: Vec<Vec<&Planned>> = by_host.into_values().collect();
    let each_host = |nodes: &Vec<&'p Planned>| nodes.iter().map(|&node| Ok((node, spawn_one(node, state)?))).collect();
    let started: Vec<Vec<(&Planned, ProcessRecord)>> = at_once(&hosts, each_host)?;
    let mut started: Vec<(&Planned, ProcessRecord)> = started.into_iter().flatten().collect();
    started.sort_by_key(|(node, _)| files::natural_key(&node.id));
    Ok(started)
}

/// Fails once a SIGINT or SIGTERM asked the start to stop.
fn go_on() -> anyhow::Result<()> {
    if interrupt::requested() {
        bail!("interrupted");
    }
    Ok(())
}

/// Starts one node and records its process.
fn spawn_one(node: &Planned, state: &RunState) -> anyhow::Result<ProcessRecord> {
    go_on()?;
    if node.place.host_name().is_none() {
        create_private(&node.data_dir)?;
        close(&node.data_dir)?;
    }
    let record =
        node.place.spawn(&node.argv, &node.log, &node_env()).with_context(|| format!("starting {}", node.id))?;
    let host = node.place.host_name();
    state.update(|owned| owned.processes.push(owned_process(&node.id, record, host)))?;
    Ok(record)
}

/// What each host is sent: the binary, its nodes' folders, and the cluster
/// files as they are now (the admin token, no node yet) in its cluster folder.
fn deliveries<'a>(
    deployed: &'a Deployed,
    binary: &'a Path,
    plan: &[Planned],
    meta: &Meta,
) -> anyhow::Result<Vec<(&'a Host, Delivery<'a>)>> {
    let meta_json = serde_json::to_vec_pretty(meta)?;
    Ok(deployed
        .inventory
        .hosts
        .iter()
        .map(|host| {
            let procs_path = deploy::cluster_dir(host, &meta.prefix).join(CLUSTER_FILE);
            let node_dirs =
                plan.iter().filter(|n| n.place.host_name() == Some(host.name.as_str())).map(|n| n.data_dir.clone());
            let files = vec![(files::meta_path(&procs_path), meta_json.clone()), (procs_path, b"{}".to_vec())];
            (host, Delivery { binary, node_dirs: node_dirs.collect(), files })
        })
        .collect())
}

/// The name of the cluster file nodes on a host read, in its cluster folder.
const CLUSTER_FILE: &str = "cluster_procs.json";

/// Reserves the cluster's ports in every namespace it made, and maps
/// `127.0.0.1:<port>` in the client namespace to the node with that port.
fn serve_seed_ports(topology: &Topology, ports: Ports, nodes: u16) -> anyhow::Result<()> {
    for namespace in std::iter::once(topology.client()).chain((1..=nodes).map(|i| topology.node(i))) {
        ports.reserve_in(&namespace)?;
    }
    let map: Vec<(u16, Ipv4Addr)> = (1..=nodes).map(|i| (ports.client(i), Topology::node_addr(i))).collect();
    localhost::map_to_nodes(&topology.client(), INSIDE, &topology.localhost_table(), &map)
}

/// Creates `dir` and its missing parents mode 0700: node data, journals
/// and logs are nobody else's to read.
fn create_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Makes a folder of ours mode 0700, also one an earlier version left open.
fn close(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// The environment every node is started with: mimalloc returns freed
/// memory to the kernel at once and commits arena memory only as it is
/// used (by default it keeps freed pages for a while and commits ahead),
/// which takes an idle node's heap from ~13 MB to ~3 MB resident at 100
/// nodes. Idle nodes are what a big test bed mostly holds; a busy node
/// pays a few more system calls.
pub fn node_env() -> Vec<(String, String)> {
    [("MIMALLOC_PURGE_DELAY", "0"), ("MIMALLOC_ARENA_EAGER_COMMIT", "0"), ("MIMALLOC_EAGER_COMMIT", "0")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The pace of the nodes' background work for a cluster of `nodes`,
/// unless --node_arg sets it: the nodes' defaults (gossip every 100 ms,
/// down after 600 ms of silence, an anti-entropy round a second, a hint
/// pass every 500 ms, 500 ms to dial a peer) up to 100 nodes; beyond, every interval stretches
/// with the cluster, up to ten times at 1,000 nodes (the failure limit
/// stretches further by members / 128 in the nodes, see
/// `Membership::fail_after_for`). One kernel runs every node: work that
/// costs 100 nodes half a core would take 1,000 past this machine's two.
fn paced_flags(nodes: u16, node_args: &[String]) -> Vec<String> {
    let rounds = u64::from(nodes).div_ceil(100).min(10);
    let set_by_hand =
        |flag: &str| node_args.iter().any(|a| a.trim_start_matches('-').replace('-', "_").starts_with(flag));
    let defaults = [
        ("gossip_ms", 100),
        ("fail_after_ms", 600),
        ("ae_interval_ms", 1000),
        ("handoff_ms", 500),
        ("connect_timeout_ms", 500),
    ];
    defaults
        .into_iter()
        .filter(|(flag, _)| rounds > 1 && !set_by_hand(flag))
        .flat_map(|(flag, ms)| [format!("--{flag}"), (ms * rounds).to_string()])
        .collect()
}

/// The run state's record of node `id`'s process, on `host` (or here).
pub fn owned_process(id: &str, record: ProcessRecord, host: Option<&str>) -> OwnedProcess {
    OwnedProcess {
        role: format!("node {id}"),
        pid: record.pid,
        start_time: record.start_time,
        host: host.map(str::to_owned),
    }
}

fn refuse_if_running(cluster_procs: &Path) -> anyhow::Result<()> {
    let Some(cluster) = Cluster::read_if_any(cluster_procs)? else { return Ok(()) };
    let running = cluster.nodes().iter().filter(|n| n.running().is_some()).count();
    if running > 0 {
        bail!(
            "{} describes a cluster with {running} running node(s): stop it with `dynabed cluster down` first",
            cluster_procs.display()
        );
    }
    Ok(())
}

/// Where node i runs, and the paths it uses there.
struct Site {
    addr: IpAddr,
    namespace: Option<String>,
    place: Place,
    exe: String,
    cluster_procs: PathBuf,
    data_root: PathBuf,
}

/// Each node's [`Site`], in node order.
fn sites(
    args: &UpArgs,
    mode: Mode,
    deployed: Option<&Deployed>,
    topology: &Topology,
    cluster_procs: &Path,
    data_root: &Path,
) -> anyhow::Result<Vec<Site>> {
    let exe = std::env::current_exe().context("locating the dynabed binary")?.to_string_lossy().into_owned();
    let here = |addr: Ipv4Addr, namespace: Option<String>| Site {
        addr: IpAddr::V4(addr),
        place: Place::Local { netns: namespace.clone() },
        namespace,
        exe: exe.clone(),
        cluster_procs: cluster_procs.to_owned(),
        data_root: data_root.to_owned(),
    };
    match (mode, deployed) {
        (Mode::Netns, _) => {
            Ok((1..=args.nodes()).map(|i| here(Topology::node_addr(i), Some(topology.node(i)))).collect())
        }
        (Mode::Loopback, _) => Ok((1..=args.nodes()).map(|_| here(args.loopback_host, None)).collect()),
        (Mode::Hosts, None) => bail!("a cluster on hosts needs its hosts"),
        (Mode::Hosts, Some(deployed)) => deployed
            .inventory
            .placements()
            .into_iter()
            .map(|(host, addr)| {
                let dir = deploy::cluster_dir(host, &args.prefix);
                Ok(Site {
                    addr: IpAddr::V4(addr),
                    namespace: None,
                    place: Place::host(deployed, &host.name)?,
                    exe: deployed.binary_on(host).to_string_lossy().into_owned(),
                    cluster_procs: dir.join(CLUSTER_FILE),
                    data_root: dir,
                })
            })
            .collect(),
    }
}

fn plan_nodes(args: &UpArgs, sites: Vec<Site>, ports: Ports, partitions: u32) -> Vec<Planned> {
    let seeds: Vec<SocketAddr> =
        sites.iter().zip(1..).take(3).map(|(site, i)| SocketAddr::new(site.addr, ports.peer(i))).collect();
    sites
        .into_iter()
        .zip(1..)
        .map(|(site, i)| {
            let Site { addr: host, namespace, place, exe, cluster_procs, data_root } = site;
            let (port, peer_port) = (ports.client(i), ports.peer(i));
            let id = format!("node{i}");
            let data_dir = data_root.join(&id);
            let own = SocketAddr::new(host, peer_port);
            let own_seeds: Vec<String> = seeds.iter().filter(|&&s| s != own).map(|s| s.to_string()).collect();
            let mut argv: Vec<String> = vec![exe, "node".into()];
            let mut flag = |name: &str, value: String| argv.extend([format!("--{name}"), value]);
            flag("id", id.clone());
            flag("host", host.to_string());
            flag("port", port.to_string());
            flag("peer_port", peer_port.to_string());
            flag("cluster_procs", cluster_procs.to_string_lossy().into_owned());
            flag("data_dir", data_dir.to_string_lossy().into_owned());
            flag("storage", args.storage.to_string());
            flag("sync", args.sync.to_string());
            flag("N", args.n.to_string());
            flag("partitions", partitions.to_string());
            flag("threads", args.threads.to_string());
            // A single node has no seeds; give it itself so it does not
            // register as a hand-started node.
            flag("seeds", if own_seeds.is_empty() { own.to_string() } else { own_seeds.join(",") });
            argv.extend(paced_flags(args.nodes(), &args.node_args));
            argv.extend(args.node_args.iter().cloned());
            let log = data_root.join(format!("{id}.log"));
            Planned { id, host, port, peer_port, namespace, data_dir, log, argv, place }
        })
        .collect()
}

fn entry(node: &Planned, pid: u32) -> NodeEntry {
    NodeEntry {
        pid,
        port: node.port,
        host: node.host.to_string(),
        peer_port: node.peer_port,
        netns: node.namespace.clone(),
        data_dir: node.data_dir.clone(),
        ssh: match &node.place {
            Place::Host(ssh) => Some(ssh.host.ssh.clone()),
            Place::Local { .. } => None,
        },
    }
}

/// Up to this many nodes, every node still pending is asked on each pass.
const SMALL_CLUSTER: usize = 100;

/// Polls every node until each — the very process started, see
/// [`ready`](super::ready) — sees all of them alive; a node that exits
/// meanwhile ends the wait at once, with the end of its log.
async fn wait_for_ring(
    procs: &BTreeMap<String, NodeEntry>,
    meta: &Meta,
    places: &BTreeMap<&str, &Place>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let want = procs.len();
    let mut pending: Vec<&String> = procs.keys().collect();
    let mut first_view = String::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        first_view.clear();
        for (at, &id) in pending.iter().enumerate() {
            let entry = &procs[id];
            let node = meta.nodes.get(id.as_str()).with_context(|| format!("no {id} in the meta file"))?;
            let started = Started {
                id,
                addr: super::running::client_addr(entry)?,
                process: ProcessRecord { pid: entry.pid, start_time: node.start_time },
                log: node.log.as_deref(),
                place: places[id.as_str()],
            };
            let (sees_all, view) = match started.look().await? {
                Look::Serving(status) => seen(&status, want),
                Look::Silent => (false, "does not answer".to_owned()),
                Look::Stranger(_) => (false, "another process answers at its address".to_owned()),
            };
            if !sees_all {
                if first_view.is_empty() {
                    first_view = format!("{id} {view}");
                }
                // The rest are asked once this one sees everyone: asking a
                // thousand nodes each pass, each answer listing a thousand
                // members, would cost more than forming the ring.
                if want > SMALL_CLUSTER {
                    still.extend_from_slice(&pending[at..]);
                    break;
                }
                still.push(id);
            }
        }
        pending = still;
        go_on()?;
        if !pending.is_empty() {
            if Instant::now() > deadline {
                let more =
                    if pending.len() > 1 { format!(" (and {} more nodes)", pending.len() - 1) } else { String::new() };
                bail!("after {timeout:?} not every node sees all {want} members alive: {first_view}{more}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Whether a node's `/status` shows `want` members all alive, and else
/// what it shows: how many it knows, and the first few it believes down.
fn seen(status: &serde_json::Value, want: usize) -> (bool, String) {
    let members = status["members"].as_array().map(Vec::as_slice).unwrap_or_default();
    let down: Vec<&str> = members.iter().filter(|m| m["alive"] != true).filter_map(|m| m["id"].as_str()).collect();
    let all = members.len() == want && down.is_empty();
    let mut view = format!("knows {} members", members.len());
    if !down.is_empty() {
        let shown = down.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        view += &format!(", believes {} down ({shown}{})", down.len(), if down.len() > 5 { ", ..." } else { "" });
    }
    (all, view)
}

fn print_table(procs: &BTreeMap<String, NodeEntry>, cluster_procs: &Path) {
    let mut ids: Vec<&String> = procs.keys().collect();
    ids.sort_by_key(|id| files::natural_key(id));
    println!("{:<8} {:>8}  {:<21} {:<21} data", "node", "pid", "client", "peer");
    for id in ids {
        let e = &procs[id];
        println!(
            "{:<8} {:>8}  {:<21} {:<21} {}",
            id,
            e.pid,
            format!("{}:{}", e.host, e.port),
            format!("{}:{}", e.host, e.peer_port),
            e.data_dir.display()
        );
    }
    println!("cluster file: {}", cluster_procs.display());
}

#[cfg(test)]
mod tests {
    use super::{paced_flags, seen};

    #[test]
    fn a_node_short_of_the_ring_says_what_it_lacks() {
        let member = |id: &str, alive: bool| serde_json::json!({"id": id, "alive": alive});
        let status = serde_json::json!({"members": [member("n1", true), member("n2", false), member("n3", true)]});
        assert_eq!(seen(&status, 3), (false, "knows 3 members, believes 1 down (n2)".to_owned()));
        assert_eq!(seen(&status, 4).1, "knows 3 members, believes 1 down (n2)");
        let all = serde_json::json!({"members": [member("n1", true), member("n2", true)]});
        assert_eq!(seen(&all, 2), (true, "knows 2 members".to_owned()));
        assert!(!seen(&all, 3).0, "one member missing");
    }

    #[test]
    fn up_to_100_nodes_keep_the_defaults_and_1000_run_ten_times_slower_unless_set_by_hand() {
        assert!(paced_flags(100, &[]).is_empty());
        let paced = paced_flags(1000, &[]).join(" ");
        assert_eq!(
            paced,
            "--gossip_ms 1000 --fail_after_ms 6000 --ae_interval_ms 10000 --handoff_ms 5000 --connect_timeout_ms 5000"
        );
        assert_eq!(
            paced_flags(250, &[]).join(" "),
            "--gossip_ms 300 --fail_after_ms 1800 --ae_interval_ms 3000 --handoff_ms 1500 --connect_timeout_ms 1500"
        );
        assert_eq!(paced_flags(5000, &[])[1], "1000", "ten times at most");
        let by_hand = ["--gossip-ms=50".to_owned(), "--ae_interval_ms".to_owned(), "7".to_owned()];
        assert_eq!(
            paced_flags(1000, &by_hand).join(" "),
            "--fail_after_ms 6000 --handoff_ms 5000 --connect_timeout_ms 5000"
        );
    }
}
