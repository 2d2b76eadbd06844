//! What a fault is, kind by kind, with its settings and their defaults in
//! one place. `dynabed fault KIND` flags and plan-file events both become a
//! [`FaultRequest`] through [`FaultRequest::new`], so both are checked by
//! the same code.

use crate::api::admin::ClockSkew;
use crate::api::fault::{Clients, CutDirection, JitterDist, Kind, Layer, Params, PortSelector};

/// The defaults of every fault setting (flags, plan files and seed flags).
pub mod defaults {
    pub const SLOW_MS: u64 = 200;
    pub const LOSS_PCT: u8 = 20;
    pub const RATE_KBIT: u64 = 1000;
    pub const CPU_PCT: u32 = 10;
    pub const DUPLICATE_PCT: u8 = 10;
    pub const REORDER_PCT: u8 = 25;
    /// The round-trip delay the packets that are not reordered wait.
    pub const REORDER_SLOW_MS: u64 = 20;
    pub const CORRUPT_PCT: u8 = 5;
}

/// The largest clock offset a skew takes, either way: ten years.
pub const MAX_OFFSET_MS: i64 = 10 * 365 * 24 * 3_600_000;
/// The drift a skew takes: a clock at most twice as fast, and never stopped.
pub const DRIFT_PPM: std::ops::RangeInclusive<i64> = -999_999..=1_000_000;

/// A spread delay: `ms` is the standard deviation of the added round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jitter {
    pub ms: u64,
    pub dist: JitterDist,
}

/// One fault with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// SIGKILL; healing restarts the node when `restart`.
    Crash { restart: bool },
    /// Adds `slow_ms` (spread by `jitter`) to each round trip through the node.
    Slow { slow_ms: u64, jitter: Option<Jitter>, port: PortSelector },
    /// Splits the target and `with` from the rest of the cluster.
    Partition { with: Vec<String>, direction: CutDirection, clients: Clients },
    /// SIGSTOP; healing sends SIGCONT.
    Pause,
    /// Drops `pct` % of the packets from and to the node, each direction;
    /// with `correlation_pct`, in bursts (Gilbert's model).
    Loss { pct: u8, correlation_pct: Option<u8>, port: PortSelector },
    /// Limits the node's link to `rate_kbit`, each direction.
    Bandwidth { rate_kbit: u64 },
    /// Limits the node to `pct` % of one core.
    Cpu { pct: u32 },
    /// Sends `pct` % of the packets from and to the node twice.
    Duplicate { pct: u8, port: PortSelector },
    /// Sends `pct` % of the packets at once while the others wait `slow_ms`
    /// per round trip, so the early ones overtake.
    Reorder { pct: u8, slow_ms: u64, port: PortSelector },
    /// Damages `pct` % of the packets from and to the node, each direction.
    Corrupt { pct: u8, port: PortSelector },
    /// Skews the node's own clock (its time-based parts read it).
    Skew(ClockSkew),
}

impl Fault {
    pub fn kind(&self) -> Kind {
        match self {
            Fault::Crash { .. } => Kind::Crash,
            Fault::Slow { .. } => Kind::Slow,
            Fault::Partition { .. } => Kind::Partition,
            Fault::Pause => Kind::Pause,
            Fault::Loss { .. } => Kind::Loss,
            Fault::Bandwidth { .. } => Kind::Bandwidth,
            Fault::Cpu { .. } => Kind::Cpu,
            Fault::Duplicate { .. } => Kind::Duplicate,
            Fault::Reorder { .. } => Kind::Reorder,
            Fault::Corrupt { .. } => Kind::Corrupt,
            Fault::Skew(_) => Kind::Skew,
        }
    }

    /// Which of the node's traffic a network fault touches (all, for the others).
    pub fn port(&self) -> PortSelector {
        match self {
            Fault::Slow { port, .. }
            | Fault::Loss { port, .. }
            | Fault::Duplicate { port, .. }
            | Fault::Reorder { port, .. }
            | Fault::Corrupt { port, .. } => *port,
            _ => PortSelector::All,
        }
    }
}

/// The layer `dynabed fault KIND` uses without `--fault_layer`: the kernel,
/// except for a skew, which only the node can make.
pub fn default_layer(kind: Kind) -> Layer {
    match kind {
        Kind::Skew => Layer::App,
        _ => Layer::Kernel,
    }
}

