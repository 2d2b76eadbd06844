//! `dynabed host-agent`: what the control machine asks a host to do with
//! processes, run there over SSH by the very same dynabed binary that
//! `cluster up --hosts` copied.
//!
//! Processes are known by pid *and* start time on hosts too, so that a
//! fault, `cluster down` or `cleanup` never signals a recycled pid; that
//! check must run where the process lives, hence an agent rather than a
//! bare `kill` over SSH.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::hosts::{AgentReply, AgentRequest};
use anyhow::Context;
use clap::Subcommand;
use netns::cgroup::CpuGroup;
use netns::process::{Signal, Spawned};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Runs the commands sent as JSON lines on standard input, one at a time, answering each
    /// with a JSON line, until standard input ends.
    Serve,
    /// Start a detached process; prints `PID START_TIME`.
    Spawn {
        /// Its standard output and error go here (appended).
        #[arg(long)]
        log: PathBuf,
        /// An environment variable, KEY=VALUE (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(required = true, last = true)]
        argv: Vec<String>,
    },
    /// Prints 1 or 0 per PID:START_TIME: whether that very process runs.
    Alive { processes: Vec<String> },
    /// Sends a signal (KILL, STOP, CONT, TERM) if the process is still the one recorded; with
    /// --wait_gone_ms, fails unless it is gone by then. Prints `sent` or `gone`.
    Signal {
        signal: String,
        process: String,
        #[arg(long = "wait_gone_ms")]
        wait_gone_ms: Option<u64>,
    },
    /// SIGTERM, then SIGKILL after the grace period, to every PID:START_TIME; prints the pids
    /// that survived.
    Stop {
        #[arg(long = "grace_ms", default_value_t = 5000)]
        grace_ms: u64,
        processes: Vec<String>,
    },
    /// Prints a process's state letter (R, S, T, ...), or - when there is none.
    State { pid: u32 },
    /// Puts a process in cgroup NAME limited to PCT % of one core (made if missing); prints the
    /// group's folder.
    CpuLimit { name: String, pct: u32, process: String },
    /// Prints the pids in cgroup NAME, one per line.
    CpuMembers { name: String },
    /// Moves cgroup NAME's processes back to its parent and removes it (absent is fine).
    CpuRelease { name: String },
    /// Sends LINE to the Unix socket SOCKET and prints the one line it answers.
    UnixCall {
        #[arg(long)]
        socket: PathBuf,
        line: String,
    },
    /// Prints 1 if a TCP handshake from address FROM to TO completes within the timeout, else 0.
    Connect {
        #[arg(long)]
        from: IpAddr,
        to: SocketAddr,
        #[arg(long = "timeout_ms", default_value_t = 500)]
        timeout_ms: u64,
    },
}

pub fn run(command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Serve => serve()?,
        AgentCommand::Spawn { log, env, argv } => {
            let env = env.iter().map(|kv| split_env(kv)).collect::<anyhow::Result<Vec<_>>>()?;
            let spawned = netns::process::spawn_in(None, &argv, &log, &env)?;
            println!("{} {}", spawned.pid, spawned.start_time);
        }
        AgentCommand::Alive { processes } => {
            for process in processes {
                println!("{}", u8::from(parse_process(&process)?.is_alive()));
            }
        }
        AgentCommand::Signal { signal, process, wait_gone_ms } => {
            let (process, signal) = (parse_process(&process)?, parse_signal(&signal)?);
            if !process.signal(signal) {
                println!("gone");
                return Ok(());
            }
            if let Some(ms) = wait_gone_ms {
                anyhow::ensure!(process.wait_gone(Duration::from_millis(ms)), "pid {} survived {signal}", process.pid);
            }
            println!("sent");
        }
        AgentCommand::Stop { grace_ms, processes } => {
            let records = processes.iter().map(|p| parse_process(p)).collect::<anyhow::Result<Vec<_>>>()?;
            for pid in super::cleanup::stop_within(&records, Duration::from_millis(grace_ms)) {
                println!("{pid}");
            }
        }
        AgentCommand::State { pid } => {
            println!("{}", netns::process::state(pid).unwrap_or('-'));
        }
        AgentCommand::CpuLimit { name, pct, process } => {
            let process = parse_process(&process)?;
            anyhow::ensure!(process.is_alive(), "pid {} is gone", process.pid);
            let (group, _) = CpuGroup::create(&name, pct)?;
            group.add(process.pid)?;
            println!("{}", group.path.display());
        }
        AgentCommand::CpuMembers { name } => {
            for pid in CpuGroup::open(&name)?.pids()? {
                println!("{pid}");
            }
        }
        AgentCommand::CpuRelease { name } => {
            CpuGroup::open(&name)?.remove()?;
        }
        AgentCommand::UnixCall { socket, line } => print!("{}", call_unix(&socket, &line)?),
        AgentCommand::Connect { from, to, timeout_ms } => {
            println!("{}", u8::from(connects(from, to, Duration::from_millis(timeout_ms))?));
        }
    }
    Ok(())
}

