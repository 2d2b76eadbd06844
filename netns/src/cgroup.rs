//! CPU quotas for a set of processes, through a cgroup the caller owns.
//!
//! A `cpu` fault caps a node at a fraction of a core with the CFS bandwidth controller. Hosts
//! differ: this CI kernel binds `cpu` to a cgroup v1 hierarchy (`/sys/fs/cgroup/cpu`,
//! `cpu.cfs_quota_us`), while many distributions are cgroup v2 only (`cpu.max`). [`detect`]
//! picks whichever has the cpu controller. File operations are recorded in [`Applied`] in the
//! same argv shape as commands (`["mkdir", path]`, `["write", path, value]`,
//! `["rmdir", path]`) so callers can journal them.

use crate::command::{Applied, Argv};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The CFS period used for quotas (100 ms).
pub const PERIOD_US: u64 = 100_000;
const V1_ROOT: &str = "/sys/fs/cgroup/cpu";
const V2_ROOT: &str = "/sys/fs/cgroup";

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy with the cpu controller: {reason}")]
    Unsupported { reason: String },
    #[error("invalid cgroup name `{0}`: one path component, not `.` or `..`")]
    InvalidName(String),
    #[error("invalid CPU percent {0}: must be at least 1")]
    InvalidPercent(u32),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Which cgroup interface carries the cpu controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// `/sys/fs/cgroup/cpu/<g>/cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    V1,
    /// `/sys/fs/cgroup/<g>/cpu.max` ("quota period").
    V2,
}

/// Finds the cpu controller: cgroup v2 when the unified root lists `cpu`, else v1's cpu
/// hierarchy when it has CFS quotas. Returns the version and the hierarchy's root.
pub fn detect() -> Result<(CgroupVersion, PathBuf), CgroupError> {
    let v2 = Path::new(V2_ROOT);
    if let Ok(controllers) = fs::read_to_string(v2.join("cgroup.controllers")) {
        if controllers.split_whitespace().any(|c| c == "cpu") {
            return Ok((CgroupVersion::V2, v2.to_path_buf()));
        }
    }
    let v1 = Path::new(V1_ROOT);
    if v1.join("cpu.cfs_quota_us").exists() {
        return Ok((CgroupVersion::V1, v1.to_path_buf()));
    }
    let reason = format!("{V2_ROOT}/cgroup.controllers lacks cpu and {V1_ROOT}/cpu.cfs_quota_us does not exist");
    Err(CgroupError::Unsupported { reason })
}

/// Creates, sets and removes a throwaway group; returns the version that worked.
pub fn probe() -> Result<CgroupVersion, CgroupError> {
    let name = format!("dynabed-probe-{}", std::process::id());
    let (group, _) = CpuGroup::create(&name, 50)?;
    group.remove()?;
    Ok(group.version)
}

/// A cgroup under the cpu hierarchy's root, owned by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuGroup {
    pub version: CgroupVersion,
    pub path: PathBuf,
    parent: PathBuf,
}

impl CpuGroup {
    /// The group `name` (not created; e.g. to remove one recorded in a journal).
    pub fn open(name: &str) -> Result<Self, CgroupError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(CgroupError::InvalidName(name.to_string()));
        }
        let (version, root) = detect()?;
        Ok(Self { version, path: root.join(name), parent: root })
    }

    /// Creates `<root>/<name>` (existing is Ok) limited to `percent` % of one core.
    pub fn create(name: &str, percent: u32) -> Result<(Self, Applied), CgroupError> {
        let group = Self::open(name)?;
        let mut applied = Applied::none();
        if group.version == CgroupVersion::V2 {
            applied.extend(enable_cpu_controller(&group.parent)?);
        }
        if !group.path.is_dir() {
            fs::create_dir(&group.path).map_err(io_err("mkdir", &group.path))?;
            applied.commands.push(record(&["mkdir"], &group.path, None));
        }
        applied.extend(group.set_quota(percent)?);
        Ok((group, applied))
    }

    /// Sets the quota to `percent` % of one core (may exceed 100 on several cores).
    pub fn set_quota(&self, percent: u32) -> Result<Applied, CgroupError> {
        if percent == 0 {
            return Err(CgroupError::InvalidPercent(percent));
        }
        let quota = u64::from(percent) * PERIOD_US / 100;
        match self.version {
            CgroupVersion::V1 => {
                let mut applied = self.write("cpu.cfs_period_us", &PERIOD_US.to_string())?;
                applied.extend(self.write("cpu.cfs_quota_us", &quota.to_string())?);
                Ok(applied)
            }
            CgroupVersion::V2 => self.write("cpu.max", &format!("{quota} {PERIOD_US}")),
        }
    }

    /// Moves process `pid` (all its threads) into the group.
    pub fn add(&self, pid: u32) -> Result<Applied, CgroupError> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// The processes in the group.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let file = self.path.join("cgroup.procs");
        let text = fs::read_to_string(&file).map_err(io_err("read", &file))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Moves every process back to the parent group, then removes the group; absent is Ok.
    pub fn remove(&self) -> Result<Applied, CgroupError> {
        let mut applied = Applied::none();
        if !self.path.is_dir() {
            return Ok(applied);
        }
        for attempt in 0.. {
            for pid in self.pids()? {
                applied.extend(move_to(&self.parent, pid)?);
            }
            match fs::remove_dir(&self.path) {
                Ok(()) => break,
                // Processes still exiting keep the group busy for a moment.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 50 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(applied),
                Err(e) => return Err(io_err("rmdir", &self.path)(e)),
            }
        }
        applied.commands.push(record(&["rmdir"], &self.path, None));
        Ok(applied)
    }

    fn write(&self, file: &str, value: &str) -> Result<Applied, CgroupError> {
        write_file(&self.path.join(file), value)
    }
}

