//! Application-level faults: the node's own `/admin/fault` hooks.

use super::{ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, Undo};
use crate::cluster::running::Node;
use crate::faults::admin::admin;

/// The node delays every message it sends or handles by `slow_ms`.
pub struct AppSlow {
    pub slow_ms: u64,
}

impl Executor for AppSlow {
    fn backend(&self) -> Backend {
        Backend::AdminApi
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.running()?;
        Ok(vec![Undo::HealApp { node: target.name().to_owned() }])
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        Ok(vec![post_fault(target, target.node, serde_json::json!({ "slow_ms": self.slow_ms }))?])
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        reported_faults(target)
    }
}

/// `POST /admin/fault` with `body` to `entry`; returns the request as a command.
pub fn post_fault(target: &Target, node: &Node, body: serde_json::Value) -> anyhow::Result<Vec<String>> {
    admin(target.cluster, node, hyper::Method::POST, "fault", Some(body.clone()))?;
    Ok(vec!["POST".into(), format!("http://{}/admin/fault", node.addr), body.to_string()])
}

/// What the target node says it applies.
pub fn reported_faults(target: &Target) -> anyhow::Result<String> {
    let now = admin(target.cluster, target.node, hyper::Method::GET, "fault", None)?;
    Ok(format!("{} reports faults {now}", target.name()))
}
