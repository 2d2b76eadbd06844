//! The checks that differ inside a container: CI runs dynabed in privileged
//! containers (docker, podman, Kubernetes pods), whose mounts, cgroups,
//! limits and iptables binary are not the host's.
//!
//! Each check reads what the process sees (mount table, cgroup files,
//! limits) and judges it with a pure function, so that the judgement can be
//! tested against situations made to fail; a failure says why and what to
//! change (the flag for `docker run`, the mount, the capability).

use std::path::Path;
use std::process::Command;

use super::{Failed, Scratch};

/// Descriptors a node holds besides its connections: engine files, the two
/// listening sockets, epoll, the log, pipes (measured: 38 on an idle node
/// with fjall), with room to spare.
const NODE_BASE_FDS: u64 = 64;
/// Client connections a node must be able to accept under a driver at
/// concurrency 256 on every node.
const NODE_CLIENT_FDS: u64 = 256;
/// The largest cluster `cluster up` is measured at (the scale bench).
const LARGEST_CLUSTER: u64 = 100;
/// Threads of one node (tokio workers, blocking pool at rest, the engine's
/// flushers and compactors; measured: 11 on an idle fjall node).
const NODE_THREADS: u64 = 16;

/// Which container runtime this process runs under, and from what evidence.
pub fn runtime(_: &mut Scratch) -> Result<String, Failed> {
    Ok(match detect(Path::new("/"), std::env::var("container").ok(), &read("/proc/1/cgroup")) {
        Some((kind, evidence)) => format!("inside a {kind} container ({evidence})"),
        None => "not in a container (no /run/.containerenv, /.dockerenv, $container or runtime cgroup)".into(),
    })
}

/// The runtime and the evidence for it; `None` outside containers.
fn detect(root: &Path, env_container: Option<String>, pid1_cgroup: &str) -> Option<(String, String)> {
    if root.join("run/.containerenv").exists() {
        return Some(("podman".into(), "/run/.containerenv".into()));
    }
    if root.join(".dockerenv").exists() {
        return Some(("docker".into(), "/.dockerenv".into()));
    }
    if let Some(kind) = env_container.filter(|k| !k.is_empty()) {
        return Some((kind, "$container".into()));
    }
    ["kubepods", "docker", "libpod", "containerd", "lxc"]
        .into_iter()
        .find(|runtime| pid1_cgroup.contains(runtime))
        .map(|runtime| (runtime.to_string(), "/proc/1/cgroup".into()))
}

/// `ip netns add` makes `/run/netns` a shared mount so that namespaces are
/// visible from every mount namespace; a private mount made before hides them.
pub fn propagation(_: &mut Scratch) -> Result<String, Failed> {
    judge_propagation(&read("/proc/self/mountinfo"))
}

fn judge_propagation(mountinfo: &str) -> Result<String, Failed> {
    match mount_at(mountinfo, "/run/netns") {
        Some(line) if line.optional_fields.iter().any(|f| f.starts_with("shared:")) => {
            Ok("shared mount: namespaces are visible to other mount namespaces".into())
        }
        Some(_) => Err(Failed::with_fix(
            "/run/netns is a private mount: namespaces made here are invisible to other mount namespaces",
            "unmount it (`umount /run/netns`; `ip netns add` makes it shared again) or mount it rshared \
             (docker run -v /run/netns:/run/netns:rshared)",
        )),
        None => Ok("not yet a mount point; made shared on first namespace".into()),
    }
}

/// A read-only `/sys` stops `ip netns exec` from mounting the namespace's
/// sysfs and dynabed from writing CPU quotas.
pub fn sys_writable(_: &mut Scratch) -> Result<String, Failed> {
    judge_sys(&read("/proc/self/mountinfo"))
}

fn judge_sys(mountinfo: &str) -> Result<String, Failed> {
    let read_only: Vec<&str> = ["/sys", "/sys/fs/cgroup"]
        .into_iter()
        .filter(|point| mount_at(mountinfo, point).is_some_and(|m| m.read_only()))
        .collect();
    if read_only.is_empty() {
        return Ok("/sys and /sys/fs/cgroup are writable".into());
    }
    Err(Failed::with_fix(
        format!("{} mounted read-only: namespaces' sysfs and CPU quotas cannot be set", read_only.join(" and ")),
        "run the container privileged (docker/podman run --privileged; Kubernetes securityContext.privileged: true)",
    ))
}

/// Where the cgroup hierarchies are, which one carries the cpu controller,
/// and whether a CPU quota can be set there (the `cpu` fault's mechanism).
pub fn cgroups(_: &mut Scratch) -> Result<String, Failed> {
    let layout = layout(&read("/proc/self/mountinfo"));
    let own = own_cgroup(&read("/proc/self/cgroup")).unwrap_or_else(|| "unknown".into());
    match netns::cgroup::probe() {
        Ok(version) => Ok(format!("{layout}; quota set with {version:?} in this process's cgroup ({own})")),
        Err(e) => Err(Failed::with_fix(
            format!("{layout}; no CPU quota can be set: {e}"),
            "give the container its cgroup writable with the cpu controller delegated (docker/podman run \
             --privileged --cgroupns=private; on cgroup v2, enable +cpu in the parent's cgroup.subtree_control); \
             only the cpu fault needs it",
        )),
    }
}