/// Moves `pid` into the group at `dir`; a process that has exited meanwhile is Ok.
fn move_to(dir: &Path, pid: u32) -> Result<Applied, CgroupError> {
    match write_file(&dir.join("cgroup.procs"), &pid.to_string()) {
        Err(CgroupError::Io { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => Ok(Applied::none()),
        other => other,
    }
}

/// cgroup v2: a child gets the cpu controller only when the parent delegates it.
fn enable_cpu_controller(parent: &Path) -> Result<Applied, CgroupError> {
    let file = parent.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).map_err(io_err("read", &file))?;
    if current.split_whitespace().any(|c| c == "cpu") {
        return Ok(Applied::none());
    }
    write_file(&file, "+cpu")
}

fn write_file(path: &Path, value: &str) -> Result<Applied, CgroupError> {
    fs::write(path, value).map_err(io_err("write", path))?;
    Ok(Applied::one(record(&["write"], path, Some(value))))
}

fn record(op: &[&str], path: &Path, value: Option<&str>) -> Argv {
    let mut argv: Argv = op.iter().map(|s| s.to_string()).collect();
    argv.push(path.display().to_string());
    argv.extend(value.map(str::to_string));
    argv
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throwaway::testing::{need_root, timing_lock};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A busy child process (`yes > /dev/null`) killed by its own pid when dropped.
    struct Busy(Child);

    impl Drop for Busy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Removes the group when dropped (also on failure).
    struct Cleanup(CpuGroup);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Err(e) = self.0.remove() {
                eprintln!("cgroup cleanup: {e}");
            }
        }
    }

    fn cpu_ticks(pid: u32) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// CPU used by `pid` over one second, in % of one core.
    fn cpu_percent(pid: u32) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let (t0, c0) = (Instant::now(), cpu_ticks(pid));
        std::thread::sleep(Duration::from_secs(1));
        let (c1, dt) = (cpu_ticks(pid), t0.elapsed().as_secs_f64());
        (c1 - c0) as f64 / hz / dt * 100.0
    }

    #[test]
    fn rejects_bad_names() {
        assert!(matches!(CpuGroup::open("a/b"), Err(CgroupError::InvalidName(_))));
        assert!(matches!(CpuGroup::open(".."), Err(CgroupError::InvalidName(_))));
    }

    #[test]
    fn quota_caps_a_busy_process() {
        if !need_root() {
            return;
        }
        let _timing = timing_lock();
        let version = match probe() {
            Ok(v) => v,
            Err(e) => panic!("cgroup probe failed: {e}"),
        };
        let mut command = Command::new("yes");
        command.stdout(Stdio::null());
        // Its own session, hence its own scheduling autogroup, so that the
        // top priority below puts it ahead of whatever else keeps the
        // machine busy: `free` then measures the process, not the load.
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            command.pre_exec(|| if libc::setsid() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
        }
        let busy = Busy(command.spawn().unwrap());
        let pid = busy.0.id();
        // SAFETY: setpriority has no memory preconditions.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, pid, -20) };
        assert_eq!(rc, 0, "setpriority: {}", std::io::Error::last_os_error());
        // Absent when the kernel has no autogroups; then the nice value above suffices.
        let _ = fs::write(format!("/proc/{pid}/autogroup"), "-20");
        let free = cpu_percent(pid);
        let name = format!("dynabed-test-{}", std::process::id());
        let (group, applied) = CpuGroup::create(&name, 10).unwrap();
        let cleanup = Cleanup(group.clone());
        assert!(applied.commands.iter().any(|c| c[0] == "mkdir"), "{applied:?}");
        group.add(pid).unwrap();
        assert_eq!(group.pids().unwrap(), vec![pid]);
        std::thread::sleep(Duration::from_millis(200));
        let capped = cpu_percent(pid);
        eprintln!("cgroup {version:?}: busy child {free:.1} % free, {capped:.1} % under a 10 % quota");
        assert!(free > 50.0, "uncapped busy loop used only {free:.1} %");
        assert!(capped <= 20.0, "capped busy loop used {capped:.1} %");
        let removed = group.remove().unwrap();
        assert!(removed.commands.iter().any(|c| c[0] == "rmdir"), "{removed:?}");
        assert!(!group.path.exists());
        assert_eq!(group.remove().unwrap(), Applied::none(), "removing an absent group is Ok");
        drop(cleanup);
        drop(busy);
    }
}