/// The name a flag value is spelled with on the command line.
pub fn flag_name(value: &impl clap::ValueEnum) -> String {
    value.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
}

/// Why settings do not make a fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("loss_pct must be 1-100")]
    LossPct,
    #[error("--with groups nodes for partitions only")]
    WithNotPartition,
    #[error("one-way cuts are kernel-level partitions only")]
    OneWayNotKernelPartition,
    #[error("{0} must be 1-100")]
    Pct(&'static str),
    #[error("{setting} applies to {applies_to} only")]
    NotFor { setting: &'static str, applies_to: &'static str },
    #[error("loss_correlation_pct must be 0-99 (100 would never end a burst)")]
    CorrelationPct,
    #[error("loss_correlation_pct needs loss_pct below 100")]
    CorrelatedTotalLoss,
    #[error("{} has no application-level form: use --fault_layer kernel", .0.as_str())]
    KernelOnly(Kind),
    #[error(
        "skew has no kernel-level form: time namespaces offset only the monotonic and boot clocks, \
         never the wall clock a node stamps versions with; use --fault_layer app (plans: \"layer\": \"app\")"
    )]
    SkewNotKernel,
    #[error("skew needs offset_ms or drift_ppm")]
    NoSkew,
    #[error("offset_ms must be within ±{MAX_OFFSET_MS} (ten years)")]
    OffsetMs,
    #[error("drift_ppm must be from {} to {} (at most twice as fast, never stopped)", DRIFT_PPM.start(), DRIFT_PPM.end())]
    DriftPpm,
}

/// The kinds only the kernel can make: packets the node never sees as such.
const KERNEL_ONLY: &[Kind] = &[Kind::Loss, Kind::Bandwidth, Kind::Duplicate, Kind::Reorder, Kind::Corrupt];

/// The settings only some kernel-level kinds take, with those kinds as the
/// error names them: anything else given one is refused, not ignored.
/// A setting that means something for some kinds only (and, for the
/// newer network settings, only on the kernel layer).
struct NarrowSetting {
    name: &'static str,
    kinds: &'static [Kind],
    kernel_only: bool,
    applies_to: &'static str,
    given: fn(&Params) -> bool,
}

const NARROW_SETTINGS: &[NarrowSetting] = &[
    NarrowSetting {
        name: "slow_ms",
        kinds: &[Kind::Slow, Kind::Reorder],
        kernel_only: false,
        applies_to: "slow and reorder",
        given: |p| p.slow_ms.is_some(),
    },
    NarrowSetting {
        name: "loss_pct",
        kinds: &[Kind::Loss],
        kernel_only: false,
        applies_to: "loss",
        given: |p| p.loss_pct.is_some(),
    },
    NarrowSetting {
        name: "rate_kbit",
        kinds: &[Kind::Bandwidth],
        kernel_only: false,
        applies_to: "bandwidth",
        given: |p| p.rate_kbit.is_some(),
    },
    NarrowSetting {
        name: "cpu_pct",
        kinds: &[Kind::Cpu],
        kernel_only: false,
        applies_to: "cpu",
        given: |p| p.cpu_pct.is_some(),
    },
    NarrowSetting {
        name: "partition_clients",
        kinds: &[Kind::Partition],
        kernel_only: false,
        applies_to: "partition",
        given: |p| p.partition_clients.is_some(),
    },
    NarrowSetting {
        name: "no_restart",
        kinds: &[Kind::Crash],
        kernel_only: false,
        applies_to: "crash",
        given: |p| p.no_restart == Some(true),
    },
    NarrowSetting {
        name: "jitter_ms",
        kinds: &[Kind::Slow],
        kernel_only: true,
        applies_to: "kernel-level slow",
        given: |p| p.jitter_ms.is_some(),
    },
    NarrowSetting {
        name: "jitter_dist",
        kinds: &[Kind::Slow],
        kernel_only: true,
        applies_to: "kernel-level slow",
        given: |p| p.jitter_dist.is_some(),
    },
    NarrowSetting {
        name: "loss_correlation_pct",
        kinds: &[Kind::Loss],
        kernel_only: true,
        applies_to: "kernel-level loss",
        given: |p| p.loss_correlation_pct.is_some(),
    },
    NarrowSetting {
        name: "duplicate_pct",
        kinds: &[Kind::Duplicate],
        kernel_only: true,
        applies_to: "duplicate",
        given: |p| p.duplicate_pct.is_some(),
    },
    NarrowSetting {
        name: "reorder_pct",
        kinds: &[Kind::Reorder],
        kernel_only: true,
        applies_to: "reorder",
        given: |p| p.reorder_pct.is_some(),
    },
    NarrowSetting {
        name: "corrupt_pct",
        kinds: &[Kind::Corrupt],
        kernel_only: true,
        applies_to: "corrupt",
        given: |p| p.corrupt_pct.is_some(),
    },
    NarrowSetting {
        name: "offset_ms",
        kinds: &[Kind::Skew],
        kernel_only: false,
        applies_to: "skew",
        given: |p| p.offset_ms.is_some(),
    },
    NarrowSetting {
        name: "drift_ppm",
        kinds: &[Kind::Skew],
        kernel_only: false,
        applies_to: "skew",
        given: |p| p.drift_ppm.is_some(),
    },
    NarrowSetting {
        name: "port",
        kinds: &[Kind::Slow, Kind::Loss, Kind::Duplicate, Kind::Reorder, Kind::Corrupt],
        kernel_only: true,
        applies_to: "kernel-level slow, loss, duplicate, reorder and corrupt",
        given: |p| p.port.is_some_and(|port| port != PortSelector::All),
    },
];

