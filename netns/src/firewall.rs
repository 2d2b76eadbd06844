//! Firewall rules for network faults, always in objects the caller owns.
//!
//! * nftables: a [`Table`] (inet or bridge family) whose base chains jump to one `faults`
//!   chain holding partition and random-loss rules. Deleting the table heals everything in it
//!   at once, and touches nothing else.
//! * iptables: a [`Chain`] jumped from one built-in hook, holding NFQUEUE rules — the only way
//!   to queue packets to the delay line here, since this kernel lacks nft's `queue` statement.
//!
//! Everything runs as argument vectors inside the namespace (`ip netns exec NS nft ...`) and
//! returns the exact commands run.

use crate::command::{argv, in_netns, run, Applied, Argv, CommandError, Site};
use std::net::{IpAddr, Ipv4Addr};

/// Why a firewall operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid { what: &'static str, value: String, reason: &'static str },
    /// The bridge netfilter sysctls are absent: br_netfilter is not built in or loaded (and
    /// this kernel cannot load modules), so iptables cannot see bridged traffic.
    #[error("net.bridge.bridge-nf-call-iptables is absent in namespace {namespace} (br_netfilter not loaded; it cannot be loaded without module support): {detail}")]
    BridgeNetfilterMissing { namespace: String, detail: String },
    #[error(transparent)]
    Command(#[from] CommandError),
}

// ---------------------------------------------------------------------------------------------
// nftables

/// nftables address family of a [`Table`]: `bridge` for rules in a hub's bridge, `inet` for
/// rules on a namespace's own routed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Bridge,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        }
    }
}

/// Which side of a packet an address must be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets whose source is the address.
    From,
    /// Packets whose destination is the address.
    To,
}

/// A fault rule in a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Drop every packet between `a` and `b`, both ways.
    DropBetween { a: IpAddr, b: IpAddr },
    /// Drop packets from `from` to `to` only.
    DropOneWay { from: IpAddr, to: IpAddr },
    /// Drop each packet from/to `addr` with probability `percent`/100 (`numgen random`).
    RandomLoss { addr: IpAddr, direction: Direction, percent: u8 },
}

impl Rule {
    /// The nft rule statements (one per `nft add rule`) that implement this rule.
    pub fn statements(&self) -> Result<Vec<Argv>, FirewallError> {
        match *self {
            Rule::DropBetween { a, b } => Ok(vec![drop_pair(a, b)?, drop_pair(b, a)?]),
            Rule::DropOneWay { from, to } => Ok(vec![drop_pair(from, to)?]),
            Rule::RandomLoss { addr, direction, percent } => Ok(vec![random_loss(addr, direction, percent)?]),
        }
    }
}

fn proto(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

fn drop_pair(from: IpAddr, to: IpAddr) -> Result<Argv, FirewallError> {
    if from.is_ipv4() != to.is_ipv4() {
        let reason = "both addresses must be of the same IP version";
        return Err(FirewallError::Invalid { what: "address pair", value: format!("{from} {to}"), reason });
    }
    let (f, t) = (from.to_string(), to.to_string());
    Ok(argv(&[proto(from), "saddr", &f, proto(to), "daddr", &t, "drop"]))
}

fn random_loss(addr: IpAddr, direction: Direction, percent: u8) -> Result<Argv, FirewallError> {
    if percent > 100 {
        let reason = "must be 0..=100";
        return Err(FirewallError::Invalid { what: "loss percent", value: percent.to_string(), reason });
    }
    let field = match direction {
        Direction::From => "saddr",
        Direction::To => "daddr",
    };
    let (a, p) = (addr.to_string(), percent.to_string());
    Ok(argv(&[proto(addr), field, &a, "numgen", "random", "mod", "100", "<", &p, "drop"]))
}

/// An nftables table owned by the caller, in a namespace here or on another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub site: Site,
    pub family: Family,
    pub name: String,
}

/// The regular chain holding the fault rules; every base chain jumps to it.
const FAULTS: &str = "faults";
/// Base chains (one per hook) created in every table.
const HOOKS: [&str; 3] = ["input", "forward", "output"];

impl Table {
    pub fn new(namespace: &str, family: Family, name: &str) -> Self {
        Self::at(Site::Netns(namespace.to_owned()), family, name)
    }

    /// Table `name` at `site`.
    pub fn at(site: Site, family: Family, name: &str) -> Self {
        Self { site, family, name: name.to_string() }
    }

