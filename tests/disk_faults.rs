//! The store when its disk fails it.
//!
//! A node whose storage engine lost acknowledged records — a journal cut
//! short or overwritten in the middle while the node was down — must never
//! issue a dot again: new writes through it are what quorum reads return,
//! and the node says, in `/status`, that it lost records. A node whose disk
//! fills up stops with the cause, instead of answering 500 forever while
//! looking alive.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::{ok, wait_until, TestCluster};
use dynabed::cluster::files;
use nix::sys::signal::Signal;

const KEYS: usize = 200;
const REWRITTEN: std::ops::Range<usize> = 150..200;

fn key(i: usize) -> String {
    format!("jd{i:03}")
}

/// The engine's journal files under a data directory.
fn journals(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.parent().and_then(Path::file_name).is_some_and(|name| name == "journals")
                || path.extension().is_some_and(|e| e == "jnl")
            {
                found.push(path);
            }
        }
    }
    found
}

/// Bytes before the zero-filled tail a journal is preallocated with.
fn written_length(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1)
}

/// The checkpoint number the node's identity file records.
fn recorded_checkpoint(data_dir: &Path) -> u64 {
    let text = std::fs::read(data_dir.join("identity.json")).unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&text).ok().and_then(|v| v["checkpoint"].as_u64()).unwrap_or(0)
}

/// A W=3 write through node2 that must be acknowledged.
async fn put(cluster: &TestCluster, key: &str, value: String) {
    ok(&cluster.client("node2").put(key, Bytes::from(value), None, Some(3)).await.unwrap());
}

enum Damage {
    CutInHalf,
    OverwriteMiddle,
}

async fn new_writes_survive(slot: u8, damage: Damage) {
    let cluster = TestCluster::up(slot, 3, "fjall", &[]);
    let data_dir = files::read_unlocked(&cluster.procs).unwrap().procs["node2"].data_dir.clone();
    for i in 0..KEYS {
        put(&cluster, &key(i), format!("old-{i:03}")).await;
    }
    // A checkpoint after the writes: their loss is then detectable.
    let before = recorded_checkpoint(&data_dir);
    wait_until("node2 checkpoints after the writes", Duration::from_secs(20), || async {
        recorded_checkpoint(&data_dir) > before
    })
    .await;
    cluster.signal("node2", Signal::SIGKILL);

    let journal = journals(&data_dir).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    let journal = journal.expect("node2 has a journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    let written = written_length(&bytes);
    match damage {
        Damage::CutInHalf => bytes.truncate(written / 2),
        Damage::OverwriteMiddle => bytes[written / 2..written / 2 + 64].fill(0x5a),
    }
    std::fs::write(&journal, &bytes).unwrap();

    dynabed::cluster::manage::restart(&cluster.procs, "node2").unwrap();
    let log = files::read_unlocked(&cluster.procs).unwrap().meta.unwrap().nodes["node2"].log.clone().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.client("node2").status().await.ok();
        if status.as_ref().is_some_and(|s| s.members.len() == 3 && s.down().next().is_none()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node2 did not come back ({status:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in REWRITTEN {
        put(&cluster, &key(i), format!("new-{i:03}")).await;
    }
    for i in REWRITTEN {
        let read = cluster.client("node1").get(&key(i), Some(3)).await.unwrap();
        let values = ok(&read).values().unwrap();
        assert!(
            values.contains(&Bytes::from(format!("new-{i:03}"))),
            "the acknowledged W=3 write to {} is gone: an R=3 read answers {values:?}",
            key(i)
        );
    }
    let status = cluster.status("node2").await;
    assert!(
        status["storage_lost_records"].is_object(),
        "node2 does not report the records its journal lost: {}",
        status["storage_lost_records"]
    );
}

#[tokio::test]
async fn a_journal_cut_in_half_reissues_no_dot() {
    new_writes_survive(15, Damage::CutInHalf).await;
}

#[tokio::test]
async fn a_journal_overwritten_in_the_middle_reissues_no_dot() {
    new_writes_survive(16, Damage::OverwriteMiddle).await;
}

/// A tmpfs of a few MiB, unmounted when dropped (also when the test fails).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let options = format!("size={mib}m,mode=0700");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("mounting a tmpfs");
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {e}", self.dir.path().display());
        }
    }
}

#[tokio::test]
async fn a_full_disk_stops_the_node_with_its_cause() {
    if !common::privileged("a_full_disk_stops_the_node_with_its_cause") {
        return;
    }
    let mut cluster = TestCluster::up(17, 2, "memory", &[]);
    let disk = SmallDisk::mount(96);
    let args: Vec<String> = ["--port", "60002", "--host", "127.0.17.4", "--peer_port", "61002", "--data_dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([disk.dir.path().join("node3").to_string_lossy().into_owned(), "--N".into(), "3".into()])
        .collect();
    cluster.add_node("node3", &args).await;
    let record = dynabed::cluster::manage::node_record(&cluster.procs, "node3").unwrap();
    let value = Bytes::from(vec![b'x'; 1 << 20]);
    // Until the node refuses a write or stops answering.
    for i in 0..200 {
        let put = cluster.client("node3").put(&format!("fill{i}"), value.clone(), None, Some(1)).await;
        match put {
            Ok(answer) if answer.status.is_success() => continue,
            // The engine may have failed first in a background flush; then
            // it refuses the write as poisoned, and the log names the cause.
            Ok(answer) => assert!(
                ["No space left on device", "Poisoned"].iter().any(|cause| answer.reason().contains(cause)),
                "{}",
                answer.reason()
            ),
            Err(_) => {}
        }
        break;
    }
    assert!(record.wait_gone(Duration::from_secs(20)), "node3 keeps running with a storage engine that refuses writes");
    let log = std::fs::read_to_string(cluster.dir.path().join("node3.log")).unwrap();
    assert!(
        log.contains("can no longer make writes durable") && log.contains("No space left on device"),
        "the log says why it stopped:\n{log}"
    );
}