/// Refuses a setting given to a kind (or layer) it means nothing for, so
/// that `fault slow --loss_pct 5` says so instead of ignoring it.
fn check_narrow_settings(kind: Kind, layer: Layer, params: &Params) -> Result<(), FaultError> {
    for setting in NARROW_SETTINGS {
        let fits = setting.kinds.contains(&kind) && (!setting.kernel_only || layer == Layer::Kernel);
        if (setting.given)(params) && !fits {
            return Err(FaultError::NotFor { setting: setting.name, applies_to: setting.applies_to });
        }
    }
    if params.jitter_dist.is_some() && params.jitter_ms.is_none() {
        return Err(FaultError::NotFor { setting: "jitter_dist", applies_to: "slow with jitter_ms" });
    }
    Ok(())
}

/// Refuses shares outside 1-100 % and correlations Gilbert's model cannot make.
fn check_shares(params: &Params) -> Result<(), FaultError> {
    let shares = [
        ("loss_pct", params.loss_pct),
        ("duplicate_pct", params.duplicate_pct),
        ("reorder_pct", params.reorder_pct),
        ("corrupt_pct", params.corrupt_pct),
    ];
    if let Some((name, _)) = shares.iter().find(|(_, pct)| pct.is_some_and(|p| p == 0 || p > 100)) {
        return Err(if *name == "loss_pct" { FaultError::LossPct } else { FaultError::Pct(name) });
    }
    match (params.loss_correlation_pct, params.loss_pct) {
        (Some(c), _) if c > 99 => Err(FaultError::CorrelationPct),
        (Some(_), Some(100)) => Err(FaultError::CorrelatedTotalLoss),
        _ => Ok(()),
    }
}

/// The skew `params` ask for, checked.
fn clock_skew(params: &Params) -> Result<ClockSkew, FaultError> {
    if params.offset_ms.is_none() && params.drift_ppm.is_none() {
        return Err(FaultError::NoSkew);
    }
    let skew = ClockSkew { offset_ms: params.offset_ms.unwrap_or(0), drift_ppm: params.drift_ppm.unwrap_or(0) };
    if skew.offset_ms.unsigned_abs() > MAX_OFFSET_MS as u64 {
        return Err(FaultError::OffsetMs);
    }
    if !DRIFT_PPM.contains(&skew.drift_ppm) {
        return Err(FaultError::DriftPpm);
    }
    Ok(skew)
}

/// A fault on one node (a partition's side may hold more).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRequest {
    pub fault: Fault,
    pub node: String,
    pub layer: Layer,
}

