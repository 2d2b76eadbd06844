//! The NFQUEUE delay line: the kernel-level network faults (slow with or
//! without jitter, correlated or per-port loss, reorder, corrupt) where the
//! kernel has no sch_netem, and per-port ones everywhere.
//!
//! One daemon per cluster — `dynabed delay-line`, detached, in the hub
//! namespace, owned through the run state by pid and start time — reads the
//! hub's queue, where iptables rules in the hub's FORWARD path send every
//! packet from or to a slowed node (holding packets on the sender's output
//! hook would collapse TCP; see KERNEL-FACTS.md). Each packet goes through
//! the impairments of its source and of its destination (see
//! [`super::line_loop`]), so a round trip through a node slowed by
//! `slow_ms` takes `slow_ms` longer, and a packet between two slowed nodes
//! gets both delays. The rules use queue-bypass: a
//! dead daemon lets traffic through undelayed rather than cutting a node
//! off. The daemon never fails open while it runs: beyond its queue length
//! packets are dropped. On SIGTERM it releases every held packet before it
//! closes the queue (the kernel would drop them).
//!
//! It is controlled over a Unix socket in the run-state folder, one JSON
//! command per line: `{"set": 7, "addr": "198.18.0.4", "impairment":
//! {"delay_ms": 100, ...}}` (fault 7's entry), `{"clear": 7}`,
//! `{"clear_addr": "198.18.0.4"}`, `{"status": true}`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use netns::nfqueue::{NfQueue, QueueConfig};
use serde::{Deserialize, Serialize};

use super::impairment::Impairment;
use super::line_loop::{self, Table};
use crate::cluster::place::Place;

/// The queue number in the hub (queues are per network namespace).
pub const QUEUE: u16 = 0;
/// Packets held at once: 10 ms at ~400k packets/s, or 1 s at 4k/s.
pub const QUEUE_LEN: u32 = 4096;

/// Bytes of each packet the queue copies: an IPv4 header with options and the ports after it.
const COPY_RANGE: u16 = 64;

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Command {
    Set { set: u32, addr: Ipv4Addr, impairment: Impairment },
    Clear { clear: u32 },
    ClearAddr { clear_addr: Ipv4Addr },
    Status { status: bool },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// The impairments still in force, by fault id.
    pub impaired: BTreeMap<u32, (Ipv4Addr, Impairment)>,
    #[serde(default)]
    pub error: Option<String>,
}

pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("delay-line.sock")
}

/// The daemon: serves commands until SIGTERM, then releases every held
/// packet and exits. Reads `queue` in the namespace it was started in (the
/// hub, or a host's own).
pub fn serve(socket: &Path, queue: u16) -> anyhow::Result<()> {
    // Block the stop signals before any thread starts, so that only the
    // waiting thread ever sees them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook_stop(&stop)?;
    let table: Table = Arc::new(RwLock::new(BTreeMap::new()));
    let queue = NfQueue::open(QueueConfig { copy_range: COPY_RANGE, ..QueueConfig::new(queue, QUEUE_LEN) })
        .with_context(|| format!("binding NFQUEUE {queue}"))?;
    let line_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let line = {
        let (table, line_stop) = (table.clone(), line_stop.clone());
        std::thread::spawn(move || line_loop::run(queue, &table, QUEUE_LEN as usize, &line_stop))
    };
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).with_context(|| format!("listening on {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    tracing::info!(socket = %socket.display(), "delay line serving");
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &table) {
                    tracing::warn!("delay-line control connection: {e:#}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e).context("accepting a control connection"),
        }
        anyhow::ensure!(!line.is_finished(), "the packet loop ended: {:?}", line.join());
    }
    line_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let stats =
        line.join().map_err(|_| anyhow::anyhow!("the packet loop panicked"))?.context("stopping the delay line")?;
    let _ = std::fs::remove_file(socket);
    tracing::info!(?stats, "delay line stopped; every held packet released");
    Ok(())
}

/// SIGTERM and SIGINT set `stop` (the accept loop polls it).
fn signal_hook_stop(stop: &Arc<std::sync::atomic::AtomicBool>) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    let stop = stop.clone();
    std::thread::spawn(move || {
        if set.wait().is_ok() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    Ok(())
}

fn answer(stream: UnixStream, table: &Table) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut writer = stream.try_clone()?;
    let mut line = String::new();
    BufReader::new(stream).take(4096).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Command>(&line) {
        Ok(command) => {
            let mut table = table.write().unwrap_or_else(|e| e.into_inner());
            match command {
                Command::Set { set, addr, impairment } => {
                    table.insert(set, (addr, impairment));
                }
                Command::Clear { clear } => {
                    table.remove(&clear);
                }
                Command::ClearAddr { clear_addr } => table.retain(|_, (addr, _)| *addr != clear_addr),
                Command::Status { .. } => {}
            }
            Reply { ok: true, impaired: table.clone(), error: None }
        }
        Err(e) => Reply { ok: false, impaired: BTreeMap::new(), error: Some(format!("bad command: {e}")) },
    };
    writeln!(writer, "{}", serde_json::to_string(&reply)?)?;
    Ok(())
}

/// A daemon's control socket, and where it is.
pub struct Control {
    pub place: Place,
    pub socket: PathBuf,
}

/// Sends one command to a running daemon.
fn request(control: &Control, command: &Command) -> anyhow::Result<Reply> {
    let line = control.place.call_unix(&control.socket, &serde_json::to_string(command)?)?;
    let reply: Reply = serde_json::from_str(&line).with_context(|| format!("bad reply {line:?}"))?;
    if !reply.ok {
        bail!("delay line refused: {}", reply.error.unwrap_or_default());
    }
    Ok(reply)
}

/// Puts fault `fault`'s impairment of `addr` in force (replacing any it had).
pub fn set(control: &Control, fault: u32, addr: Ipv4Addr, impairment: Impairment) -> anyhow::Result<Reply> {
    request(control, &Command::Set { set: fault, addr, impairment })
}

/// Ends fault `fault`'s impairment, or (`None`) every impairment of `addr`.
pub fn clear(control: &Control, fault: Option<u32>, addr: Ipv4Addr) -> anyhow::Result<Reply> {
    match fault {
        Some(fault) => request(control, &Command::Clear { clear: fault }),
        None => request(control, &Command::ClearAddr { clear_addr: addr }),
    }
}

pub fn status(control: &Control) -> anyhow::Result<Reply> {
    request(control, &Command::Status { status: true })
}

/// Waits until a freshly started daemon answers.
pub fn wait_ready(control: &Control, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match status(control) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.context("the delay line did not start")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
