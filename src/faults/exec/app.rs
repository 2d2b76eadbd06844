//! Application-level faults: the node's own `/admin/fault` hooks.

use super::{ChangeError, Commands, Executor, Target};
use crate::api::admin::FaultState;
use crate::api::fault::{Backend, Undo};
use crate::cluster::running::Node;
use crate::faults::admin::{app_fault, AppFaultCall};
use crate::faults::journal;

/// The node delays every message it sends or handles by `slow_ms`.
pub struct AppSlow {
    pub slow_ms: u64,
}

impl Executor for AppSlow {
    fn backend(&self) -> Backend {
        Backend::AdminApi
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        heal_target_node(target)
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        Ok(vec![amend_faults(target, target.node, |faults| faults.slow_ms = self.slow_ms)?])
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        reported_faults(target)
    }
}

/// The heal of a fault the target node alone holds: its admin hooks cleared.
pub fn heal_target_node(target: &Target) -> anyhow::Result<Vec<Undo>> {
    target.running()?;
    Ok(vec![Undo::HealApp { node: target.name().to_owned() }])
}

/// Changes the application faults in force on `node` by `change`, keeping
/// the others (a skew and a slowdown of one node are two faults, and
/// applying one must not silently lift the other); returns the request as
/// a command.
pub fn amend_faults(target: &Target, node: &Node, change: impl FnOnce(&mut FaultState)) -> anyhow::Result<Vec<String>> {
    if node.id == target.node.id {
        held_by_node(target)?;
    }
    let mut faults = app_fault(target.cluster, node, AppFaultCall::Read)?;
    change(&mut faults);
    app_fault(target.cluster, node, AppFaultCall::Set(&faults))?;
    Ok(vec!["POST".into(), format!("http://{}/admin/fault", node.addr), serde_json::to_string(&faults)?])
}

/// Journals the target node's process as the fault's holder: a node keeps
/// its application faults in memory only, so once that process is gone
/// (crashed, restarted) the fault is too, and `fault list` and the driver
/// show it as lapsed instead of in force.
fn held_by_node(target: &Target) -> anyhow::Result<()> {
    let process = target.running()?;
    let holder = crate::cluster::launch::owned_process(target.name(), process, target.node.place.host_name());
    journal::amend(target.state, target.id, |record| record.held_by = Some(holder))?;
    Ok(())
}

/// What the target node says it applies.
pub fn reported_faults(target: &Target) -> anyhow::Result<String> {
    let now = app_fault(target.cluster, target.node, AppFaultCall::Read)?;
    Ok(format!("{} reports faults {}", target.name(), serde_json::to_string(&now)?))
}
