//! Readying the hosts of a cluster before its nodes start there: the very
//! dynabed binary running here, copied once into each host's `dir/bin`
//! under a name that identifies this build (a host that has it already is
//! not sent it again, and a host never runs another build), the cluster's
//! folder with one private folder per node, and the cluster files the
//! nodes read their admin token from.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::place::at_once;
use super::ssh::Ssh;
use crate::api::hosts::{Deployed, Host};

/// The binary running here, and the name it has on hosts:
/// `dynabed-<version>-<build>`, the build told by the file's size, inode
/// and modification time (hashing a debug binary of 200 MB would take
/// seconds; any rebuild changes the modification time).
pub fn this_binary() -> anyhow::Result<(String, PathBuf)> {
    let path = std::env::current_exe().context("locating the dynabed binary")?;
    let meta = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
    let build = [meta.len(), meta.ino(), meta.mtime() as u64, meta.mtime_nsec() as u64];
    let bytes: Vec<u8> = build.iter().flat_map(|n| n.to_le_bytes()).collect();
    let name = format!("dynabed-{}-{:016x}", env!("CARGO_PKG_VERSION"), xxhash_rust::xxh3::xxh3_64(&bytes));
    Ok((name, path))
}

/// The folder of cluster `prefix` on `host`: node data, logs and cluster files.
pub fn cluster_dir(host: &Host, prefix: &str) -> PathBuf {
    host.dir.join(prefix)
}

/// What one host is sent before its nodes start.
pub struct Delivery<'a> {
    /// The binary here, read only if the host lacks it.
    pub binary: &'a Path,
    /// The node folders to create (mode 0700).
    pub node_dirs: Vec<PathBuf>,
    /// Files to write, with their contents (mode 0600).
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

/// Readies every host at once; the first failure, naming its host.
pub fn deliver(deployed: &Deployed, deliveries: &[(&Host, Delivery)]) -> anyhow::Result<()> {
    at_once(deliveries, |(host, delivery)| {
        let ssh = Ssh::of(deployed, &host.name)?.without_agent();
        ready_host(&ssh, &deployed.binary_on(host), delivery)
    })?;
    Ok(())
}

fn ready_host(ssh: &Ssh, binary: &Path, delivery: &Delivery) -> anyhow::Result<()> {
    let has_binary = ssh.run(&["test".into(), "-x".into(), binary.display().to_string()], None).is_ok();
    if !has_binary {
        let bytes = std::fs::read(delivery.binary).with_context(|| format!("reading {}", delivery.binary.display()))?;
        ssh.write_file(binary, &bytes, "700")?;
    }
    let mut mkdir: Vec<String> = ["sh", "-c", r#"umask 077 && mkdir -p "$@""#, "sh"].map(str::to_owned).into();
    mkdir.extend(delivery.node_dirs.iter().map(|d| d.display().to_string()));
    ssh.run(&mkdir, None).context("making the node folders")?;
    for (path, bytes) in &delivery.files {
        ssh.write_file(path, bytes, "600")?;
    }
    Ok(())
}
