//! What a fault is, kind by kind, with its settings and their defaults in
//! one place. `dynabed fault KIND` flags and plan-file events both become a
//! [`FaultRequest`] through [`FaultRequest::new`], so both are checked by
//! the same code.

use crate::api::fault::{Clients, CutDirection, Kind, Layer, Params};

/// The defaults of every fault setting (flags, plan files and seed flags).
pub mod defaults {
    pub const SLOW_MS: u64 = 200;
    pub const LOSS_PCT: u8 = 20;
    pub const RATE_KBIT: u64 = 1000;
    pub const CPU_PCT: u32 = 10;
}

/// One fault with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// SIGKILL; healing restarts the node when `restart`.
    Crash { restart: bool },
    /// Adds `slow_ms` to each round trip through the node.
    Slow { slow_ms: u64 },
    /// Splits the target and `with` from the rest of the cluster.
    Partition { with: Vec<String>, direction: CutDirection, clients: Clients },
    /// SIGSTOP; healing sends SIGCONT.
    Pause,
    /// Drops `pct` % of the packets from and to the node, each direction.
    Loss { pct: u8 },
    /// Limits the node's link to `rate_kbit`, each direction.
    Bandwidth { rate_kbit: u64 },
    /// Limits the node to `pct` % of one core.
    Cpu { pct: u32 },
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
        }
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
        if params.loss_pct.is_some_and(|p| p == 0 || p > 100) {
            return Err(FaultError::LossPct);
        }
        if !with.is_empty() && kind != Kind::Partition {
            return Err(FaultError::WithNotPartition);
        }
        let direction = params.direction.unwrap_or_default();
        if direction != CutDirection::Both && (kind != Kind::Partition || layer != Layer::Kernel) {
            return Err(FaultError::OneWayNotKernelPartition);
        }
        let fault = match kind {
            Kind::Crash => Fault::Crash { restart: !params.no_restart.unwrap_or(false) },
            Kind::Slow => Fault::Slow { slow_ms: params.slow_ms.unwrap_or(defaults::SLOW_MS) },
            Kind::Partition => {
                Fault::Partition { with, direction, clients: params.partition_clients.unwrap_or_default() }
            }
            Kind::Pause => Fault::Pause,
            Kind::Loss => Fault::Loss { pct: params.loss_pct.unwrap_or(defaults::LOSS_PCT) },
            Kind::Bandwidth => Fault::Bandwidth { rate_kbit: params.rate_kbit.unwrap_or(defaults::RATE_KBIT) },
            Kind::Cpu => Fault::Cpu { pct: params.cpu_pct.unwrap_or(defaults::CPU_PCT) },
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
        assert_eq!(slow.fault, Fault::Slow { slow_ms: defaults::SLOW_MS });
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
        let one_way = Params { direction: Some(CutDirection::In), ..Params::default() };
        assert_eq!(new(Kind::Partition, Layer::App, &[], one_way), FaultError::OneWayNotKernelPartition);
    }
}