impl FaultRequest {
    /// The fault `kind` with `params` on `node` (and, for partitions, the
    /// nodes `with` it), checked.
    pub fn new(
        kind: Kind,
        layer: Layer,
        node: String,
        with: Vec<String>,
        params: &Params,
    ) -> Result<FaultRequest, FaultError> {
        check_shares(params)?;
        check_narrow_settings(kind, layer, params)?;
        if layer == Layer::App && KERNEL_ONLY.contains(&kind) {
            return Err(FaultError::KernelOnly(kind));
        }
        if layer == Layer::Kernel && kind == Kind::Skew {
            return Err(FaultError::SkewNotKernel);
        }
        if !with.is_empty() && kind != Kind::Partition {
            return Err(FaultError::WithNotPartition);
        }
        let direction = params.direction.unwrap_or_default();
        let port = params.port.unwrap_or_default();
        if direction != CutDirection::Both && (kind != Kind::Partition || layer != Layer::Kernel) {
            return Err(FaultError::OneWayNotKernelPartition);
        }
        let fault = match kind {
            Kind::Crash => Fault::Crash { restart: !params.no_restart.unwrap_or(false) },
            Kind::Slow => Fault::Slow {
                slow_ms: params.slow_ms.unwrap_or(defaults::SLOW_MS),
                jitter: params.jitter_ms.map(|ms| Jitter { ms, dist: params.jitter_dist.unwrap_or_default() }),
                port,
            },
            Kind::Partition => {
                Fault::Partition { with, direction, clients: params.partition_clients.unwrap_or_default() }
            }
            Kind::Pause => Fault::Pause,
            Kind::Loss => Fault::Loss {
                pct: params.loss_pct.unwrap_or(defaults::LOSS_PCT),
                correlation_pct: params.loss_correlation_pct,
                port,
            },
            Kind::Bandwidth => Fault::Bandwidth { rate_kbit: params.rate_kbit.unwrap_or(defaults::RATE_KBIT) },
            Kind::Cpu => Fault::Cpu { pct: params.cpu_pct.unwrap_or(defaults::CPU_PCT) },
            Kind::Duplicate => Fault::Duplicate { pct: params.duplicate_pct.unwrap_or(defaults::DUPLICATE_PCT), port },
            Kind::Reorder => Fault::Reorder {
                pct: params.reorder_pct.unwrap_or(defaults::REORDER_PCT),
                slow_ms: params.slow_ms.unwrap_or(defaults::REORDER_SLOW_MS),
                port,
            },
            Kind::Corrupt => Fault::Corrupt { pct: params.corrupt_pct.unwrap_or(defaults::CORRUPT_PCT), port },
            Kind::Skew => Fault::Skew(clock_skew(params)?),
        };
        Ok(FaultRequest { fault, node, layer })
    }

