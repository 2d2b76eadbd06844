//! Running external tools (`ip`, `tc`, `nft`, `iptables`) as argument vectors — never as a
//! shell line — and the record of what ran, so that callers can journal every change they
//! made and heal it later.

use std::io::Write;
use std::process::{Command, Stdio};

/// One command line, as the argument vector that was executed.
pub type Argv = Vec<String>;

/// The exact commands an operation ran, in order. Returned by every operation that changes
/// kernel state, so that a caller can write it to its heal journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub commands: Vec<Argv>,
}

impl Applied {
    /// A record of nothing (for example removing something that was already absent).
    pub fn none() -> Self {
        Self::default()
    }

    /// A record of one command.
    pub fn one(argv: Argv) -> Self {
        Self { commands: vec![argv] }
    }

    /// Appends another operation's commands.
    pub fn extend(&mut self, other: Applied) {
        self.commands.extend(other.commands);
    }
}

/// Why an external command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not start `{argv}`: {source}", argv = .argv.join(" "))]
    Spawn {
        argv: Argv,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` failed (exit {status:?}): {stderr}", argv = .argv.join(" "), stderr = .stderr.trim())]
    Failed { argv: Argv, status: Option<i32>, stderr: String },
}

impl CommandError {
    /// The command's standard error, if it ran and failed.
    pub fn stderr(&self) -> &str {
        match self {
            CommandError::Failed { stderr, .. } => stderr,
            CommandError::Spawn { .. } => "",
        }
    }
}

/// Builds an argument vector from string slices.
pub fn argv(parts: &[&str]) -> Argv {
    parts.iter().map(|p| p.to_string()).collect()
}

/// Where a command runs: inside a network namespace here, or on another
/// machine through a remote shell (`ssh ... destination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// Where this process runs.
    Here,
    Netns(String),
    /// The argument vector that runs one shell command line there, up to
    /// and including the destination.
    Remote(Argv),
}

impl Site {
    /// The argument vector that runs `inner` at this site. A remote shell
    /// splits the command line it gets, so each argument is quoted for it:
    /// what runs there is exactly `inner`.
    pub fn wrap(&self, inner: Argv) -> Argv {
        match self {
            Site::Here => inner,
            Site::Netns(namespace) => in_netns(namespace, inner),
            Site::Remote(prefix) => {
                let mut full = prefix.clone();
                full.push(inner.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
                full
            }
        }
    }
}

/// `arg` quoted for a POSIX shell: in single quotes, each single quote
/// closed, escaped and reopened (plain words as they are).
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Prefixes `inner` with `ip netns exec NAMESPACE`, so it runs inside that namespace.
pub fn in_netns(namespace: &str, inner: Argv) -> Argv {
    let mut full = argv(&["ip", "netns", "exec", namespace]);
    full.extend(inner);
    full
}

/// Runs `argv` and returns its standard output; a non-zero exit is an error carrying stderr.
pub fn run(argv: &[String]) -> Result<String, CommandError> {
    run_with_stdin(argv, None)
}

/// Runs `argv`, feeding `stdin` (if any) to it, and returns its standard output.
pub fn run_with_stdin(argv: &[String], stdin: Option<&str>) -> Result<String, CommandError> {
    let spawn_err = |source| CommandError::Spawn { argv: argv.to_vec(), source };
    let out = run_with_stdin_output(argv, stdin).map_err(spawn_err)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(CommandError::Failed {
        argv: argv.to_vec(),
        status: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `argv`, feeding `stdin` (if any) to it; whatever it did.
pub fn run_with_stdin_output(argv: &[String], stdin: Option<&str>) -> std::io::Result<std::process::Output> {
    let (program, args) = argv.split_first().ok_or_else(|| std::io::Error::other("an empty command"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    child.wait_with_output()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_runs_the_same_argument_vector_here_in_a_namespace_or_through_a_remote_shell() {
        let inner = argv(&["nft", "-f", "-"]);
        assert_eq!(Site::Here.wrap(inner.clone()), inner);
        assert_eq!(
            Site::Netns("p-hub".into()).wrap(inner.clone()),
            argv(&["ip", "netns", "exec", "p-hub", "nft", "-f", "-"])
        );
        let remote = Site::Remote(argv(&["ssh", "--", "root@198.19.1.1"])).wrap(argv(&["iptables", "-A", "two words"]));
        assert_eq!(remote, argv(&["ssh", "--", "root@198.19.1.1", "iptables -A 'two words'"]));
    }

    #[test]
    fn every_argument_reaches_the_remote_shell_as_it_was() {
        let args = ["plain/path-1", "", "two words", "it's", "$(reboot)", "a\"b", "back\\slash", "*"];
        let line: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        // The remote side is a POSIX shell: let one split the line back.
        let echoed = std::process::Command::new("sh")
            .args(["-c", &format!("for a in {}; do printf '%s\\n' \"[$a]\"; done", line.join(" "))])
            .output()
            .unwrap();
        let got = String::from_utf8(echoed.stdout).unwrap();
        let want: String = args.iter().map(|a| format!("[{a}]\n")).collect();
        assert_eq!(got, want);
    }
}