    fn nft(&self, args: &[&str]) -> Argv {
        let mut inner = argv(&["nft"]);
        inner.extend(argv(args));
        self.site.wrap(inner)
    }

    /// Whether the table exists.
    pub fn exists(&self) -> Result<bool, FirewallError> {
        match run(&self.nft(&["list", "table", self.family.as_str(), &self.name])) {
            Ok(_) => Ok(true),
            Err(e) if is_nft_absent(e.stderr()) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the table with its `faults` chain and input/forward/output base chains jumping
    /// to it. An existing table is left as it is (nothing is recorded).
    pub fn create(&self) -> Result<Applied, FirewallError> {
        if self.exists()? {
            return Ok(Applied::none());
        }
        let fam = self.family.as_str();
        let mut cmds =
            vec![self.nft(&["add", "table", fam, &self.name]), self.nft(&["add", "chain", fam, &self.name, FAULTS])];
        for hook in HOOKS {
            let spec = ["{", "type", "filter", "hook", hook, "priority", "0", ";", "policy", "accept", ";", "}"];
            let mut chain = vec!["add", "chain", fam, &self.name, hook];
            chain.extend(spec);
            cmds.push(self.nft(&chain));
            cmds.push(self.nft(&["add", "rule", fam, &self.name, hook, "jump", FAULTS]));
        }
        run_all(cmds)
    }

    /// Appends `rule` to the table's `faults` chain.
    pub fn add_rule(&self, rule: &Rule) -> Result<Applied, FirewallError> {
        let fam = self.family.as_str();
        let mut cmds = Vec::new();
        for statement in rule.statements()? {
            let mut cmd = self.nft(&["add", "rule", fam, &self.name, FAULTS]);
            cmd.extend(statement);
            cmds.push(cmd);
        }
        run_all(cmds)
    }

    /// Deletes the table and so every rule in it; an absent table is Ok (nothing recorded).
    pub fn delete(&self) -> Result<Applied, FirewallError> {
        let cmd = self.nft(&["delete", "table", self.family.as_str(), &self.name]);
        match run(&cmd) {
            Ok(_) => Ok(Applied::one(cmd)),
            Err(e) if is_nft_absent(e.stderr()) => Ok(Applied::none()),
            Err(e) => Err(e.into()),
        }
    }
}

fn is_nft_absent(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

fn run_all(cmds: Vec<Argv>) -> Result<Applied, FirewallError> {
    let mut applied = Applied::none();
    for cmd in cmds {
        run(&cmd)?;
        applied.commands.push(cmd);
    }
    Ok(applied)
}

// ---------------------------------------------------------------------------------------------
// iptables (NFQUEUE)

/// The built-in iptables chain an owned [`Chain`] is jumped from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Input,
    Forward,
    Output,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
        }
    }
}

/// Which packets an NFQUEUE rule queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueMatch {
    Source(Ipv4Addr),
    Dest(Ipv4Addr),
    /// Bridged packets that entered the bridge through this port (needs bridge-nf-call).
    PhysdevIn(String),
    /// Bridged packets leaving the bridge through this port (needs bridge-nf-call).
    PhysdevOut(String),
}

/// An NFQUEUE rule: queue matching packets to `queue_num`. With `bypass`, packets pass
/// undelayed when no reader is bound (a dead delay line never cuts a node off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfqueueRule {
    pub matcher: QueueMatch,
    pub queue_num: u16,
    pub bypass: bool,
}

impl NfqueueRule {
    fn args(&self) -> Argv {
        let mut a = match &self.matcher {
            QueueMatch::Source(ip) => argv(&["-s", &ip.to_string()]),
            QueueMatch::Dest(ip) => argv(&["-d", &ip.to_string()]),
            QueueMatch::PhysdevIn(dev) => argv(&["-m", "physdev", "--physdev-in", dev]),
            QueueMatch::PhysdevOut(dev) => argv(&["-m", "physdev", "--physdev-out", dev]),
        };
        a.extend(argv(&["-j", "NFQUEUE", "--queue-num", &self.queue_num.to_string()]));
        if self.bypass {
            a.push("--queue-bypass".into());
        }
        a
    }
}

/// An iptables (filter table, IPv4) chain owned by the caller, jumped from `hook`, in a
/// namespace here or on another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub site: Site,
    pub name: String,
    pub hook: Hook,
}

