//! Named network namespaces, compatible with iproute2.
//!
//! A namespace named `NAME` is kept alive by a bind mount of its nsfs inode
//! on `/run/netns/NAME`, exactly as `ip netns add` does, so `ip netns exec
//! NAME ...`, `ip netns list` and `ip netns del` work on ours and ours on
//! theirs. No process has to stay inside a namespace to keep it.
//!
//! Only network namespaces are involved: a thread that enters one keeps the
//! process's mount namespace, so `/sys` still shows the host's devices.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::error::{Error, Result};

/// Where iproute2 keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Longest namespace name accepted. iproute2 allows up to NAME_MAX; a short
/// bound keeps names readable in logs and error messages.
const MAX_NAME_LEN: usize = 64;

/// Serialises the one-time preparation of `/run/netns` inside this process,
/// so two threads never both bind-mount it onto itself.
static RUN_DIR_SETUP: Mutex<()> = Mutex::new(());

/// The file that holds namespace `name` (`/run/netns/NAME`); it is what
/// `spawn_in` and `run_in` open to enter the namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Checks a namespace name before it becomes a path: only `[A-Za-z0-9._-]`,
/// not `.` or `..`, at most 64 bytes — so a name can never escape
/// `/run/netns` or need quoting.
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| Err(Error::InvalidNamespaceName { name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("longer than 64 bytes");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are not names");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return invalid("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// Creates the network namespace `name` and pins it on `/run/netns/NAME`.
///
/// The namespace is made by `unshare(CLONE_NEWNET)` on a dedicated thread
/// (so the caller's thread never changes namespace), whose
/// `/proc/thread-self/ns/net` is then bind-mounted on the pin file. Fails
/// with [`Error::NamespaceExists`] if the name is taken. The new namespace
/// has only `lo`, and it is down.
pub fn create(name: &str) -> Result<()> {
    validate_name(name)?;
    prepare_run_dir(name)?;
    let pin = path(name);
    create_pin_file(name, &pin)?;
    let outcome = thread::scope(|s| {
        s.spawn(|| unshare_and_pin(name, &pin)).join().unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    });
    if outcome.is_err() {
        // Leave nothing half-made behind; the first error is the one to report.
        let _ = fs::remove_file(&pin);
    }
    outcome
}

/// Deletes the namespace `name`: detaches its bind mount and removes the pin
/// file. Idempotent: a namespace that does not exist is not an error.
///
/// The kernel frees the namespace itself (and the links inside it)
/// asynchronously, once no process, thread or open fd refers to it any more;
/// the name disappears from [`list`] at once.
pub fn delete(name: &str) -> Result<()> {
    validate_name(name)?;
    let pin = path(name);
    match umount2(&pin, MntFlags::MNT_DETACH) {
        // EINVAL: the file is there but nothing is mounted on it (a half-made
        // namespace); ENOENT: nothing at all. Both still need the unlink below.
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(ns_err(name, "unmount /run/netns/NAME", e.into())),
    }
    match fs::remove_file(&pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ns_err(name, "remove /run/netns/NAME", e)),
    }
}

/// Whether `/run/netns/NAME` holds a live namespace (an nsfs bind mount,
/// not just a leftover empty file).
pub fn exists(name: &str) -> bool {
    validate_name(name).is_ok() && statfs(&path(name)).is_ok_and(|st| st.filesystem_type() == NSFS_MAGIC)
}

/// Names of every namespace in `/run/netns` (ours and anyone else's, as
/// `ip netns list` shows them), sorted. No `/run/netns` means none.
pub fn list() -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ns_err("*", "read /run/netns", e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ns_err("*", "read /run/netns", e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// The inode number of namespace `name` — the identity to compare with
/// `stat /proc/PID/ns/net` to learn whether a process is inside it.
pub fn inode(name: &str) -> Result<u64> {
    let file = open(name)?;
    file.metadata().map(|m| m.ino()).map_err(|e| ns_err(name, "stat /run/netns/NAME", e))
}

/// Opens `/run/netns/NAME` for `setns`. The fd keeps the namespace alive
/// while it is open, even if the namespace is deleted meanwhile.
pub fn open(name: &str) -> Result<File> {
    validate_name(name)?;
    File::open(path(name)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NamespaceNotFound { namespace: name.to_owned() },
        _ => ns_err(name, "open /run/netns/NAME", e),
    })
}

/// Moves the calling thread into namespace `name` for the rest of its life:
/// for a thread that will keep serving there (the delay line's reader), or
/// for a still single-threaded process before it starts any other thread
/// (threads it creates afterwards inherit the namespace).
pub fn enter(name: &str) -> Result<()> {
    let ns = open(name)?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(name, "setns into the namespace", e.into()))
}

/// Runs `f` on a fresh OS thread that has entered namespace `name`, and
/// returns its result; a panic in `f` is resumed on the caller's thread.
///
/// This is how anything namespace-bound is created: a socket (netlink,
/// TCP, ...) belongs to the namespace its creating thread was in, and keeps
/// belonging to it wherever it is used afterwards. Create tokio runtimes
/// for a namespace inside `f` too (a current-thread runtime stays on this
/// thread; worker threads of a multi-thread runtime would NOT inherit the
/// namespace). The thread ends when `f` returns, so no thread is ever
/// returned to a pool in the wrong namespace.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let ns = open(name)?;
    thread::scope(|s| {
        s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(name, "setns into the namespace", e.into()))?;
            drop(ns);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    })
}

