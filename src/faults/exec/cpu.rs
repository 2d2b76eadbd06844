//! The cpu fault: the node's process in a cgroup with a CPU quota.

use netns::cgroup::CpuGroup;

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
        Ok(vec![Undo::RemoveCgroup { name: group_name(target) }])
    }

    fn available(&self, _target: &Target) -> Result<(), String> {
        netns::cgroup::probe()
            .map(drop)
            .map_err(|e| format!("no CPU quota can be set here: {e} (see `dynabed doctor`, cgroup cpu quota)"))
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let process = target.running()?;
        let (group, mut applied) = CpuGroup::create(&group_name(target), self.pct)?;
        applied.extend(group.add(process.pid)?);
        Ok(applied.commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        let (node, pid) = (target.name(), target.process.map(|p| p.pid).unwrap_or_default());
        let group = CpuGroup::open(&group_name(target))?;
        anyhow::ensure!(group.pids()?.contains(&pid), "{node} (pid {pid}) is not in {}", group.path.display());
        Ok(format!("{node} (pid {pid}) limited to {}% of a core in {}", self.pct, group.path.display()))
    }
}