/// Answers each request line on standard input with a reply line.
fn serve() -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let reply = match serde_json::from_str::<AgentRequest>(&line?) {
            Ok(request) => execute(&request),
            Err(e) => AgentReply { status: None, stdout: String::new(), stderr: format!("bad request: {e}") },
        };
        writeln!(out, "{}", serde_json::to_string(&reply)?)?;
        out.flush()?;
    }
    Ok(())
}

/// Runs one request's argument vector.
fn execute(request: &AgentRequest) -> AgentReply {
    let failed = |e: String| AgentReply { status: None, stdout: String::new(), stderr: e };
    let Some((program, args)) = request.argv.split_first() else { return failed("an empty command".into()) };
    match netns::command::run_with_stdin_output(&request.argv, request.stdin.as_deref()) {
        Ok(output) => AgentReply {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        Err(e) => failed(format!("could not start {program} {}: {e}", args.join(" "))),
    }
}

/// Sends one line to a Unix socket (a daemon's control socket) and reads
/// the one line it answers, within two seconds.
pub fn call_unix(socket: &Path, line: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    writeln!(stream, "{line}")?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(answer)
}

/// Whether a handshake from `from` (any port) to `to` completes in time:
/// the way a node bound to `from` would reach `to`.
fn connects(from: IpAddr, to: SocketAddr, timeout: Duration) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let socket = if from.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(from, 0)).with_context(|| format!("binding {from}"))?;
        Ok(matches!(tokio::time::timeout(timeout, socket.connect(to)).await, Ok(Ok(_))))
    })
}

/// `PID:START_TIME`, as [`record`] writes it.
pub fn parse_process(text: &str) -> anyhow::Result<Spawned> {
    let (pid, start) = text.split_once(':').with_context(|| format!("{text:?} is not PID:START_TIME"))?;
    Ok(Spawned {
        pid: pid.parse().with_context(|| format!("bad pid in {text:?}"))?,
        start_time: start.parse().with_context(|| format!("bad start time in {text:?}"))?,
    })
}

/// A process as the agent's arguments name it.
pub fn record(process: Spawned) -> String {
    format!("{}:{}", process.pid, process.start_time)
}

/// `KILL`, `SIGKILL` or `kill`, and the like.
pub fn parse_signal(name: &str) -> anyhow::Result<Signal> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse().with_context(|| format!("unknown signal {name:?}"))
}

fn split_env(kv: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_and_signals_read_back_as_written() {
        let p = Spawned { pid: 42, start_time: 77 };
        assert_eq!(parse_process(&record(p)).unwrap(), p);
        assert!(parse_process("42").is_err());
        assert_eq!(parse_signal("kill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGSTOP").unwrap(), Signal::SIGSTOP);
        assert!(parse_signal("NOPE").is_err());
    }
}
