//! The inventory of hosts a cluster runs on (`cluster up --hosts
//! hosts.toml`): each host's name, how to reach it over SSH, the addresses
//! its nodes bind, its working folder and how many nodes it runs.
//!
//! This is Jepsen's control model: the machine running `dynabed` drives
//! the hosts with the system's `ssh` client (the user's keys, a known-hosts
//! file, never a password) and applies faults there with the same kernel
//! tools as locally. The inventory is copied into the cluster's meta file
//! and its run state, so that every later command — a fault, `cluster
//! down`, `cleanup` after a crash — reaches the same hosts the same way.
//!
//! ```toml
//! [ssh]
//! identity = "/home/me/.ssh/lab_ed25519"     # optional: else ssh's own keys
//! known_hosts = "/home/me/.ssh/lab_known"    # optional: else the user's
//!
//! [[host]]
//! name = "h1"
//! ssh = "root@10.0.0.11"
//! addrs = ["10.0.0.11"]          # node k on this host binds addrs[k]
//! dir = "/var/tmp/dynabed"       # the binary, node data and logs
//! nodes = 1
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Every host of a cluster, and how to reach them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default)]
    pub ssh: SshOptions,
    #[serde(rename = "host")]
    pub hosts: Vec<Host>,
}

/// How `ssh` authenticates, for every host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshOptions {
    /// The private key to log in with [default: ssh's own choice].
    pub identity: Option<PathBuf>,
    /// The known-hosts file that must name every host's key [default: the user's].
    pub known_hosts: Option<PathBuf>,
}

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    /// `[user@]address`, as given to `ssh`.
    pub ssh: String,
    /// The addresses its nodes bind, one per node (a node past the list's
    /// end shares the last one; kernel network faults then refuse it).
    pub addrs: Vec<Ipv4Addr>,
    /// Its working folder, made if missing.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// How many nodes it runs.
    pub nodes: u16,
}

fn default_dir() -> PathBuf {
    PathBuf::from("/var/tmp/dynabed")
}

/// A cluster's hosts as its meta file and run state record them: the
/// inventory, and the name of the dynabed binary copied into each host's
/// `dir/bin` (named by its content, so that hosts never run another build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    pub inventory: Inventory,
    pub binary: String,
    /// The folder of the SSH control sockets (in the run state): one
    /// connection per host, shared by every command sent there.
    pub control: Option<PathBuf>,
}

impl Deployed {
    /// Where the binary is on `host`.
    pub fn binary_on(&self, host: &Host) -> PathBuf {
        host.dir.join("bin").join(&self.binary)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.inventory.host(name)
    }
}

/// One command for a host's `dynabed host-agent serve`, a JSON line on its
/// standard input: the control machine keeps one SSH session per host and
/// sends every command through it, instead of paying a login for each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRequest {
    /// Run as is, never through a shell.
    pub argv: Vec<String>,
    /// Fed to the command's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
}

/// What a command sent to `host-agent serve` did, a JSON line on its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReply {
    /// Its exit status; `None` when it could not start or died of a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why an inventory cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InventoryError {
    #[error("not a hosts file: {0}")]
    Syntax(String),
    #[error("no [[host]] in the hosts file")]
    Empty,
    #[error("host name {0:?}: use 1-20 letters, digits and '-'")]
    BadName(String),
    #[error("host {0:?} appears twice")]
    Duplicate(String),
    #[error("host {host}: ssh destination {ssh:?} must be [user@]address, without spaces or a leading '-'")]
    BadDestination { host: String, ssh: String },
    #[error("host {0}: addrs is empty")]
    NoAddress(String),
    #[error("host {host}: dir {dir:?} must be an absolute path")]
    RelativeDir { host: String, dir: PathBuf },
    #[error("host {0}: nodes must be at least 1")]
    NoNodes(String),
    #[error("address {addr} is given to hosts {first} and {second}")]
    SharedAddress { addr: Ipv4Addr, first: String, second: String },
}

impl Inventory {
    /// Reads and checks a hosts file's text.
    pub fn parse(text: &str) -> Result<Inventory, InventoryError> {
        let inventory: Inventory = toml::from_str(text).map_err(|e| InventoryError::Syntax(e.message().to_owned()))?;
        inventory.check()?;
        Ok(inventory)
    }

