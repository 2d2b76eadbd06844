//! `dynabed doctor`: which fault mechanisms this kernel and container
//! really support, found by trying each one in a throwaway namespace rather
//! than by reading version numbers — and, when one fails, why.
//!
//! The fault layer picks its `auto` backends from these findings (netem
//! where it works, else the NFQUEUE delay line), so a run records what
//! actually ran.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use netns::firewall::{Chain, Direction, Family, NfqueueRule, QueueMatch, Rule, Table};
use netns::nfqueue::{NfQueue, QueueConfig};
use netns::qdisc::{self, Support};
use netns::throwaway::Throwaway;
use serde::Serialize;

/// One mechanism and whether it works here.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub mechanism: &'static str,
    pub works: bool,
    /// What was seen: a version, or the reason it does not work.
    pub detail: String,
}

type Probe = fn(&mut Scratch) -> Result<String, String>;

/// The probes, in the order they are shown.
const PROBES: &[(&str, Probe)] = &[
    ("capabilities (CAP_NET_ADMIN, CAP_SYS_ADMIN)", capabilities),
    ("network namespaces, veth", namespaces),
    ("/run/netns mount propagation", propagation),
    ("tc netem (delay, loss)", netem),
    ("tc tbf (bandwidth)", tbf),
    ("nftables drop between addresses", nft_drop),
    ("nftables random loss", nft_loss),
    ("nftables bridge family", nft_bridge),
    ("iptables NFQUEUE target", iptables_nfqueue),
    ("bridge-nf-call-iptables", bridge_netfilter),
    ("NFQUEUE reader socket", nfqueue_socket),
    ("cgroup cpu quota", cgroup),
];

/// Runs every probe; nothing is left behind whatever the outcome.
pub fn probe_all() -> Vec<Finding> {
    let mut scratch = Scratch::default();
    PROBES
        .iter()
        .map(|(mechanism, probe)| {
            let outcome = if mechanism.starts_with("capabilities") || netns::has_netns_capabilities() {
                probe(&mut scratch)
            } else {
                Err("needs CAP_NET_ADMIN and CAP_SYS_ADMIN".to_owned())
            };
            match outcome {
                Ok(detail) => Finding { mechanism, works: true, detail },
                Err(detail) => Finding { mechanism, works: false, detail },
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

fn capabilities(_: &mut Scratch) -> Result<String, String> {
    if netns::has_netns_capabilities() {
        Ok("both present: namespaced clusters and kernel faults are possible".into())
    } else {
        Err("missing: only loopback clusters with application-level and process faults".into())
    }
}

fn namespaces(scratch: &mut Scratch) -> Result<String, String> {
    let pair = scratch.pair()?;
    Ok(format!("made {} and {} joined by a veth pair", pair.a, pair.b))
}

fn propagation(_: &mut Scratch) -> Result<String, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(text)?;
    match mountinfo.lines().find(|l| l.split_whitespace().nth(4) == Some("/run/netns")) {
        Some(line) if line.contains("shared:") => {
            Ok("shared mount: namespaces are visible to other mount namespaces".into())
        }
        Some(_) => Err("a private mount: namespaces made here are invisible elsewhere in the container".into()),
        None => Ok("not yet a mount point; made shared on first namespace".into()),
    }
}

fn support(s: Support) -> Result<String, String> {
    match s {
        Support::Supported => Ok("applied and removed on a scratch veth".into()),
        Support::Unsupported { reason } => Err(reason),
    }
}

fn netem(_: &mut Scratch) -> Result<String, String> {
    support(qdisc::probe_netem()).map_err(|reason| format!("{reason} (slow faults use the NFQUEUE delay line)"))
}

fn tbf(_: &mut Scratch) -> Result<String, String> {
    support(qdisc::probe_tbf())
}

fn with_table(scratch: &mut Scratch, family: Family, rule: Option<Rule>) -> Result<String, String> {
    let pair = scratch.pair()?;
    let table = Table::new(&pair.a, family, "dynabed_doctor");
    let result = table.create().map_err(text).and_then(|_| match &rule {
        Some(rule) => table.add_rule(rule).map_err(text),
        None => Ok(netns::command::Applied::none()),
    });
    let removed = table.delete().map_err(text);
    let what = if rule.is_some() { "table created, rule added, table deleted" } else { "table created and deleted" };
    result.and(removed).map(|_| what.into())
}

fn scratch_addrs() -> (IpAddr, IpAddr) {
    (netns::throwaway::ADDR_A.parse().expect("constant"), netns::throwaway::ADDR_B.parse().expect("constant"))
}

fn nft_drop(scratch: &mut Scratch) -> Result<String, String> {
    let (a, b) = scratch_addrs();
    with_table(scratch, Family::Inet, Some(Rule::DropBetween { a, b }))
}

fn nft_loss(scratch: &mut Scratch) -> Result<String, String> {
    let (a, _) = scratch_addrs();
    with_table(scratch, Family::Inet, Some(Rule::RandomLoss { addr: a, direction: Direction::From, percent: 10 }))
}

fn nft_bridge(scratch: &mut Scratch) -> Result<String, String> {
    with_table(scratch, Family::Bridge, None)
}

fn iptables_nfqueue(scratch: &mut Scratch) -> Result<String, String> {
    let pair = scratch.pair()?;
    let chain = Chain::forward(&pair.a, "DYNABED_DOCTOR").map_err(text)?;
    let rule = NfqueueRule { matcher: QueueMatch::Source(Ipv4Addr::new(198, 18, 0, 1)), queue_num: 3, bypass: true };
    let result = chain.create().map_err(text).and_then(|_| chain.add_nfqueue(&rule).map_err(text));
    let removed = chain.remove().map_err(text);
    result.and(removed)?;
    Ok(format!("rule added and removed; {}", iptables_backend()))
}

fn iptables_backend() -> String {
    match Command::new("iptables").arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Err(e) => format!("iptables: {e}"),
    }
}

fn bridge_netfilter(scratch: &mut Scratch) -> Result<String, String> {
    let pair = scratch.pair()?;
    match netns::firewall::bridge_nf_call_iptables(&pair.a).map_err(text)? {
        Some(_) => Ok("present: iptables in a hub can see bridged traffic".into()),
        None => Err("no /proc/sys/net/bridge (br_netfilter not loaded)".into()),
    }
}

fn nfqueue_socket(scratch: &mut Scratch) -> Result<String, String> {
    let pair = scratch.pair()?;
    let opened = netns::namespace::run_in(&pair.a, || NfQueue::open(QueueConfig::new(3, 64)).map(|q| q.close()))
        .map_err(text)?;
    opened.map_err(text)?.map_err(text)?;
    Ok("bound, configured and released a queue".into())
}

fn cgroup(_: &mut Scratch) -> Result<String, String> {
    let version = netns::cgroup::probe().map_err(text)?;
    Ok(format!("{version:?}: a group made, its quota set, removed"))
}

/// The findings as a table for people.
pub fn render(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.mechanism.len()).max().unwrap_or(0);
    findings
        .iter()
        .map(|f| format!("{:<width$}  {:<3}  {}\n", f.mechanism, if f.works { "yes" } else { "no" }, f.detail))
        .collect()
}
