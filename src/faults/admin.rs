//! Admin requests to one node, for the application-level faults and their
//! heals and probes.

use std::time::Duration;

use crate::cluster::running::{Cluster, Node};

/// An admin request to one node, from where the cluster is reachable.
pub fn admin(
    cluster: &Cluster,
    node: &Node,
    method: hyper::Method,
    route: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let path = format!("/admin/{route}");
    let addr = node.addr;
    cluster.reach(|| async move {
        let mut client = cluster.admin(node, Duration::from_secs(5));
        let body = body.map(|b| bytes::Bytes::from(b.to_string())).unwrap_or_default();
        let answer = client.send(method, &path, None, body).await?;
        anyhow::ensure!(answer.status.is_success(), "{path} on {addr}: {} {}", answer.status, answer.reason());
        answer.json().map_err(anyhow::Error::msg)
    })
}
