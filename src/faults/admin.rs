//! A node's application-level fault hooks (`/admin/fault`), called from
//! where the cluster is reachable: to make, lift and probe the faults of
//! the application layer.

use std::time::Duration;

use anyhow::Context;

use crate::api::admin::FaultState;
use crate::cluster::running::{Cluster, Node};

/// What to ask of a node's fault hooks.
#[derive(Debug, Clone, Copy)]
pub enum AppFaultCall<'a> {
    /// Put these faults in force (replacing any before).
    Set(&'a FaultState),
    /// Lift every fault.
    Lift,
    /// Read the faults in force.
    Read,
}

/// Makes `call` on `node`; returns the faults in force after it.
pub fn app_fault(cluster: &Cluster, node: &Node, call: AppFaultCall) -> anyhow::Result<FaultState> {
    cluster.reach(|| async {
        let mut client = cluster.admin(node, Duration::from_secs(5));
        let answer = match call {
            AppFaultCall::Set(faults) => client.app_fault(faults).await,
            AppFaultCall::Lift => client.heal_app_fault().await,
            AppFaultCall::Read => client.app_faults().await,
        };
        answer.with_context(|| format!("/admin/fault on {} ({})", node.id, node.addr))
    })
}
