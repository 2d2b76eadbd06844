//! Root qdiscs on a namespace's device: netem (delay/jitter/loss) where the kernel has it,
//! tbf (a bandwidth limit) everywhere, and clearing them.
//!
//! Kernels without `sch_netem` (like the CI kernel) answer "Specified qdisc kind is unknown";
//! that answer becomes [`QdiscError::Unsupported`] so callers can fall back to the NFQUEUE
//! delay line. `probe_*` try a qdisc in a throwaway namespace so `doctor` can report support.

use crate::command::{argv, in_netns, run, Applied, CommandError};
use crate::throwaway::Throwaway;

/// Why a qdisc operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QdiscError {
    /// The kernel does not know this qdisc kind (module absent and not loadable).
    #[error("qdisc `{kind}` is not supported by this kernel (device {device} in {namespace}): {detail}")]
    Unsupported { kind: String, namespace: String, device: String, detail: String },
    #[error("invalid {kind} parameters: {reason}")]
    InvalidParams { kind: &'static str, reason: String },
    #[error("cannot read qdiscs of {device} in {namespace}: {reason}")]
    Parse { namespace: String, device: String, reason: String },
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The scratch namespace of a probe could not be made.
    #[error(transparent)]
    Scratch(#[from] crate::Error),
}

/// netem parameters: a fixed delay, uniform jitter around it, and random loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Netem {
    pub delay_ms: u32,
    pub jitter_ms: u32,
    pub loss_pct: f64,
}

/// tbf parameters: rate, bucket size and the longest a packet may wait in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    pub rate_kbit: u64,
    pub burst_bytes: u32,
    pub latency_ms: u32,
}

/// The root qdisc of a device as `tc -j qdisc show` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootQdisc {
    pub kind: String,
    /// tbf's rate in bytes per second, when the qdisc has one.
    pub rate_bytes_per_s: Option<u64>,
}

/// Whether a mechanism works on this kernel, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Supported,
    Unsupported { reason: String },
}

impl Support {
    pub fn is_supported(&self) -> bool {
        matches!(self, Support::Supported)
    }
}

/// Sets (replaces) a netem root qdisc on `device` in `namespace`.
pub fn netem(namespace: &str, device: &str, p: Netem) -> Result<Applied, QdiscError> {
    if !(0.0..=100.0).contains(&p.loss_pct) {
        let reason = format!("loss_pct {} is outside 0..=100", p.loss_pct);
        return Err(QdiscError::InvalidParams { kind: "netem", reason });
    }
    let mut args = vec!["netem".to_string(), "delay".into(), format!("{}ms", p.delay_ms)];
    if p.jitter_ms > 0 {
        args.push(format!("{}ms", p.jitter_ms));
    }
    if p.loss_pct > 0.0 {
        args.extend(["loss".to_string(), format!("{}%", p.loss_pct)]);
    }
    replace_root(namespace, device, "netem", args)
}

/// Sets (replaces) a netem root qdisc on `device` in `namespace` with netem's own option words
/// (e.g. `delay 25ms 14ms distribution normal`, `loss gemodel 5% 50%`, `duplicate 10%`), for
/// settings [`Netem`] does not model.
pub fn netem_options(namespace: &str, device: &str, options: &[String]) -> Result<Applied, QdiscError> {
    let args = std::iter::once("netem".to_string()).chain(options.iter().cloned()).collect();
    replace_root(namespace, device, "netem", args)
}

/// Sets (replaces) a tbf root qdisc on `device` in `namespace`.
pub fn tbf(namespace: &str, device: &str, t: Tbf) -> Result<Applied, QdiscError> {
    if t.rate_kbit == 0 || t.burst_bytes == 0 {
        let reason = "rate_kbit and burst_bytes must be positive".to_string();
        return Err(QdiscError::InvalidParams { kind: "tbf", reason });
    }
    let args = vec![
        "tbf".to_string(),
        "rate".into(),
        format!("{}kbit", t.rate_kbit),
        "burst".into(),
        t.burst_bytes.to_string(),
        "latency".into(),
        format!("{}ms", t.latency_ms),
    ];
    replace_root(namespace, device, "tbf", args)
}

/// Deletes the root qdisc of `device`; a device without one is Ok (nothing is recorded).
pub fn clear(namespace: &str, device: &str) -> Result<Applied, QdiscError> {
    let cmd = in_netns(namespace, argv(&["tc", "qdisc", "del", "dev", device, "root"]));
    match run(&cmd) {
        Ok(_) => Ok(Applied::one(cmd)),
        Err(e) if is_absent(e.stderr()) => Ok(Applied::none()),
        Err(e) => Err(e.into()),
    }
}

/// The device's root qdisc, or `None` when it has only the default (`noqueue`/none).
pub fn root(namespace: &str, device: &str) -> Result<Option<RootQdisc>, QdiscError> {
    let cmd = in_netns(namespace, argv(&["tc", "-j", "qdisc", "show", "dev", device, "root"]));
    let out = run(&cmd)?;
    let parse_err =
        |reason: String| QdiscError::Parse { namespace: namespace.to_string(), device: device.to_string(), reason };
    let json: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| parse_err(e.to_string()))?;
    let list = json.as_array().ok_or_else(|| parse_err("not a JSON array".into()))?;
    Ok(list.iter().find_map(root_from_json).filter(|q| q.kind != "noqueue"))
}

