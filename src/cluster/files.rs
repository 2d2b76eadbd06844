//! The cluster files: `cluster_procs.json` (node entries only, in the seed's
//! format, so a consumer written for the seed can iterate it) and
//! `cluster_procs.meta.json` beside it (cluster-wide settings, the admin
//! token and each node's command line; mode 0600).
//!
//! Both are only ever changed under an exclusive lock on a third file and
//! rewritten atomically (write, then rename), so concurrent node
//! registrations and restarts never lose an entry or expose half a file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use crate::api::cluster::{Meta, NodeEntry};

/// Both files, read together under the lock.
#[derive(Debug, Clone)]
pub struct ClusterFiles {
    pub procs: BTreeMap<String, NodeEntry>,
    pub meta: Option<Meta>,
}

pub fn meta_path(procs: &Path) -> PathBuf {
    let name = procs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    procs.with_file_name(format!("{stem}.meta.json"))
}

fn lock_path(procs: &Path) -> PathBuf {
    let name = procs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    procs.with_file_name(format!(".{name}.lock"))
}

/// Exclusive access to the cluster files while held.
pub struct Locked {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Locked {
    pub fn acquire(procs: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = procs.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let lock = lock_path(procs);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock)
            .with_context(|| format!("opening lock file {}", lock.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", lock.display()))?;
        Ok(Locked { path: procs.to_owned(), _lock: lock })
    }

    pub fn read(&self) -> anyhow::Result<ClusterFiles> {
        read_unlocked(&self.path)
    }

    pub fn write(&self, files: &ClusterFiles) -> anyhow::Result<()> {
        if let Some(meta) = &files.meta {
            write_atomically(&meta_path(&self.path), &serde_json::to_vec_pretty(meta)?, 0o600)?;
        }
        write_atomically(&self.path, &procs_json(&files.procs)?, 0o644)
    }

    /// Removes both files (the cluster is gone). The lock file stays:
    /// removing it while others may be waiting on it would let two holders
    /// in at once.
    pub fn remove(&self) -> anyhow::Result<()> {
        for path in [meta_path(&self.path), self.path.clone()] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads the files without the lock: a reader sees either the old or the
/// new version of each, never half of one.
pub fn read_unlocked(procs: &Path) -> anyhow::Result<ClusterFiles> {
    let procs_map = match fs::read(procs) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a cluster file", procs.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", procs.display())),
    };
    let meta_file = meta_path(procs);
    let meta = match fs::read(&meta_file) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a cluster meta file", meta_file.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", meta_file.display())),
    };
    Ok(ClusterFiles { procs: procs_map, meta })
}

/// Entries in natural order (node2 before node10), as people expect.
fn procs_json(procs: &BTreeMap<String, NodeEntry>) -> anyhow::Result<Vec<u8>> {
    let mut entries: Vec<_> = procs.iter().collect();
    entries.sort_by_key(|(name, _)| natural_key(name));
    let mut map = serde_json::Map::new();
    for (name, entry) in entries {
        map.insert(name.clone(), serde_json::to_value(entry)?);
    }
    Ok(serde_json::to_vec_pretty(&map)?)
}

pub fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (stem.to_owned(), number.parse().unwrap_or(0))
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.write_all(b"\n"))
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::Mode;

    fn entry(pid: u32) -> NodeEntry {
        NodeEntry {
            pid,
            port: 60000,
            host: "127.0.0.2".into(),
            peer_port: 61000,
            netns: None,
            data_dir: "d".into(),
            ssh: None,
        }
    }

    #[test]
    fn meta_sits_beside_the_procs_file() {
        assert_eq!(meta_path(Path::new("/x/cluster_procs.json")), Path::new("/x/cluster_procs.meta.json"));
        assert_eq!(meta_path(Path::new("c")), Path::new("c.meta.json"));
    }

    #[test]
    fn roundtrip_in_seed_format_and_natural_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster_procs.json");
        let locked = Locked::acquire(&path).unwrap();
        let procs =
            [("node10", 10), ("node2", 2), ("node1", 1)].map(|(n, p)| (n.to_string(), entry(p))).into_iter().collect();
        locked.write(&ClusterFiles { procs, meta: None }).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let order: Vec<usize> =
            ["\"node1\"", "\"node2\"", "\"node10\""].iter().map(|n| text.find(n).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(raw["node2"]["pid"], 2);
        assert_eq!(raw["node2"]["port"], 60000);
        assert_eq!(locked.read().unwrap().procs.len(), 3);
    }

    #[test]
    fn meta_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let meta = Meta {
            n: 3,
            partitions: 256,
            mode: Mode::Loopback,
            prefix: "t".into(),
            client_netns: None,
            admin_token: "secret".into(),
            nodes: BTreeMap::new(),
            hosts: None,
        };
        Locked::acquire(&path).unwrap().write(&ClusterFiles { procs: BTreeMap::new(), meta: Some(meta) }).unwrap();
        let mode = fs::metadata(meta_path(&path)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn fuzz_cluster_files() {
        let procs = r#"{"node1": {"pid": 12345, "port": 60000, "host": "198.18.0.2", "peer_port": 61000, "netns": "dyb-n1", "data_dir": "/tmp/d1"}, "node10": {"pid": 2, "port": 60009, "host": "127.0.0.10", "peer_port": 61009, "netns": null, "data_dir": "d"}}"#;
        let meta = r#"{"n": 3, "partitions": 256, "mode": "netns", "prefix": "dyb", "client_netns": "dyb-client", "admin_token": "x", "nodes": {"node1": {"argv": ["dynabed", "node"], "start_time": 5, "log": null}}}"#;
        crate::fuzzing::run("cluster files", crate::fuzzing::json_near(&[procs, meta]), |text| {
            if let Ok(procs) = serde_json::from_str::<std::collections::BTreeMap<String, NodeEntry>>(&text) {
                for (name, entry) in &procs {
                    let _ = natural_key(name);
                    let _ = crate::cluster::running::client_addr(entry);
                }
            }
            let _ = serde_json::from_str::<Meta>(&text);
        });
    }
}