    /// The target and the nodes on its side of a partition.
    pub fn targets(&self) -> Vec<String> {
        let with = match &self.fault {
            Fault::Partition { with, .. } => &with[..],
            _ => &[],
        };
        std::iter::once(&self.node).chain(with).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_settings_take_the_defaults() {
        let params = Params::default();
        let slow = FaultRequest::new(Kind::Slow, Layer::Kernel, "node1".into(), Vec::new(), &params).unwrap();
        assert_eq!(slow.fault, Fault::Slow { slow_ms: defaults::SLOW_MS, jitter: None, port: PortSelector::All });
        let reorder = FaultRequest::new(Kind::Reorder, Layer::Kernel, "node1".into(), Vec::new(), &params).unwrap();
        let expected =
            Fault::Reorder { pct: defaults::REORDER_PCT, slow_ms: defaults::REORDER_SLOW_MS, port: PortSelector::All };
        assert_eq!(reorder.fault, expected);
        let jittered = Params { jitter_ms: Some(20), ..Params::default() };
        let slow = FaultRequest::new(Kind::Slow, Layer::Kernel, "node1".into(), Vec::new(), &jittered).unwrap();
        let jitter = Some(Jitter { ms: 20, dist: JitterDist::Normal });
        assert_eq!(slow.fault, Fault::Slow { slow_ms: defaults::SLOW_MS, jitter, port: PortSelector::All });
        let crash = FaultRequest::new(Kind::Crash, Layer::App, "node1".into(), Vec::new(), &params).unwrap();
        assert_eq!(crash.fault, Fault::Crash { restart: true });
    }

    #[test]
    fn settings_that_make_no_fault_are_refused() {
        let new = |kind, layer, with: &[&str], params: Params| {
            let with = with.iter().map(|s| s.to_string()).collect();
            FaultRequest::new(kind, layer, "node1".into(), with, &params).unwrap_err()
        };
        let none_lost = Params { loss_pct: Some(0), ..Params::default() };
        assert_eq!(new(Kind::Loss, Layer::Kernel, &[], none_lost), FaultError::LossPct);
        assert_eq!(new(Kind::Slow, Layer::Kernel, &["node2"], Params::default()), FaultError::WithNotPartition);
        let loss_on_slow = Params { loss_pct: Some(5), ..Params::default() };
        assert_eq!(
            new(Kind::Slow, Layer::App, &[], loss_on_slow),
            FaultError::NotFor { setting: "loss_pct", applies_to: "loss" }
        );
        let restart_on_pause = Params { no_restart: Some(true), ..Params::default() };
        assert!(matches!(new(Kind::Pause, Layer::Kernel, &[], restart_on_pause), FaultError::NotFor { .. }));
        let slow_on_app = Params { slow_ms: Some(300), no_restart: Some(false), ..Params::default() };
        assert!(FaultRequest::new(Kind::Slow, Layer::App, "node1".into(), Vec::new(), &slow_on_app).is_ok());
        let one_way = Params { direction: Some(CutDirection::In), ..Params::default() };
        assert_eq!(new(Kind::Partition, Layer::App, &[], one_way), FaultError::OneWayNotKernelPartition);
        let jitter = Params { jitter_ms: Some(10), ..Params::default() };
        assert!(matches!(new(Kind::Loss, Layer::Kernel, &[], jitter.clone()), FaultError::NotFor { .. }));
        assert!(matches!(new(Kind::Slow, Layer::App, &[], jitter), FaultError::NotFor { .. }));
        let dist_alone = Params { jitter_dist: Some(JitterDist::Pareto), ..Params::default() };
        assert!(matches!(new(Kind::Slow, Layer::Kernel, &[], dist_alone), FaultError::NotFor { .. }));
        let peer = Params { port: Some(PortSelector::Peer), ..Params::default() };
        assert!(matches!(new(Kind::Partition, Layer::Kernel, &[], peer), FaultError::NotFor { .. }));
        let no_dup = Params { duplicate_pct: Some(0), ..Params::default() };
        assert_eq!(new(Kind::Duplicate, Layer::Kernel, &[], no_dup), FaultError::Pct("duplicate_pct"));
        let endless = Params { loss_correlation_pct: Some(100), ..Params::default() };
        assert_eq!(new(Kind::Loss, Layer::Kernel, &[], endless), FaultError::CorrelationPct);
        let total = Params { loss_correlation_pct: Some(50), loss_pct: Some(100), ..Params::default() };
        assert_eq!(new(Kind::Loss, Layer::Kernel, &[], total), FaultError::CorrelatedTotalLoss);
    }

    #[test]
    fn a_skew_is_app_level_and_takes_only_its_own_settings() {
        let new = |layer, params: Params| FaultRequest::new(Kind::Skew, layer, "node1".into(), Vec::new(), &params);
        let behind = Params { offset_ms: Some(-5000), ..Params::default() };
        let skew = ClockSkew { offset_ms: -5000, drift_ppm: 0 };
        assert_eq!(new(Layer::App, behind.clone()).unwrap().fault, Fault::Skew(skew));
        assert_eq!(new(Layer::Kernel, behind).unwrap_err(), FaultError::SkewNotKernel);
        let drift_only = Params { drift_ppm: Some(-20), ..Params::default() };
        assert_eq!(new(Layer::App, drift_only).unwrap().fault, Fault::Skew(ClockSkew { offset_ms: 0, drift_ppm: -20 }));
        assert_eq!(new(Layer::App, Params::default()).unwrap_err(), FaultError::NoSkew);
        let too_far = Params { offset_ms: Some(MAX_OFFSET_MS + 1), ..Params::default() };
        assert_eq!(new(Layer::App, too_far).unwrap_err(), FaultError::OffsetMs);
        let stopped = Params { drift_ppm: Some(-1_000_000), ..Params::default() };
        assert_eq!(new(Layer::App, stopped).unwrap_err(), FaultError::DriftPpm);
        let slow_too = Params { offset_ms: Some(1), slow_ms: Some(5), ..Params::default() };
        assert!(matches!(new(Layer::App, slow_too).unwrap_err(), FaultError::NotFor { setting: "slow_ms", .. }));
        let offset_on_slow = Params { offset_ms: Some(1), ..Params::default() };
        let refused = FaultRequest::new(Kind::Slow, Layer::App, "node1".into(), Vec::new(), &offset_on_slow);
        assert_eq!(refused.unwrap_err(), FaultError::NotFor { setting: "offset_ms", applies_to: "skew" });
    }
}