    fn check(&self) -> Result<(), InventoryError> {
        if self.hosts.is_empty() {
            return Err(InventoryError::Empty);
        }
        let mut names = BTreeSet::new();
        let mut owners: Vec<(Ipv4Addr, &str)> = Vec::new();
        for host in &self.hosts {
            host.check()?;
            if !names.insert(host.name.as_str()) {
                return Err(InventoryError::Duplicate(host.name.clone()));
            }
            for &addr in &host.addrs {
                if let Some((_, first)) = owners.iter().find(|(a, name)| *a == addr && *name != host.name) {
                    let (first, second) = (first.to_string(), host.name.clone());
                    return Err(InventoryError::SharedAddress { addr, first, second });
                }
                owners.push((addr, &host.name));
            }
        }
        Ok(())
    }

    /// The number of nodes over all hosts.
    pub fn nodes(&self) -> usize {
        self.hosts.iter().map(|h| usize::from(h.nodes)).sum()
    }

    /// Each node's host and the address it binds, in node order: host by
    /// host, as the file lists them.
    pub fn placements(&self) -> Vec<(&Host, Ipv4Addr)> {
        let per_host = self.hosts.iter().flat_map(|host| {
            (0..usize::from(host.nodes)).map(move |k| (host, host.addrs[k.min(host.addrs.len() - 1)]))
        });
        per_host.collect()
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

impl Host {
    fn check(&self) -> Result<(), InventoryError> {
        let name_ok = (1..=20).contains(&self.name.len())
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !self.name.starts_with('-');
        if !name_ok {
            return Err(InventoryError::BadName(self.name.clone()));
        }
        // A destination starting with '-' would be read by ssh as an option.
        let destination_ok =
            !self.ssh.is_empty() && !self.ssh.starts_with('-') && !self.ssh.chars().any(|c| c.is_whitespace());
        if !destination_ok {
            return Err(InventoryError::BadDestination { host: self.name.clone(), ssh: self.ssh.clone() });
        }
        if self.addrs.is_empty() {
            return Err(InventoryError::NoAddress(self.name.clone()));
        }
        if !self.dir.is_absolute() {
            return Err(InventoryError::RelativeDir { host: self.name.clone(), dir: self.dir.clone() });
        }
        if self.nodes == 0 {
            return Err(InventoryError::NoNodes(self.name.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[ssh]
identity = "/k/id"
known_hosts = "/k/known"

[[host]]
name = "h1"
ssh = "root@198.19.1.1"
addrs = ["198.19.1.11", "198.19.1.12"]
dir = "/srv/h1"
nodes = 2

[[host]]
name = "h2"
ssh = "198.19.2.1"
addrs = ["198.19.2.11"]
nodes = 2
"#;

    #[test]
    fn nodes_are_placed_host_by_host_each_on_its_own_address_while_there_are_enough() {
        let inventory = Inventory::parse(TWO).unwrap();
        assert_eq!(inventory.ssh.identity, Some(PathBuf::from("/k/id")));
        assert_eq!(inventory.nodes(), 4);
        let placed: Vec<(&str, String)> =
            inventory.placements().into_iter().map(|(h, a)| (h.name.as_str(), a.to_string())).collect();
        assert_eq!(
            placed,
            [("h1", "198.19.1.11"), ("h1", "198.19.1.12"), ("h2", "198.19.2.11"), ("h2", "198.19.2.11")]
                .map(|(h, a)| (h, a.to_owned()))
        );
        assert_eq!(inventory.host("h2").unwrap().dir, PathBuf::from("/var/tmp/dynabed"), "the default folder");
    }

    #[test]
    fn a_bad_inventory_says_what_is_wrong() {
        let bad = |from: &str, to: &str| Inventory::parse(&TWO.replacen(from, to, 1)).unwrap_err().to_string();
        assert_eq!(
            bad("root@198.19.1.1", "-oProxyCommand=x"),
            "host h1: ssh destination \"-oProxyCommand=x\" must be [user@]address, without spaces or a leading '-'"
        );
        assert_eq!(bad("\"h2\"", "\"h1\""), "host \"h1\" appears twice");
        assert_eq!(bad("\"198.19.2.11\"", "\"198.19.1.12\""), "address 198.19.1.12 is given to hosts h1 and h2");
        assert_eq!(bad("/srv/h1", "srv"), "host h1: dir \"srv\" must be an absolute path");
        assert_eq!(bad("nodes = 2", "nodes = 0"), "host h1: nodes must be at least 1");
        assert_eq!(bad("[\"198.19.2.11\"]", "[]"), "host h2: addrs is empty");
        assert!(bad("nodes = 2", "nodes = 2\nport = 22").starts_with("not a hosts file: unknown field `port`"));
        assert_eq!(Inventory::parse("[ssh]\n").unwrap_err(), InventoryError::Syntax("missing field `host`".into()));
        assert_eq!(Inventory::parse("host = []").unwrap_err(), InventoryError::Empty);
    }
}
