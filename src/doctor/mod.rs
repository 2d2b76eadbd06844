//! `dynabed doctor`: which fault mechanisms this kernel and container
//! really support, found by trying each one in a throwaway namespace rather
//! than by reading version numbers — and, when one fails, why.
//!
//! The fault layer picks its `auto` backends from these findings (netem
//! where it works, else the NFQUEUE delay line), so a run records what
//! actually ran.

use std::net::{IpAddr, Ipv4Addr};

use netns::firewall::{Chain, Direction, Family, NfqueueRule, QueueMatch, Rule, Table};
use netns::nfqueue::{NfQueue, QueueConfig};
use netns::qdisc::{self, Support};
use netns::throwaway::Throwaway;
use serde::Serialize;

mod container;

/// One mechanism and whether it works here.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub mechanism: &'static str,
    pub works: bool,
    /// What was seen: a version, or the reason it does not work.
    pub detail: String,
    /// What to change when it does not work (a flag, a mount, a capability).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<&'static str>,
}

/// Why a mechanism does not work, and what to change if we know.
#[derive(Debug)]
pub struct Failed {
    reason: String,
    fix: Option<&'static str>,
}

impl Failed {
    fn with_fix(reason: impl Into<String>, fix: &'static str) -> Self {
        Failed { reason: reason.into(), fix: Some(fix) }
    }
}

impl From<String> for Failed {
    fn from(reason: String) -> Self {
        Failed { reason, fix: None }
    }
}

impl From<&str> for Failed {
    fn from(reason: &str) -> Self {
        reason.to_owned().into()
    }
}

type Probe = fn(&mut Scratch) -> Result<String, Failed>;

/// The probes, in the order they are shown.
const PROBES: &[(&str, Probe)] = &[
    ("container", container::runtime),
    ("capabilities (CAP_NET_ADMIN, CAP_SYS_ADMIN)", capabilities),
    // Before any namespace is made: `ip netns add` makes /run/netns shared.
    ("/run/netns mount propagation", container::propagation),
    ("network namespaces, veth", namespaces),
    ("/sys writable", container::sys_writable),
    ("file-descriptor and process limits", container::limits),
    ("tc netem (slow, jitter, correlated loss, duplicate, reorder, corrupt)", netem),
    ("tc tbf (bandwidth)", tbf),
    ("nftables drop between addresses", nft_drop),
    ("nftables random loss", nft_loss),
    ("nftables bridge family", nft_bridge),
    ("nftables netdev egress dup (duplicate without netem)", nft_dup),
    ("iptables NFQUEUE target", iptables_nfqueue),
    ("iptables backend", container::iptables_backend),
    ("bridge-nf-call-iptables", bridge_netfilter),
    ("NFQUEUE reader socket", nfqueue_socket),
    ("cgroup cpu quota", container::cgroups),
    ("clock skew (app layer only)", clock_skew),
];

/// Probes that read only what this process sees and need no capability.
const UNPRIVILEGED: &[&str] = &["container", "capabilities", "/run/netns", "/sys", "file-descriptor", "clock skew"];

/// Runs every probe; nothing is left behind whatever the outcome.
pub fn probe_all() -> Vec<Finding> {
    let mut scratch = Scratch::default();
    PROBES
        .iter()
        .map(|(mechanism, probe)| {
            let outcome = if UNPRIVILEGED.iter().any(|p| mechanism.starts_with(p)) || netns::has_netns_capabilities() {
                probe(&mut scratch)
            } else {
                Err(Failed::with_fix(
                    "needs CAP_NET_ADMIN and CAP_SYS_ADMIN",
                    "run as root, or the container privileged",
                ))
            };
            match outcome {
                Ok(detail) => Finding { mechanism, works: true, detail, fix: None },
                Err(Failed { reason, fix }) => Finding { mechanism, works: false, detail: reason, fix },
            }
        })
        .collect()
}

/// Throwaway namespaces shared by the probes, deleted when dropped.
#[derive(Default)]
pub struct Scratch {
    namespaces: Throwaway,
    pair: Option<netns::throwaway::Pair>,
}

impl Scratch {
    /// Two namespaces joined by a veth pair, made on first use.
    fn pair(&mut self) -> Result<netns::throwaway::Pair, String> {
        if self.pair.is_none() {
            self.pair = Some(self.namespaces.pair("doc").map_err(|e| e.to_string())?);
        }
        Ok(self.pair.clone().expect("made above"))
    }
}

fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

fn capabilities(_: &mut Scratch) -> Result<String, Failed> {
    if netns::has_netns_capabilities() {
        Ok("both present: namespaced clusters and kernel faults are possible".into())
    } else {
        Err("missing: only loopback clusters with application-level and process faults".into())
    }
}

fn namespaces(scratch: &mut Scratch) -> Result<String, Failed> {
    let pair = scratch.pair()?;
    Ok(format!("made {} and {} joined by a veth pair", pair.a, pair.b))
}

fn support(s: Support) -> Result<String, String> {
    match s {
        Support::Supported => Ok("applied and removed on a scratch veth".into()),
        Support::Unsupported { reason } => Err(reason),
    }
}

fn netem(_: &mut Scratch) -> Result<String, Failed> {
    support(qdisc::probe_netem()).map_err(|reason| {
        let instead = "slow, jitter, correlated or per-port loss, reorder and corrupt use the NFQUEUE delay line; \
                       duplicate uses nftables dup";
        Failed::from(format!("{reason} ({instead})"))
    })
}

