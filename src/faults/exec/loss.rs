//! The loss fault: random drops of the node's packets in the hub's bridge.

use std::net::IpAddr;

use netns::firewall::{Direction, Family, Rule, Table};

use super::{check, ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, PortSelector, Undo};
use crate::faults::fault::Fault;

/// Drops `pct` % of the packets from and to the node, each direction.
pub struct HubLoss {
    pub pct: u8,
}

impl Executor for HubLoss {
    fn backend(&self) -> Backend {
        Backend::NftBridge
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.delete_table()
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let table = Table::new(&target.hub(), Family::Bridge, &target.table_name());
        let mut applied = table.create()?;
        let addr: IpAddr = target.node.addr.ip();
        for direction in [Direction::From, Direction::To] {
            let rule = Rule::RandomLoss { addr, direction, percent: self.pct };
            applied.extend(table.add_rule(&rule)?);
        }
        Ok(applied.commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        check::verify(target, &Fault::Loss { pct: self.pct, correlation_pct: None, port: PortSelector::All })
    }
}