impl Chain {
    /// A chain `name` in `namespace` jumped from `hook`. Names are at most 28 characters.
    pub fn new(namespace: &str, name: &str, hook: Hook) -> Result<Self, FirewallError> {
        Self::at(Site::Netns(namespace.to_owned()), name, hook)
    }

    /// A chain `name` at `site` jumped from `hook`.
    pub fn at(site: Site, name: &str, hook: Hook) -> Result<Self, FirewallError> {
        if name.is_empty() || name.len() > 28 || name.chars().any(|c| c.is_whitespace()) {
            let reason = "1..=28 characters without spaces";
            return Err(FirewallError::Invalid { what: "iptables chain name", value: name.into(), reason });
        }
        Ok(Self { site, name: name.to_string(), hook })
    }

    /// A chain jumped from FORWARD (the hub's bridged path).
    pub fn forward(namespace: &str, name: &str) -> Result<Self, FirewallError> {
        Self::new(namespace, name, Hook::Forward)
    }

    fn iptables(&self, args: &[&str]) -> Argv {
        let mut inner = argv(&["iptables", "-w"]);
        inner.extend(argv(args));
        self.site.wrap(inner)
    }

    fn jump_args(&self, op: &str) -> Argv {
        self.iptables(&[op, self.hook.as_str(), "-j", &self.name])
    }

