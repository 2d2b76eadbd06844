//! One SSH session per host, kept open by this process: `ssh host dynabed
//! host-agent serve`, through which every later command for that host runs
//! (as an argument vector, one JSON line each way).
//!
//! A login costs a key exchange, a session and the user's shell start-up
//! on the host (its rc files): a few hundred milliseconds, which a fault
//! touching every host pays dozens of times. Through the session a command
//! costs a pipe round trip and its own start. The session ends with this
//! process: the agent stops when its standard input closes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;

use super::ssh::Ssh;
use crate::api::hosts::{AgentReply, AgentRequest};

struct Session {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

type Sessions = Mutex<HashMap<String, Arc<Mutex<Option<Session>>>>>;

/// The open sessions, by host name and destination.
fn sessions() -> &'static Sessions {
    static SESSIONS: OnceLock<Sessions> = OnceLock::new();
    SESSIONS.get_or_init(Mutex::default)
}

/// Runs `argv` on the host through its session (opened on first use, with
/// the agent `bin` there); `None` when no session can be had, so the caller
/// logs in for this one command instead.
pub fn run(ssh: &Ssh, bin: &Path, argv: &[String], stdin: Option<&str>) -> Option<AgentReply> {
    let key = format!("{} {}", ssh.host.name, ssh.host.ssh);
    let slot = sessions().lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone();
    let mut session = slot.lock().unwrap_or_else(|e| e.into_inner());
    let request = AgentRequest { argv: argv.to_vec(), stdin: stdin.map(str::to_owned) };
    // A session that broke (the host rebooted, the agent died) is opened
    // again once; one that cannot be opened is left to plain logins.
    for _ in 0..2 {
        if session.is_none() {
            *session = Some(open(ssh, bin).ok()?);
        }
        match exchange(session.as_mut()?, &request) {
            Ok(reply) => return Some(reply),
            Err(_) => {
                if let Some(mut broken) = session.take() {
                    let _ = broken.child.kill();
                    let _ = broken.child.wait();
                }
            }
        }
    }
    None
}

fn open(ssh: &Ssh, bin: &Path) -> anyhow::Result<Session> {
    let argv = ssh.argv(&[bin.display().to_string(), "host-agent".into(), "serve".into()]);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ssh")?;
    let input = child.stdin.take().context("no pipe to ssh")?;
    let output = BufReader::new(child.stdout.take().context("no pipe from ssh")?);
    Ok(Session { child, input, output })
}

fn exchange(session: &mut Session, request: &AgentRequest) -> anyhow::Result<AgentReply> {
    writeln!(session.input, "{}", serde_json::to_string(request)?)?;
    session.input.flush()?;
    let mut line = String::new();
    anyhow::ensure!(session.output.read_line(&mut line)? > 0, "the session ended");
    Ok(serde_json::from_str(&line)?)
}