fn root_from_json(entry: &serde_json::Value) -> Option<RootQdisc> {
    let kind = entry.get("kind")?.as_str()?.to_string();
    let rate = entry.pointer("/options/rate").and_then(|r| r.as_u64());
    Some(RootQdisc { kind, rate_bytes_per_s: rate })
}

/// Tries netem in a throwaway namespace.
pub fn probe_netem() -> Support {
    let p = Netem { delay_ms: 1, jitter_ms: 0, loss_pct: 0.0 };
    probe(|ns, dev| netem(ns, dev, p))
}

/// Tries tbf in a throwaway namespace.
pub fn probe_tbf() -> Support {
    let t = Tbf { rate_kbit: 1000, burst_bytes: 10_000, latency_ms: 50 };
    probe(|ns, dev| tbf(ns, dev, t))
}

fn probe(apply: impl Fn(&str, &str) -> Result<Applied, QdiscError>) -> Support {
    let mut scratch = Throwaway::new();
    let mut attempt = || -> Result<(), QdiscError> {
        let ns = scratch.namespace("probe")?;
        scratch.veth(&ns, "prba", &ns, "prbb")?;
        apply(&ns, "prba")?;
        Ok(())
    };
    match attempt() {
        Ok(()) => Support::Supported,
        Err(e) => Support::Unsupported { reason: e.to_string() },
    }
}

fn replace_root(namespace: &str, device: &str, kind: &str, args: Vec<String>) -> Result<Applied, QdiscError> {
    let mut cmd = in_netns(namespace, argv(&["tc", "qdisc", "replace", "dev", device, "root"]));
    cmd.extend(args);
    match run(&cmd) {
        Ok(_) => Ok(Applied::one(cmd)),
        Err(e) if is_unknown_kind(e.stderr()) => Err(QdiscError::Unsupported {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            device: device.to_string(),
            detail: e.stderr().trim().to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// tc's answers when the qdisc module is missing.
fn is_unknown_kind(stderr: &str) -> bool {
    stderr.contains("Specified qdisc kind is unknown")
        || stderr.contains("Unknown qdisc")
        || stderr.contains("qdisc kind is unknown")
}

/// tc's answers when there is no root qdisc to delete.
fn is_absent(stderr: &str) -> bool {
    stderr.contains("Cannot delete qdisc with handle of zero")
        || stderr.contains("No such file or directory")
        || stderr.contains("Invalid handle")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throwaway::testing::need_root;

    #[test]
    fn recognises_unknown_kind() {
        assert!(is_unknown_kind("Error: Specified qdisc kind is unknown.\n"));
        assert!(!is_unknown_kind("Error: Cannot find device \"x\"\n"));
    }

    #[test]
    fn tbf_reads_back_and_clears() {
        if !need_root() {
            return;
        }
        let mut tw = Throwaway::new();
        let pair = tw.pair("tbf").unwrap();
        assert_eq!(root(&pair.a, "twa").unwrap(), None);
        let t = Tbf { rate_kbit: 2000, burst_bytes: 16_000, latency_ms: 40 };
        let applied = tbf(&pair.a, "twa", t).unwrap();
        assert_eq!(applied.commands.len(), 1);
        assert!(applied.commands[0].contains(&"2000kbit".to_string()));
        let q = root(&pair.a, "twa").unwrap().expect("a root qdisc after tbf");
        assert_eq!(q.kind, "tbf");
        assert_eq!(q.rate_bytes_per_s, Some(2000 * 1000 / 8));
        // Replacing is idempotent.
        tbf(&pair.a, "twa", t).unwrap();
        assert_eq!(clear(&pair.a, "twa").unwrap().commands.len(), 1);
        assert_eq!(root(&pair.a, "twa").unwrap(), None);
        // Clearing an absent qdisc is Ok and records nothing.
        assert_eq!(clear(&pair.a, "twa").unwrap(), Applied::none());
    }

    #[test]
    fn netem_unsupported_is_typed() {
        if !need_root() {
            return;
        }
        let support = probe_netem();
        eprintln!("probe_netem: {support:?}");
        assert!(probe_tbf().is_supported(), "tbf: {:?}", probe_tbf());
        let mut tw = Throwaway::new();
        let pair = tw.pair("netem").unwrap();
        let p = Netem { delay_ms: 50, jitter_ms: 5, loss_pct: 1.0 };
        let result = netem(&pair.a, "twa", p);
        match (&support, result) {
            (Support::Unsupported { .. }, Err(QdiscError::Unsupported { kind, .. })) => assert_eq!(kind, "netem"),
            (Support::Supported, Ok(applied)) => {
                assert_eq!(root(&pair.a, "twa").unwrap().unwrap().kind, "netem");
                assert_eq!(applied.commands.len(), 1);
            }
            (s, r) => panic!("probe said {s:?} but netem returned {r:?}"),
        }
    }
}
