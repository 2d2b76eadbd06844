//! Admin requests to one node, for the application-level faults and their
//! heals and probes.

use std::time::Duration;

use crate::api::cluster::{Meta, NodeEntry};
use crate::client::Client;
use crate::cluster::launch::client_addr;
use crate::cluster::reach::reach;

/// An admin request to one node, from where the cluster is reachable.
pub fn admin(
    meta: &Meta,
    entry: &NodeEntry,
    method: hyper::Method,
    route: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let addr = client_addr(entry)?;
    let token = meta.admin_token.clone();
    let path = format!("/admin/{route}");
    reach(meta.client_netns.as_deref(), || async move {
        let mut client = Client::new(addr).with_token(Some(token)).with_timeout(Duration::from_secs(5));
        let body = body.map(|b| bytes::Bytes::from(b.to_string())).unwrap_or_default();
        let answer = client.send(method, &path, None, body).await?;
        anyhow::ensure!(answer.status.is_success(), "{path} on {addr}: {} {}", answer.status, answer.reason());
        answer.json().map_err(anyhow::Error::msg)
    })
}