/// This process's group in the hierarchy carrying `cpu` (v1), else its v2 group.
fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    let cpu_v1 = proc_cgroup.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "cpu")));
    cpu_v1.or_else(|| proc_cgroup.lines().find(|l| l.starts_with("0::"))).map(str::to_owned)
}

/// "v2", "v1" or "hybrid" (v1 controllers beside a v2 hierarchy), from the mount table.
fn layout(mountinfo: &str) -> String {
    let mounts = mounts(mountinfo);
    let v1 = mounts.iter().filter(|m| m.fs_type == "cgroup").count();
    let v2 = mounts.iter().any(|m| m.fs_type == "cgroup2");
    match (v1 > 0, v2) {
        (true, true) => format!("cgroup hybrid ({v1} v1 hierarchies beside a v2 one)"),
        (true, false) => format!("cgroup v1 ({v1} hierarchies)"),
        (false, true) => "cgroup v2 (unified)".into(),
        (false, false) => "no cgroup file system mounted".into(),
    }
}

/// Which backend `iptables` drives, whether tables of the other backend are
/// in use beside it, and whether the rules it makes show in `nft list ruleset`.
pub fn iptables_backend(scratch: &mut Scratch) -> Result<String, Failed> {
    let version = output("iptables", &["--version"]).map_err(|e| Failed::with_fix(e, "install iptables"))?;
    let legacy_tables = read("/proc/net/ip_tables_names");
    let pair = scratch.pair()?;
    let chain = netns::firewall::Chain::forward(&pair.a, "DYNABED_DOCTOR_SEEN").map_err(super::text)?;
    chain.create().map_err(super::text)?;
    let ruleset = netns::namespace::run_in(&pair.a, || output("nft", &["list", "ruleset"])).map_err(super::text)?;
    chain.remove().map_err(super::text)?;
    judge_backend(&version, &legacy_tables, ruleset.unwrap_or_default().contains("DYNABED_DOCTOR_SEEN"))
}

fn judge_backend(version: &str, legacy_tables: &str, seen_by_nft: bool) -> Result<String, Failed> {
    let nft_backend = version.contains("nf_tables");
    let legacy_in_use = !legacy_tables.trim().is_empty();
    let visibility =
        if seen_by_nft { "its rules show in `nft list ruleset`" } else { "its rules are invisible to nft" };
    if nft_backend && legacy_in_use {
        return Err(Failed::with_fix(
            format!(
                "{version}, but legacy iptables tables are in use too ({}): packets cross both, and each side sees \
                 only its own rules",
                legacy_tables.split_whitespace().collect::<Vec<_>>().join(", ")
            ),
            "use one backend: update-alternatives --set iptables /usr/sbin/iptables-legacy in the container if \
             the host uses legacy, or flush the legacy tables",
        ));
    }
    Ok(format!("{version}; {visibility}"))
}

/// File descriptors and processes against what `cluster up --nodes K` needs:
/// every node keeps a connection to and from every other and accepts the
/// driver's clients; RLIMIT_NPROC counts every thread of the user.
pub fn limits(_: &mut Scratch) -> Result<String, Failed> {
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_err(super::text)?;
    let nproc = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC).map_err(super::text)?;
    judge_limits(nofile.1, nproc.1, netns::exempt_from_nproc())
}

/// Descriptors one node needs in a cluster of `nodes`.
fn node_fds(nodes: u64) -> u64 {
    NODE_BASE_FDS + 2 * nodes.saturating_sub(1) + NODE_CLIENT_FDS
}

fn judge_limits(nofile_hard: u64, nproc_hard: u64, nproc_exempt: bool) -> Result<String, Failed> {
    let largest_by_fds = (1..=LARGEST_CLUSTER).rev().find(|&k| node_fds(k) <= nofile_hard).unwrap_or(0);
    let largest_by_threads =
        if nproc_exempt { LARGEST_CLUSTER } else { (nproc_hard / NODE_THREADS).min(LARGEST_CLUSTER) };
    let largest = largest_by_fds.min(largest_by_threads);
    let threads = if nproc_exempt {
        "processes not limited (CAP_SYS_RESOURCE)".to_string()
    } else {
        format!("processes {nproc_hard}")
    };
    let seen = format!("descriptors {nofile_hard} per process (nodes raise their soft limit to it), {threads}");
    if largest >= LARGEST_CLUSTER {
        return Ok(format!("{seen}: enough for cluster up --nodes {LARGEST_CLUSTER}"));
    }
    let need = format!(
        "a node of a {LARGEST_CLUSTER}-node cluster needs {} descriptors{}",
        node_fds(LARGEST_CLUSTER),
        if nproc_exempt { String::new() } else { format!(", the cluster {} threads", LARGEST_CLUSTER * NODE_THREADS) }
    );
    Err(Failed::with_fix(
        format!("{seen}: enough for cluster up --nodes {largest} at most; {need}"),
        "raise them (docker/podman run --ulimit nofile=65536:65536 --ulimit nproc=65536:65536; ulimit -Hn in a shell)",
    ))
}

fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One line of /proc/self/mountinfo, the fields the checks read.
struct Mount<'a> {
    point: &'a str,
    options: &'a str,
    optional_fields: Vec<&'a str>,
    fs_type: &'a str,
    super_options: &'a str,
}

impl Mount<'_> {
    fn read_only(&self) -> bool {
        let ro = |options: &str| options.split(',').any(|o| o == "ro");
        ro(self.options) || ro(self.super_options)
    }
}

fn mounts(mountinfo: &str) -> Vec<Mount<'_>> {
    mountinfo.lines().filter_map(parse_mount).collect()
}

/// The last mount at `point` (the one on top, which is what paths see).
fn mount_at<'a>(mountinfo: &'a str, point: &str) -> Option<Mount<'a>> {
    mounts(mountinfo).into_iter().rfind(|m| m.point == point)
}

/// `id parent major:minor root point options [optional...] - type source super-options`.
fn parse_mount(line: &str) -> Option<Mount<'_>> {
    let (head, tail) = line.split_once(" - ")?;
    let mut head = head.split_whitespace();
    let point = head.nth(4)?;
    let options = head.next()?;
    let optional_fields = head.collect();
    let mut tail = tail.split_whitespace();
    let fs_type = tail.next()?;
    let super_options = tail.nth(1).unwrap_or("");
    Some(Mount { point, options, optional_fields, fs_type, super_options })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "\
23 27 0:22 / /sys rw,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw
50 27 0:45 / /run/netns rw,nosuid shared:20 - tmpfs tmpfs rw
";

    #[test]
    fn detects_the_runtime_from_its_traces() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect(dir.path(), None, "0::/init.scope"), None);
        assert_eq!(detect(dir.path(), Some("lxc".into()), "").unwrap().0, "lxc");
        assert_eq!(detect(dir.path(), None, "0::/kubepods/burstable/pod1").unwrap().0, "kubepods");
        std::fs::write(dir.path().join(".dockerenv"), "").unwrap();
        assert_eq!(detect(dir.path(), None, "").unwrap(), ("docker".into(), "/.dockerenv".into()));
    }

    #[test]
    fn a_private_run_netns_fails_with_what_to_do() {
        assert!(judge_propagation(HOST).is_ok());
        let private = HOST.replace("shared:20 ", "");
        let failed = judge_propagation(&private).unwrap_err();
        assert!(failed.reason.contains("private"), "{failed:?}");
        assert!(failed.fix.unwrap().contains("rshared"));
        assert!(judge_propagation("").is_ok(), "not yet a mount point is fine: ip netns add makes it");
    }

    #[test]
    fn a_read_only_sys_fails() {
        assert!(judge_sys(HOST).is_ok());
        let ro = HOST.replace("/sys rw,relatime", "/sys ro,relatime");
        assert!(judge_sys(&ro).unwrap_err().reason.starts_with("/sys mounted read-only"));
        let ro_cgroup = HOST.replace("/sys/fs/cgroup rw,relatime", "/sys/fs/cgroup ro,relatime");
        assert!(judge_sys(&ro_cgroup).unwrap_err().reason.contains("/sys/fs/cgroup"));
    }

    #[test]
    fn finds_its_own_cpu_group() {
        let hybrid = "4:cpuset:/\n3:cpu,cpuacct:/ci/job1\n0::/ci/job1";
        assert_eq!(own_cgroup(hybrid).unwrap(), "3:cpu,cpuacct:/ci/job1");
        assert_eq!(own_cgroup("0::/user.slice").unwrap(), "0::/user.slice");
    }

    #[test]
    fn names_the_cgroup_layout() {
        assert!(layout(HOST).starts_with("cgroup hybrid (1 v1"));
        assert_eq!(layout("40 31 0:37 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw"), "cgroup v2 (unified)");
        assert_eq!(layout(""), "no cgroup file system mounted");
    }

    #[test]
    fn two_iptables_backends_in_use_fail() {
        let nft = "iptables v1.8.9 (nf_tables)";
        assert!(judge_backend(nft, "", true).unwrap().contains("show in `nft list ruleset`"));
        let both = judge_backend(nft, "filter\nnat\n", true).unwrap_err();
        assert!(both.reason.contains("filter, nat"), "{both:?}");
        assert!(judge_backend("iptables v1.8.9 (legacy)", "filter\n", false).unwrap().contains("invisible to nft"));
    }

    #[test]
    fn low_limits_say_how_large_a_cluster_fits() {
        assert!(judge_limits(65536, 65536, false).is_ok());
        let failed = judge_limits(400, 1 << 20, true).unwrap_err();
        assert!(failed.reason.contains("--nodes 41 at most"), "{failed:?}");
        assert!(failed.fix.unwrap().contains("--ulimit nofile"));
        assert!(judge_limits(65536, 160, false).unwrap_err().reason.contains("--nodes 10 at most"));
        assert!(judge_limits(65536, 160, true).is_ok(), "root with CAP_SYS_RESOURCE is not bound by nproc");
    }
}