    /// Creates the chain (existing is Ok) and the jump to it from the hook (added once).
    pub fn create(&self) -> Result<Applied, FirewallError> {
        let mut applied = Applied::none();
        let new = self.iptables(&["-N", &self.name]);
        match run(&new) {
            Ok(_) => applied.commands.push(new),
            Err(e) if e.stderr().contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
        if !self.jump_present()? {
            let jump = self.iptables(&["-I", self.hook.as_str(), "1", "-j", &self.name]);
            run(&jump)?;
            applied.commands.push(jump);
        }
        Ok(applied)
    }

    fn jump_present(&self) -> Result<bool, FirewallError> {
        match run(&self.jump_args("-C")) {
            Ok(_) => Ok(true),
            Err(CommandError::Failed { status: Some(1), .. }) => Ok(false),
            Err(e) if is_ipt_absent(e.stderr()) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends an NFQUEUE rule to the chain.
    pub fn add_nfqueue(&self, rule: &NfqueueRule) -> Result<Applied, FirewallError> {
        let mut cmd = self.iptables(&["-A", &self.name]);
        cmd.extend(rule.args());
        run(&cmd)?;
        Ok(Applied::one(cmd))
    }

    /// The chain's rules as `iptables -S` prints them.
    pub fn list(&self) -> Result<Vec<String>, FirewallError> {
        let out = run(&self.iptables(&["-S", &self.name]))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Removes the jump(s), flushes and deletes the chain; an absent chain is Ok.
    pub fn remove(&self) -> Result<Applied, FirewallError> {
        let mut applied = Applied::none();
        while self.jump_present()? {
            let del = self.jump_args("-D");
            run(&del)?;
            applied.commands.push(del);
        }
        for op in ["-F", "-X"] {
            let cmd = self.iptables(&[op, &self.name]);
            match run(&cmd) {
                Ok(_) => applied.commands.push(cmd),
                Err(e) if is_ipt_absent(e.stderr()) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(applied)
    }
}

fn is_ipt_absent(stderr: &str) -> bool {
    stderr.contains("No chain/target/match by that name") || stderr.contains("does not exist")
}

// ---------------------------------------------------------------------------------------------
// bridge netfilter

const BRIDGE_NF_SYSCTL: &str = "net.bridge.bridge-nf-call-iptables";
const BRIDGE_NF_FILE: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Reads `net.bridge.bridge-nf-call-iptables` in `namespace`: `None` when the sysctl does not
/// exist there (br_netfilter absent).
pub fn bridge_nf_call_iptables(namespace: &str) -> Result<Option<bool>, FirewallError> {
    let read = crate::namespace::run_in(namespace, || std::fs::read_to_string(BRIDGE_NF_FILE));
    match read.map_err(std::io::Error::other).and_then(|r| r) {
        Ok(text) => Ok(Some(text.trim() == "1")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CommandError::Spawn { argv: argv(&["read", BRIDGE_NF_FILE]), source: e }.into()),
    }
}

/// Sets `net.bridge.bridge-nf-call-iptables` in `namespace` (needed so the hub's iptables
/// FORWARD chain sees bridged IPv4). Reports [`FirewallError::BridgeNetfilterMissing`] when the
/// sysctl is absent (`modprobe br_netfilter` is impossible without module support).
pub fn set_bridge_nf_call_iptables(namespace: &str, enabled: bool) -> Result<Applied, FirewallError> {
    if bridge_nf_call_iptables(namespace)?.is_none() {
        let detail = format!("{BRIDGE_NF_FILE} does not exist");
        return Err(FirewallError::BridgeNetfilterMissing { namespace: namespace.into(), detail });
    }
    let setting = format!("{BRIDGE_NF_SYSCTL}={}", u8::from(enabled));
    let cmd = in_netns(namespace, argv(&["sysctl", "-w", &setting]));
    run(&cmd)?;
    Ok(Applied::one(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::run_in;
    use crate::throwaway::testing::need_root;
    use crate::throwaway::{Throwaway, ADDR_A, ADDR_B};
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A TCP listener in namespace `ns` that accepts connections until the test ends.
    fn listen(ns: &str, addr: &str, port: u16) -> SocketAddr {
        let sa: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let listener = run_in(ns, move || TcpListener::bind(sa)).unwrap().unwrap();
        std::thread::spawn(move || for _ in listener.incoming() {});
        sa
    }

    /// Whether a fresh TCP connection from namespace `ns` to `to` completes within 1 s.
    fn connects(ns: &str, to: SocketAddr) -> bool {
        run_in(ns, move || TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()).unwrap()
    }

    fn udp(ns: &str, addr: &str, port: u16) -> UdpSocket {
        let sa: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let sock = run_in(ns, move || UdpSocket::bind(sa)).unwrap().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        sock
    }

    /// Sends `n` numbered datagrams from `from` to `to` while `to` counts what arrives.
    fn udp_delivered(from: &UdpSocket, to: UdpSocket, n: u32) -> usize {
        let dest = to.local_addr().unwrap();
        // Room for every datagram: a receiver kept off the CPU by a busy
        // machine must not lose any to a full buffer, which reads as a drop.
        let size: libc::c_int = 16 << 20;
        // SAFETY: a valid socket descriptor and a c_int option of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&to),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        let done = Arc::new(AtomicBool::new(false));
        // Counts until the sender is done and nothing came for 300 ms:
        // however late this thread runs, it sees everything that arrived.
        let counter = std::thread::spawn({
            let done = done.clone();
            move || {
                let mut seen = std::collections::HashSet::new();
                let mut buf = [0u8; 64];
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    match to.recv_from(&mut buf) {
                        Ok((4, _)) => {
                            seen.insert(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                        }
                        Ok(_) => {}
                        Err(_) if finished => return seen.len(),
                        Err(_) => {}
                    }
                }
            }
        });
        for i in 0..n {
            let _ = from.send_to(&i.to_be_bytes(), dest); // EPERM when dropped on output
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        done.store(true, Ordering::SeqCst);
        counter.join().unwrap()
    }

    #[test]
    fn rule_statements() {
        let r = Rule::RandomLoss { addr: ip("198.18.0.2"), direction: Direction::To, percent: 20 };
        let s = r.statements().unwrap();
        assert_eq!(s[0].join(" "), "ip daddr 198.18.0.2 numgen random mod 100 < 20 drop");
        let r = Rule::DropBetween { a: ip("198.18.0.1"), b: ip("198.18.0.2") };
        assert_eq!(r.statements().unwrap().len(), 2);
        let bad = Rule::DropOneWay { from: ip("198.18.0.1"), to: ip("2001:db8::1") };
        assert!(bad.statements().is_err());
    }

    #[test]
    fn drop_between_partitions_and_delete_heals() {
        if !need_root() {
            return;
        }
        let mut tw = Throwaway::new();
        let pair = tw.pair("nftp").unwrap();
        let server = listen(&pair.b, ADDR_B, 7000);
        assert!(connects(&pair.a, server), "baseline connect");
        let table = Table::new(&pair.a, Family::Inet, "dybtest");
        assert!(!table.exists().unwrap());
        let created = table.create().unwrap();
        assert!(!created.commands.is_empty());
        assert_eq!(table.create().unwrap(), Applied::none(), "create is idempotent");
        let applied = table.add_rule(&Rule::DropBetween { a: ip(ADDR_A), b: ip(ADDR_B) }).unwrap();
        assert_eq!(applied.commands.len(), 2);
        assert!(!connects(&pair.a, server), "connect must fail while partitioned");
        assert_eq!(table.delete().unwrap().commands.len(), 1);
        assert!(connects(&pair.a, server), "deleting the table heals at once");
        assert_eq!(table.delete().unwrap(), Applied::none(), "deleting an absent table is Ok");
    }

    #[test]
    fn drop_one_way_blocks_one_direction_only() {
        if !need_root() {
            return;
        }
        let mut tw = Throwaway::new();
        let pair = tw.pair("nft1").unwrap();
        let a = udp(&pair.a, ADDR_A, 7001);
        let b = udp(&pair.b, ADDR_B, 7001);
        assert_eq!(udp_delivered(&a, b.try_clone().unwrap(), 5), 5, "warm-up A->B");
        let table = Table::new(&pair.a, Family::Inet, "dybtest1");
        table.create().unwrap();
        table.add_rule(&Rule::DropOneWay { from: ip(ADDR_A), to: ip(ADDR_B) }).unwrap();
        let a_to_b = udp_delivered(&a, b.try_clone().unwrap(), 20);
        let b_to_a = udp_delivered(&b, a.try_clone().unwrap(), 20);
        eprintln!("one-way drop: A->B {a_to_b}/20, B->A {b_to_a}/20");
        assert_eq!(a_to_b, 0);
        assert_eq!(b_to_a, 20);
        table.delete().unwrap();
        assert_eq!(udp_delivered(&a, b, 20), 20, "healed");
    }

    #[test]
    fn random_loss_drops_about_half() {
        if !need_root() {
            return;
        }
        let mut tw = Throwaway::new();
        let pair = tw.pair("nftl").unwrap();
        let a = udp(&pair.a, ADDR_A, 7002);
        let b = udp(&pair.b, ADDR_B, 7002);
        assert_eq!(udp_delivered(&a, b.try_clone().unwrap(), 5), 5, "warm-up");
        let table = Table::new(&pair.b, Family::Inet, "dybtestl");
        table.create().unwrap();
        let rule = Rule::RandomLoss { addr: ip(ADDR_A), direction: Direction::From, percent: 50 };
        table.add_rule(&rule).unwrap();
        let got = udp_delivered(&a, b, 1000);
        eprintln!("random loss p=0.5: {got}/1000 delivered");
        assert!((400..=600).contains(&got), "{got} of 1000 delivered");
        table.delete().unwrap();
    }

    #[test]
    fn iptables_chain_lifecycle() {
        if !need_root() {
            return;
        }
        let mut tw = Throwaway::new();
        let ns = tw.namespace("ipt").unwrap();
        let chain = Chain::forward(&ns, "DYBTEST").unwrap();
        assert!(chain.create().unwrap().commands.len() == 2);
        assert_eq!(chain.create().unwrap(), Applied::none(), "create is idempotent");
        let rule =
            NfqueueRule { matcher: QueueMatch::Source(Ipv4Addr::new(198, 18, 0, 1)), queue_num: 7, bypass: true };
        chain.add_nfqueue(&rule).unwrap();
        let rule = NfqueueRule { matcher: QueueMatch::PhysdevOut("veth9".into()), queue_num: 7, bypass: false };
        chain.add_nfqueue(&rule).unwrap();
        let rules = chain.list().unwrap().join("\n");
        assert!(rules.contains("-s 198.18.0.1/32 -j NFQUEUE --queue-num 7 --queue-bypass"), "{rules}");
        assert!(rules.contains("--physdev-out veth9 -j NFQUEUE --queue-num 7"), "{rules}");
        let removed = chain.remove().unwrap();
        assert_eq!(removed.commands.len(), 3, "{removed:?}");
        assert!(chain.list().is_err(), "chain gone");
        assert_eq!(chain.remove().unwrap(), Applied::none(), "removing an absent chain is Ok");
    }

    #[test]
    fn bridge_sysctl_is_settable_or_reported() {
        if !need_root() {
            return;
        }
        let mut tw = Throwaway::new();
        let ns = tw.namespace("brnf").unwrap();
        match bridge_nf_call_iptables(&ns).unwrap() {
            None => {
                let err = set_bridge_nf_call_iptables(&ns, true).unwrap_err();
                assert!(matches!(err, FirewallError::BridgeNetfilterMissing { .. }));
            }
            Some(_) => {
                let applied = set_bridge_nf_call_iptables(&ns, true).unwrap();
                assert_eq!(applied.commands.len(), 1);
                assert_eq!(bridge_nf_call_iptables(&ns).unwrap(), Some(true));
            }
        }
    }
}
