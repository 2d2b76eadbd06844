//! The seed's flow: nodes started one by one by hand (`dynabed node --port P
//! --id ID`), each writing its own entry into `cluster_procs.json` and
//! finding its peers there.

use std::collections::BTreeMap;

use anyhow::bail;
use rand::distr::{Alphanumeric, SampleString};

use super::files::{ClusterFiles, Locked};
use crate::api::cluster::{Meta, Mode, NodeEntry, NodeMeta};
use crate::node::NodeConfig;
use netns::process::Spawned as ProcessRecord;

/// Prepares a node to join its cluster and returns the admin token.
///
/// With `--seeds`, the node was launched by `cluster up` (or by hand with
/// explicit seeds): it only reads the token, if the meta file exists.
/// Without seeds it registers itself under the lock — creating the meta
/// file with a fresh token if it is the first node — and takes every other
/// registered node as a seed.
pub fn join(config: &mut NodeConfig) -> anyhow::Result<Option<String>> {
    if !config.seeds.is_empty() {
        let files = super::files::read_unlocked(&config.cluster_procs)?;
        return Ok(files.meta.map(|m| m.admin_token));
    }
    let locked = Locked::acquire(&config.cluster_procs)?;
    let ClusterFiles { mut procs, meta } = locked.read()?;
    let mut meta = meta.unwrap_or_else(|| new_meta(config));
    if meta.n != config.n || meta.partitions != config.partitions {
        bail!(
            "{} describes a cluster with N={} and {} partitions; this node was started with --N {} --partitions {}",
            config.cluster_procs.display(),
            meta.n,
            meta.partitions,
            config.n,
            config.partitions
        );
    }
    config.seeds = procs
        .iter()
        .filter(|(id, _)| **id != config.id)
        .filter_map(|(_, e)| format!("{}:{}", e.host, e.peer_port).parse().ok())
        .collect();
    let me = ProcessRecord::of(std::process::id()).expect("this process is running");
    procs.insert(
        config.id.clone(),
        NodeEntry {
            pid: me.pid,
            port: config.port,
            host: config.host.to_string(),
            peer_port: config.peer_port(),
            netns: None,
            data_dir: std::path::absolute(config.data_dir())?,
            ssh: None,
        },
    );
    meta.nodes.insert(
        config.id.clone(),
        NodeMeta { argv: std::env::args().collect(), start_time: me.start_time, log: None, host: None },
    );
    let token = meta.admin_token.clone();
    locked.write(&ClusterFiles { procs, meta: Some(meta) })?;
    Ok(Some(token))
}

fn new_meta(config: &NodeConfig) -> Meta {
    Meta {
        n: config.n,
        partitions: config.partitions,
        mode: Mode::Loopback,
        prefix: "manual".into(),
        client_netns: None,
        admin_token: new_token(),
        nodes: BTreeMap::new(),
        hosts: None,
    }
}

pub fn new_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}
