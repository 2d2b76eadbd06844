//! Running commands on a host of the inventory with the system's `ssh`
//! client: batch mode (a key or nothing, never a password prompt), strict
//! host-key checking against the inventory's known-hosts file, and a
//! connect timeout, so that an unreachable host is an error in seconds.
//!
//! ssh hands the remote side one command line, which the remote shell
//! splits again; every argument is therefore quoted here, so that what
//! runs there is exactly the argument vector built here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use netns::command::{run_with_stdin, Argv, CommandError, Site};

use crate::api::hosts::{Deployed, Host, SshOptions};

/// A host, and how to log in to it.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub host: Host,
    pub options: SshOptions,
    /// Where the shared connection's control socket goes, if shared.
    pub control: Option<PathBuf>,
    /// The dynabed binary on the host, once deployed: commands then run
    /// through one session with its agent ([`super::session`]).
    pub agent: Option<PathBuf>,
}

/// ssh's own exit status when the connection or the login failed (a
/// remote command's status is passed through).
const UNREACHABLE: i32 = 255;

/// How long a shared connection outlives its last command. `cleanup`
/// ends it at once; this bounds how long one outlives a killed control
/// process.
const CONTROL_PERSIST_S: u32 = 30;

impl Ssh {
    /// Host `name` of a deployment.
    pub fn of(deployed: &Deployed, name: &str) -> anyhow::Result<Ssh> {
        let host = deployed.host(name).with_context(|| format!("no host {name:?} in the cluster's inventory"))?;
        Ok(Ssh {
            host: host.clone(),
            options: deployed.inventory.ssh.clone(),
            control: deployed.control.clone(),
            agent: Some(deployed.binary_on(host)),
        })
    }

    /// The same host, every command a login of its own (while the agent
    /// is not there yet).
    pub fn without_agent(mut self) -> Ssh {
        self.agent = None;
        self
    }

    /// Ends the shared connection, if there is one (nothing to end is fine).
    pub fn end_shared(&self) {
        if self.control.is_some() {
            let mut argv = self.base_argv();
            argv.extend(["-O".to_owned(), "exit".to_owned(), "--".to_owned(), self.host.ssh.clone()]);
            let _ = netns::command::run(&argv);
        }
    }

    /// The local argument vector that runs `remote` on the host.
    pub fn argv(&self, remote: &[String]) -> Argv {
        Site::Remote(self.site_argv()).wrap(remote.to_vec())
    }

    /// Where commands run on the host, for code that builds its own.
    pub fn site(&self) -> Site {
        Site::Remote(self.site_argv())
    }

    /// `ssh`, its options and the destination.
    fn site_argv(&self) -> Argv {
        let mut argv = self.base_argv();
        argv.extend(["--".to_owned(), self.host.ssh.clone()]);
        argv
    }

    /// `ssh` and its options, without the destination.
    fn base_argv(&self) -> Argv {
        let mut argv: Argv =
            ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"].into_iter().map(str::to_owned).collect();
        let mut option = |o: String| argv.extend(["-o".to_owned(), o]);
        option("ConnectTimeout=10".into());
        option("ServerAliveInterval=5".into());
        option("ServerAliveCountMax=3".into());
        option("LogLevel=ERROR".into());
        if let Some(known) = &self.options.known_hosts {
            option(format!("UserKnownHostsFile={}", known.display()));
        }
        if let Some(control) = &self.control {
            option("ControlMaster=auto".into());
            // %C: a hash of the connection, short enough for a socket path.
            option(format!("ControlPath={}", control.join("%C").display()));
            option(format!("ControlPersist={CONTROL_PERSIST_S}"));
        }
        if let Some(identity) = &self.options.identity {
            option("IdentitiesOnly=yes".into());
            argv.extend(["-i".to_owned(), identity.display().to_string()]);
        }
        argv
    }

    /// Runs `remote` on the host, feeding it `stdin`; its standard output.
    pub fn run(&self, remote: &[String], stdin: Option<&str>) -> anyhow::Result<String> {
        let context = format!("on host {} ({})", self.host.name, self.host.ssh);
        if let Some(reply) = self.agent.as_deref().and_then(|bin| super::session::run(self, bin, remote, stdin)) {
            if reply.status == Some(0) {
                return Ok(reply.stdout);
            }
            let failed = CommandError::Failed { argv: self.argv(remote), status: reply.status, stderr: reply.stderr };
            return Err(anyhow::Error::new(failed).context(context));
        }
        run_with_stdin(&self.argv(remote), stdin).map_err(|e| {
            let unreachable = matches!(e, CommandError::Failed { status: Some(UNREACHABLE), .. });
            let why = if unreachable { " (ssh could not reach it or log in)" } else { "" };
            anyhow::Error::new(e).context(format!("{context}{why}"))
        })
    }

    /// Writes `bytes` to `path` on the host (mode 0700 folders, the file
    /// renamed into place only once whole).
    pub fn write_file(&self, path: &Path, bytes: &[u8], mode: &str) -> anyhow::Result<()> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let dir = path.parent().context("a file path without a folder")?;
        // The script is constant: the paths and mode reach it as arguments.
        let script = r#"umask 077 && mkdir -p "$1" && cat > "$2.part" && chmod "$3" "$2.part" && mv -f "$2.part" "$2""#;
        let remote: Vec<String> =
            ["sh", "-c", script, "sh", &dir.to_string_lossy(), &path.to_string_lossy(), mode].map(str::to_owned).into();
        let argv = self.argv(&remote);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ssh")?;
        let written = child.stdin.take().expect("piped").write_all(bytes);
        let out = child.wait_with_output().context("waiting for ssh")?;
        anyhow::ensure!(
            out.status.success() && written.is_ok(),
            "writing {} on host {}: {}",
            path.display(),
            self.host.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_never_asks_and_checks_the_host_key_against_the_inventory() {
        let host = Host { name: "h1".into(), ssh: "root@198.19.1.1".into(), addrs: vec![], dir: "/d".into(), nodes: 1 };
        let options = SshOptions { identity: Some("/k/id".into()), known_hosts: Some("/k/known".into()) };
        let ssh = Ssh { host, options, control: Some("/run/x/ssh".into()), agent: None };
        let argv = ssh.argv(&["echo".into(), "a b".into()]).join(" ");
        for part in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/k/known",
            "-i /k/id",
            "ControlPath=/run/x/ssh/%C",
        ] {
            assert!(argv.contains(part), "{argv}");
        }
        assert!(argv.ends_with("-- root@198.19.1.1 echo 'a b'"), "{argv}");
    }
}
