//! What a healed fault may have left behind: each undo step of its record,
//! checked against the kernel, the processes and the nodes. The driver runs
//! this after every run, so a heal that silently failed is a reported error
//! rather than a surprise in the next experiment.

use super::admin::{app_fault, AppFaultCall};
use super::{delay_daemon, journal};
use crate::api::admin::FaultState;
use crate::api::fault::{FaultRecord, Undo};
use crate::cluster::running::Cluster;
use crate::cluster::runstate::RunState;

/// Everything still in place that `records` (all healed) created; empty
/// when the heals were complete. (Whether a crashed node came back is the
/// driver's own check: with `--no_restart` it is meant to stay down.)
pub fn leftovers(state: &RunState, records: &[FaultRecord]) -> anyhow::Result<Vec<String>> {
    let owned = state.owned()?;
    let mut found: Vec<String> = journal::records(state)?
        .iter()
        .map(|r| format!("fault {} ({:?}) is still in the journal", r.id, r.kind))
        .collect();
    if owned.processes.iter().any(|p| p.role == delay_daemon::ROLE) {
        found.push("the delay-line daemon is still running".into());
    }
    let cluster = owned.cluster_procs.as_deref().map(Cluster::read).transpose()?;
    for record in records {
        for step in &record.undo {
            if let Some(left) = still_there(step, state, cluster.as_ref())? {
                found.push(format!("fault {} ({:?}): {left}", record.id, record.kind));
            }
        }
    }
    Ok(found)
}

fn still_there(step: &Undo, state: &RunState, cluster: Option<&Cluster>) -> anyhow::Result<Option<String>> {
    use netns::firewall::{Chain, Family, Table};
    let in_namespace = |namespace: &str| netns::namespace::exists(namespace);
    Ok(match step {
        Undo::DeleteBridgeTable { namespace, name } => (in_namespace(namespace)
            && Table::new(namespace, Family::Bridge, name).exists()?)
        .then(|| format!("nft table {name} is still in {namespace}")),
        Undo::ClearQdisc { namespace, device } => {
            let kind =
                if in_namespace(namespace) { netns::qdisc::root(namespace, device)?.map(|q| q.kind) } else { None };
            kind.filter(|k| k == "netem" || k == "tbf")
                .map(|k| format!("{k} qdisc is still on {device} in {namespace}"))
        }
        Undo::DeleteNetdevTable { namespace, name } => (in_namespace(namespace)
            && super::exec::duplicate::table_exists(namespace, name)?)
        .then(|| format!("nft netdev table {name} is still in {namespace}")),
        Undo::RemoveForwardChain { namespace, name } => (in_namespace(namespace)
            && Chain::forward(namespace, name)?.list().is_ok())
        .then(|| format!("iptables chain {name} is still in {namespace}")),
        Undo::UndelayOnSites { sites, chain, .. } => {
            let mut left = Vec::new();
            for host in sites {
                let site = super::delay_daemon::LineSite::of(state, host.as_deref())?;
                if Chain::at(site.command_site(), chain, netns::firewall::Hook::Input)?.list().is_ok() {
                    left.push(host.as_deref().unwrap_or("this machine").to_owned());
                }
            }
            (!left.is_empty()).then(|| format!("iptables chain {chain} is still on {}", left.join(", ")))
        }
        Undo::RemoveCgroup { name, host: None } => {
            netns::cgroup::CpuGroup::open(name)?.path.is_dir().then(|| format!("cgroup {name} still exists"))
        }
        Undo::RemoveCgroup { name, host: Some(host) } => {
            let members = state.owned()?.place(Some(host))?.cpu_members(name);
            members.is_ok().then(|| format!("cgroup {name} still exists on host {host}"))
        }
        Undo::Continue { pid, start_time, host } => {
            let place = state.owned()?.place(host.as_deref())?;
            let same = place.is_alive(netns::process::Spawned { pid: *pid, start_time: *start_time });
            (same && place.state(*pid) == Some('T')).then(|| format!("pid {pid} is still stopped"))
        }
        Undo::DeleteHostTable { host, name } => super::exec::host::host_table(state, host, name)?
            .exists()?
            .then(|| format!("nft table {name} is still on host {host}")),
        Undo::HealApp { node } => {
            let Some((cluster, found)) = cluster.and_then(|c| Some((c, c.node(node).ok()?))) else { return Ok(None) };
            let current = app_fault(cluster, found, AppFaultCall::Read)?;
            (current != FaultState::default()).then(|| format!("{node} still applies {current:?}"))
        }
        Undo::Restart { .. } | Undo::DelayClear { .. } | Undo::StopIdleDelayLine => None,
    })
}