/// A skew is always made by the node itself: why the kernel cannot.
fn clock_skew(_: &mut Scratch) -> Result<String, Failed> {
    let time_namespaces = if std::path::Path::new("/proc/self/timens_offsets").exists() {
        "this kernel's time namespaces"
    } else {
        "time namespaces (absent from this kernel)"
    };
    Ok(format!(
        "each node skews its own clock (--fault_layer kernel is refused): {time_namespaces} offset only \
         CLOCK_MONOTONIC and CLOCK_BOOTTIME, never the shared wall clock"
    ))
}

fn tbf(_: &mut Scratch) -> Result<String, Failed> {
    Ok(support(qdisc::probe_tbf())?)
}

fn with_table(scratch: &mut Scratch, family: Family, rule: Option<Rule>) -> Result<String, Failed> {
    let pair = scratch.pair()?;
    let table = Table::new(&pair.a, family, "dynabed_doctor");
    let result = table.create().map_err(text).and_then(|_| match &rule {
        Some(rule) => table.add_rule(rule).map_err(text),
        None => Ok(netns::command::Applied::none()),
    });
    let removed = table.delete().map_err(text);
    let what = if rule.is_some() { "table created, rule added, table deleted" } else { "table created and deleted" };
    result.and(removed)?;
    Ok(what.into())
}

fn scratch_addrs() -> (IpAddr, IpAddr) {
    (netns::throwaway::ADDR_A.parse().expect("constant"), netns::throwaway::ADDR_B.parse().expect("constant"))
}

fn nft_drop(scratch: &mut Scratch) -> Result<String, Failed> {
    let (a, b) = scratch_addrs();
    with_table(scratch, Family::Inet, Some(Rule::DropBetween { a, b }))
}

fn nft_loss(scratch: &mut Scratch) -> Result<String, Failed> {
    let (a, _) = scratch_addrs();
    with_table(scratch, Family::Inet, Some(Rule::RandomLoss { addr: a, direction: Direction::From, percent: 10 }))
}

fn nft_bridge(scratch: &mut Scratch) -> Result<String, Failed> {
    with_table(scratch, Family::Bridge, None)
}

/// A netdev table copying packets on a veth's egress hook, as the
/// duplicate fault does where netem is missing.
fn nft_dup(scratch: &mut Scratch) -> Result<String, Failed> {
    let pair = scratch.pair()?;
    let nft = |words: &[&str]| {
        let mut command = netns::command::argv(&["nft"]);
        command.extend(netns::command::argv(words));
        netns::command::run(&netns::command::in_netns(&pair.a, command)).map_err(text)
    };
    let hook = "{ type filter hook egress device twa priority 0 ; }";
    let made = nft(&["add", "table", "netdev", "dynabed_doctor"])
        .and_then(|_| nft(&["add", "chain", "netdev", "dynabed_doctor", "egress", hook]))
        .and_then(|_| {
            nft(&[
                "add",
                "rule",
                "netdev",
                "dynabed_doctor",
                "egress",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                "1",
                "dup",
                "to",
                "twa",
            ])
        });
    let removed = nft(&["delete", "table", "netdev", "dynabed_doctor"]);
    made.and(removed)
        .map_err(|reason| Failed::with_fix(reason, "a kernel with netfilter egress hooks (5.16+), or netem"))?;
    Ok("egress chain with a dup rule added and removed".into())
}

fn iptables_nfqueue(scratch: &mut Scratch) -> Result<String, Failed> {
    let pair = scratch.pair()?;
    let chain = Chain::forward(&pair.a, "DYNABED_DOCTOR").map_err(text)?;
    let rule = NfqueueRule { matcher: QueueMatch::Source(Ipv4Addr::new(198, 18, 0, 1)), queue_num: 3, bypass: true };
    let result = chain.create().map_err(text).and_then(|_| chain.add_nfqueue(&rule).map_err(text));
    let removed = chain.remove().map_err(text);
    result.and(removed)?;
    Ok("rule added and removed".into())
}

fn bridge_netfilter(scratch: &mut Scratch) -> Result<String, Failed> {
    let pair = scratch.pair()?;
    match netns::firewall::bridge_nf_call_iptables(&pair.a).map_err(text)? {
        Some(_) => Ok("present: iptables in a hub can see bridged traffic".into()),
        None => Err("no /proc/sys/net/bridge (br_netfilter not loaded)".into()),
    }
}

fn nfqueue_socket(scratch: &mut Scratch) -> Result<String, Failed> {
    let pair = scratch.pair()?;
    let opened = netns::namespace::run_in(&pair.a, || NfQueue::open(QueueConfig::new(3, 64)).map(|q| q.close()))
        .map_err(text)?;
    opened.map_err(text)?.map_err(text)?;
    Ok("bound, configured and released a queue".into())
}

/// The findings as a table for people.
pub fn render(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.mechanism.len()).max().unwrap_or(0);
    findings
        .iter()
        .map(|f| {
            let line = format!("{:<width$}  {:<3}  {}\n", f.mechanism, if f.works { "yes" } else { "no" }, f.detail);
            match f.fix {
                Some(fix) => format!("{line}{:<width$}       fix: {fix}\n", ""),
                None => line,
            }
        })
        .collect()
}