/// Makes `/run/netns` exist and be a shared mount point, as iproute2 does,
/// so that pins made here propagate to other mount namespaces sharing it
/// (and pins made in them propagate here).
fn prepare_run_dir(name: &str) -> Result<()> {
    let _guard = RUN_DIR_SETUP.lock().unwrap_or_else(|p| p.into_inner());
    fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| ns_err(name, "create /run/netns", e))?;
    let make_shared =
        || mount::<str, str, str, str>(None, NETNS_RUN_DIR, Some("none"), MsFlags::MS_SHARED | MsFlags::MS_REC, None);
    match make_shared() {
        Ok(()) => Ok(()),
        // EINVAL: /run/netns is not a mount point yet. Bind it onto itself,
        // then it can be made shared.
        Err(nix::errno::Errno::EINVAL) => {
            mount::<str, str, str, str>(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(|e| ns_err(name, "bind-mount /run/netns onto itself", e.into()))?;
            make_shared().map_err(|e| ns_err(name, "make /run/netns a shared mount", e.into()))
        }
        Err(e) => Err(ns_err(name, "make /run/netns a shared mount", e.into())),
    }
}

/// Creates the empty file the namespace will be bind-mounted on; O_EXCL
/// makes "name already taken" race-free.
fn create_pin_file(name: &str, pin: &Path) -> Result<()> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(0o000).open(pin).map(drop).map_err(|e| {
        match e.kind() {
            io::ErrorKind::AlreadyExists => Error::NamespaceExists { namespace: name.to_owned() },
            _ => ns_err(name, "create /run/netns/NAME", e),
        }
    })
}

/// Body of the dedicated thread: a new network namespace for this thread
/// only, bind-mounted on the pin file so it outlives the thread.
fn unshare_and_pin(name: &str, pin: &Path) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(name, "unshare(CLONE_NEWNET)", e.into()))?;
    let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
    mount::<str, Path, str, str>(Some(own.as_str()), pin, Some("none"), MsFlags::MS_BIND, None)
        .map_err(|e| ns_err(name, "bind-mount the new namespace on /run/netns/NAME", e.into()))
}

fn ns_err(name: &str, action: &'static str, source: io::Error) -> Error {
    Error::Namespace { namespace: name.to_owned(), action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_need_quoting_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b", &"x".repeat(65)] {
            assert!(matches!(validate_name(bad), Err(Error::InvalidNamespaceName { .. })), "{bad:?} accepted");
        }
        for good in ["dyb-n1", "nt123-4", "a.b_c", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn run_in_reports_a_missing_namespace_by_name() {
        match run_in("nt-surely-missing-namespace", || ()) {
            Err(Error::NamespaceNotFound { namespace }) => {
                assert_eq!(namespace, "nt-surely-missing-namespace")
            }
            other => panic!("expected NamespaceNotFound, got {other:?}"),
        }
    }

    #[test]
    fn deleting_a_missing_namespace_is_ok() {
        // umount2 needs CAP_SYS_ADMIN even on a path that does not exist.
        if !crate::has_netns_capabilities() {
            eprintln!("skipped: needs CAP_NET_ADMIN and CAP_SYS_ADMIN");
            return;
        }
        assert!(delete("nt-surely-missing-namespace").is_ok());
    }
}
