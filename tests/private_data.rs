//! Node data, journals and logs are closed to other local users, on
//! loopback clusters (no privileges needed).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::TestCluster;
use dynabed::cluster::files;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Each node's data folder, one file the store wrote in it, and its log.
fn node_paths(cluster: &TestCluster) -> Vec<(PathBuf, PathBuf, PathBuf)> {
    let found = files::read_unlocked(&cluster.procs).unwrap();
    let meta = found.meta.expect("a meta file");
    found
        .procs
        .iter()
        .map(|(id, entry)| {
            let data = entry.data_dir.clone();
            let stored = first_file(&data).unwrap_or_else(|| panic!("{id} stored nothing in {}", data.display()));
            let log = meta.nodes[id].log.clone().unwrap_or_else(|| panic!("{id} has no log"));
            (data, stored, log)
        })
        .collect()
}

fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    entries.iter().find(|p| p.is_file()).cloned().or_else(|| entries.iter().find_map(|p| first_file(p)))
}

/// The path itself or a folder above it, below `top`, has no group or other bits.
fn closed_below(path: &Path, top: &Path) -> bool {
    path.ancestors().take_while(|p| *p != top && p.starts_with(top)).any(|p| mode(p) & 0o077 == 0)
}

#[test]
fn the_default_data_root_is_private_and_holds_every_node_folder_store_and_log() {
    let cluster = TestCluster::up(73, 3, "fjall", &[]);
    let top = cluster.dir.path();
    let root = top.join("dynabed-data").join("t73");
    assert_eq!(mode(&root), 0o700, "the data root");
    for (data, stored, log) in node_paths(&cluster) {
        for path in [&data, &stored, &log] {
            assert!(path.starts_with(&root), "{} is in the data root", path.display());
            assert!(closed_below(path, top), "{} is closed to other users", path.display());
        }
        assert_eq!(format!("{:o} {:o}", mode(&data), mode(&log)), "700 600", "{} and its log", data.display());
    }
}

#[test]
fn a_data_root_named_by_hand_is_left_as_it_was_and_the_node_folders_and_logs_in_it_are_private() {
    let shared = tempfile::tempdir().unwrap();
    fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // A node folder an earlier version left open.
    let left_open = shared.path().join("node1");
    fs::create_dir(&left_open).unwrap();
    fs::set_permissions(&left_open, fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = TestCluster::up(74, 1, "fjall", &["--data_root", shared.path().to_str().unwrap()]);
    assert_eq!(mode(shared.path()), 0o755, "a folder named by hand is not ours to change");
    let nodes = node_paths(&cluster);
    assert_eq!(nodes.len(), 1);
    for (data, stored, log) in nodes {
        assert_eq!(data, left_open);
        assert_eq!(format!("{:o} {:o}", mode(&data), mode(&log)), "700 600", "{} and its log", data.display());
        assert!(stored.starts_with(&data), "{} is in the private node folder", stored.display());
    }
}
