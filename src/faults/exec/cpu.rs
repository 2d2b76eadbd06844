//! The cpu fault: the node's process in a cgroup with a CPU quota.

use super::{ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, Undo};

/// At most `pct` % of one core.
pub struct CpuQuota {
    pub pct: u32,
}

fn group_name(target: &Target) -> String {
    format!("dynabed-{}-fault{}", target.cluster.prefix(), target.id)
}

impl Executor for CpuQuota {
    fn backend(&self) -> Backend {
        Backend::CgroupCpu
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.running()?;
        let host = target.node.place.host_name().map(str::to_owned);
        Ok(vec![Undo::RemoveCgroup { name: group_name(target), host }])
    }

    /// Asked of this machine; a host that lacks cgroups says so when the fault is made.
    fn available(&self, target: &Target) -> Result<(), String> {
        if target.node.place.host_name().is_some() {
            return Ok(());
        }
        netns::cgroup::probe()
            .map(drop)
            .map_err(|e| format!("no CPU quota can be set here: {e} (see `dynabed doctor`, cgroup cpu quota)"))
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let process = target.running()?;
        let (_, commands) = target.node.place.limit_cpu(&group_name(target), self.pct, process)?;
        Ok(commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        let (node, pid) = (target.name(), target.process.map(|p| p.pid).unwrap_or_default());
        let name = group_name(target);
        let members = target.node.place.cpu_members(&name)?;
        let place = target.node.place.host_name().map_or(String::new(), |h| format!(" on {h}"));
        anyhow::ensure!(members.contains(&pid), "{node} (pid {pid}) is not in cgroup {name}{place}");
        Ok(format!("{node} (pid {pid}) limited to {}% of a core in cgroup {name}{place}", self.pct))
    }
}
