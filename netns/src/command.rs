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
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(CommandError::Failed {
        argv: argv.to_vec(),
        status: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
