//! The duplicate fault without netem: nftables `dup` on the egress hook of
//! each end of the node's link, so each direction sends a share of its
//! packets twice. The copy is marked so that, passing the same hook again,
//! it is not copied once more; the original's mark is cleared after the
//! copy (veth clears marks between namespaces anyway). Needs a kernel with
//! netfilter egress hooks (5.16 and later); works where netem is missing.

use netns::command::{argv, in_netns, run, Argv};

use super::{check, ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, PortSelector, Undo};
use crate::faults::fault::Fault;

/// The mark that tells a copy from an original.
const COPY_MARK: &str = "0x1d0b";
const CHAIN: &str = "egress";

/// Sends `pct` % of the packets from and to the node (on `port`) twice.
pub struct NftDup {
    pub pct: u8,
    pub port: PortSelector,
}

impl Executor for NftDup {
    fn backend(&self) -> Backend {
        Backend::NftNetdevDup
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.namespaced()?;
        let name = target.table_name();
        Ok(target
            .links()?
            .into_iter()
            .map(|(namespace, _)| Undo::DeleteNetdevTable { namespace, name: name.clone() })
            .collect())
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let port = target.port(self.port).map(|p| p.to_string());
        let mut commands = Vec::new();
        for (namespace, device) in target.links()? {
            for command in table_commands(&target.table_name(), &device, self.pct, port.as_deref()) {
                let command = in_netns(&namespace, command);
                run(&command).map_err(anyhow::Error::from)?;
                commands.push(command);
            }
        }
        Ok(commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        check::verify(target, &Fault::Duplicate { pct: self.pct, port: self.port })
    }
}

/// The nft commands that make the table `name` copying `pct` % of what
/// leaves `device` (only packets from or to `port`, when given).
fn table_commands(name: &str, device: &str, pct: u8, port: Option<&str>) -> Vec<Argv> {
    let nft = |words: &[&str]| {
        let mut command = argv(&["nft", "add"]);
        command.extend(argv(words));
        command
    };
    let hook = ["{", "type", "filter", "hook", "egress", "device", device, "priority", "0", ";", "}"];
    let mut chain = vec!["chain", "netdev", name, CHAIN];
    chain.extend(hook);
    let pct = pct.to_string();
    let copy = ["numgen", "random", "mod", "100", "<", &pct, "meta", "mark", "set", COPY_MARK, "dup", "to", device];
    let copy: Vec<&str> = copy.into_iter().chain(["meta", "mark", "set", "0"]).collect();
    let rule = |matches: &[&str]| {
        let mut words = vec!["rule", "netdev", name, CHAIN];
        words.extend(matches);
        words.extend(&copy);
        nft(&words)
    };
    let mut commands = vec![
        nft(&["table", "netdev", name]),
        nft(&chain),
        nft(&["rule", "netdev", name, CHAIN, "meta", "mark", COPY_MARK, "accept"]),
    ];
    match port {
        None => commands.push(rule(&[])),
        // Two rules, the second skipping what the first matched, so no
        // packet gets two chances.
        Some(port) => {
            commands.push(rule(&["th", "sport", port]));
            commands.push(rule(&["th", "sport", "!=", port, "th", "dport", port]));
        }
    }
    commands
}

/// Whether the netdev table `name` is in `namespace`.
pub fn table_exists(namespace: &str, name: &str) -> anyhow::Result<bool> {
    match run(&in_netns(namespace, argv(&["nft", "list", "table", "netdev", name]))) {
        Ok(_) => Ok(true),
        Err(e) if e.stderr().contains("No such file or directory") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the netdev table `name` in `namespace`; an absent one is fine.
pub fn delete_table(namespace: &str, name: &str) -> anyhow::Result<()> {
    match run(&in_netns(namespace, argv(&["nft", "delete", "table", "netdev", name]))) {
        Err(e) if !e.stderr().contains("No such file or directory") => Err(e.into()),
        _ => Ok(()),
    }
}
