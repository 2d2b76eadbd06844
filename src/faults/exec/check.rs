//! The probes that a kernel network fault took effect, whatever backend
//! made it: they measure the effect from the client namespace — TCP
//! handshakes for delays (one round trip each), numbered UDP datagrams
//! into the node's namespace for loss, duplication, reordering and damage
//! (one way: towards the node) — and, for a per-port fault, that the
//! node's other port is untouched.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use super::Target;
use crate::api::fault::{JitterDist, PortSelector};
use crate::faults::fault::{Fault, Jitter};

/// Handshakes timed for a jitter's spread: enough for its standard
/// deviation to land within 20 % of the asked one (normal) nearly always.
const JITTER_SAMPLES: usize = 100;
/// Pareto's tail makes a sample's deviation wander more: more handshakes,
/// and a wider band.
const PARETO_SAMPLES: usize = 150;
/// Datagrams sent for a share: a 20 % loss is measured to about ±1.5 points.
const DATAGRAMS: u32 = 2000;
const DATAGRAM_GAP: Duration = Duration::from_micros(100);

/// Measures `fault`'s effect on the target; the text goes to the journal.
pub fn verify(target: &Target, fault: &Fault) -> anyhow::Result<String> {
    let measured = match *fault {
        Fault::Slow { slow_ms, jitter: None, .. } => slow(target, fault.port(), slow_ms)?,
        Fault::Slow { slow_ms, jitter: Some(jitter), .. } => jittered(target, fault.port(), slow_ms, jitter)?,
        Fault::Loss { pct, correlation_pct, .. } => lossy(target, fault.port(), pct, correlation_pct, "lost")?,
        Fault::Duplicate { pct, .. } => duplicated(target, fault.port(), pct)?,
        Fault::Reorder { pct, .. } => reordered(target, fault.port(), pct)?,
        Fault::Corrupt { pct, .. } => lossy(target, fault.port(), pct, None, "damaged (dropped by the checksum)")?,
        _ => anyhow::bail!("{:?} is not a network fault", fault.kind()),
    };
    Ok(match fault.port() {
        PortSelector::All => measured,
        port => format!("{measured}; {}", other_port_untouched(target, port, fault)?),
    })
}

/// The address of the port a fault targets (the client port for all).
fn probed(target: &Target, port: PortSelector) -> SocketAddr {
    SocketAddr::new(target.node.addr.ip(), target.port(port).unwrap_or(target.node.entry.port))
}

/// Where clients run: the client namespace, or (a cluster on hosts) this
/// machine's own.
fn client_namespace(target: &Target) -> Option<String> {
    target.cluster.meta().client_netns.clone()
}

/// Runs `probe` where the clients run.
fn at_clients<T>(namespace: Option<&str>, probe: impl FnOnce() -> T + Send) -> anyhow::Result<T>
where
    T: Send,
{
    match namespace {
        Some(namespace) => Ok(netns::namespace::run_in(namespace, probe)?),
        None => Ok(probe()),
    }
}

/// Round trips take the delay asked.
fn slow(target: &Target, port: PortSelector, slow_ms: u64) -> anyhow::Result<String> {
    let node = target.name();
    let addr = probed(target, port);
    let client_ns = client_namespace(target);
    if slow_ms >= 2000 {
        // The seed's huge-delay partition: waiting out a round trip is
        // pointless; a handshake must not complete in a second.
        let answered =
            at_clients(client_ns.as_deref(), || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())?;
        ensure!(!answered, "{node} still completes a handshake within 1 s");
        return Ok(format!("no handshake with {node} completes within 1 s"));
    }
    let mut times = handshakes(client_ns.as_deref(), addr, 5)?;
    times.sort_by(f64::total_cmp);
    let rtt = times[2];
    let asked = slow_ms as f64;
    ensure!(rtt >= asked * 0.8, "a round trip to {node} takes {rtt:.1} ms, not the {asked} ms asked");
    let from = if client_ns.is_some() { "the client namespace" } else { "this machine" };
    Ok(format!("a TCP handshake with {node} (port {}) from {from} takes {rtt:.1} ms", addr.port()))
}

/// Round trips take the delay asked on average, spread by the deviation asked.
fn jittered(target: &Target, port: PortSelector, slow_ms: u64, jitter: Jitter) -> anyhow::Result<String> {
    let node = target.name();
    let addr = probed(target, port);
    let (samples, band) = match jitter.dist {
        JitterDist::Normal => (JITTER_SAMPLES, 0.2),
        JitterDist::Pareto => (PARETO_SAMPLES, 0.5),
    };
    let times = handshakes(client_namespace(target).as_deref(), addr, samples)?;
    let (mean, sd) = mean_sd(&times);
    let (asked_mean, asked_sd) = (slow_ms as f64, jitter.ms as f64);
    let seen = format!(
        "{samples} TCP handshakes with {node} (port {}): mean {mean:.1} ms, standard deviation {sd:.1} ms \
         ({} jitter of {asked_sd} ms asked on {asked_mean} ms)",
        addr.port(),
        crate::faults::fault::flag_name(&jitter.dist)
    );
    // Delays cannot go below zero: a spread wider than half the delay is
    // cut there, which lowers the mean less than it lowers nothing else.
    ensure!(mean >= asked_mean * 0.8, "{seen}: the mean is short");
    ensure!((sd - asked_sd).abs() <= asked_sd * band, "{seen}: not within {:.0} % of the deviation", band * 100.0);
    Ok(seen)
}

/// The share of datagrams lost matches, and so does the chance of losing
/// one after a lost one, when asked.
fn lossy(
    target: &Target,
    port: PortSelector,
    pct: u8,
    correlation_pct: Option<u8>,
    how: &str,
) -> anyhow::Result<String> {
    let arrivals = Arrivals::probe(target, probed(target, port))?;
    let (lost, after_loss) = (arrivals.lost_pct(), arrivals.loss_after_loss_pct());
    let seen = format!(
        "{lost:.1} % of {DATAGRAMS} datagrams to {} {how}, {after_loss:.0} % of those after a lost one",
        target.name()
    );
    let tolerance = (f64::from(pct) * 0.25).max(5.0);
    ensure!((lost - f64::from(pct)).abs() <= tolerance, "{seen}: not the {pct} % asked");
    if let Some(correlation) = correlation_pct {
        let tolerance = 15.0;
        ensure!(
            (after_loss - f64::from(correlation)).abs() <= tolerance,
            "{seen}: not the {correlation} % loss-after-loss asked"
        );
    }
    Ok(seen)
}

fn duplicated(target: &Target, port: PortSelector, pct: u8) -> anyhow::Result<String> {
    let arrivals = Arrivals::probe(target, probed(target, port))?;
    let twice = f64::from(arrivals.duplicates) * 100.0 / f64::from(DATAGRAMS);
    let seen = format!("{twice:.1} % of {DATAGRAMS} datagrams to {} arrived twice", target.name());
    ensure!((twice - f64::from(pct)).abs() <= (f64::from(pct) * 0.25).max(4.0), "{seen}: not the {pct} % asked");
    Ok(seen)
}

fn reordered(target: &Target, port: PortSelector, pct: u8) -> anyhow::Result<String> {
    let arrivals = Arrivals::probe(target, probed(target, port))?;
    let late = f64::from(arrivals.out_of_order) * 100.0 / f64::from(arrivals.received.max(1));
    let seen = format!("{late:.1} % of the datagrams to {} arrived after a later one", target.name());
    // Each datagram sent at once overtakes the held ones sent just before
    // it; at this pace that is several per reordered one.
    ensure!(late >= f64::from(pct) / 2.0, "{seen}: {pct} % reordered was asked");
    Ok(seen)
}

/// The node's other port shows none of the fault.
fn other_port_untouched(target: &Target, port: PortSelector, fault: &Fault) -> anyhow::Result<String> {
    let other = if port == PortSelector::Peer { PortSelector::Client } else { PortSelector::Peer };
    let addr = probed(target, other);
    if let Fault::Slow { slow_ms, .. } = *fault {
        let times = handshakes(client_namespace(target).as_deref(), addr, 5)?;
        let (mean, _) = mean_sd(&times);
        ensure!(mean < slow_ms as f64 / 2.0, "port {} is slowed too: handshakes take {mean:.1} ms", addr.port());
        return Ok(format!("port {} untouched (handshakes {mean:.1} ms)", addr.port()));
    }
    let arrivals = Arrivals::probe(target, addr)?;
    let clean = arrivals.lost_pct() <= 1.0 && arrivals.duplicates == 0 && arrivals.out_of_order == 0;
    ensure!(clean, "port {} is affected too: {arrivals:?}", addr.port());
    Ok(format!("port {} untouched ({} of {DATAGRAMS} datagrams, in order, none twice)", addr.port(), arrivals.received))
}

/// The times in ms of `n` fresh TCP handshakes with `addr` from where the clients run.
fn handshakes(namespace: Option<&str>, addr: SocketAddr, n: usize) -> anyhow::Result<Vec<f64>> {
    let times = at_clients(namespace, || {
        (0..n)
            .map(|_| {
                let started = Instant::now();
                TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .map(|_| started.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<std::io::Result<Vec<_>>>()
    })?;
    times.with_context(|| format!("a handshake with {addr}"))
}

/// Sets the socket's receive buffer past `net.core.rmem_max` (root only).
pub fn force_receive_buffer(socket: &UdpSocket, bytes: libc::c_int) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor, and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_RCVBUFFORCE on the UDP probe: {}", std::io::Error::last_os_error());
    Ok(())
}

fn mean_sd(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// What became of numbered datagrams sent from the client namespace to a
/// UDP socket on the node's address (its namespace), in arrival order.
#[derive(Debug)]
struct Arrivals {
    received: u32,
    duplicates: u32,
    /// Arrivals after a datagram sent later had arrived.
    out_of_order: u32,
    /// Which of the sent ones arrived at least once.
    arrived: Vec<bool>,
}

impl Arrivals {
    fn probe(target: &Target, addr: SocketAddr) -> anyhow::Result<Arrivals> {
        let node_ns = target.node.entry.netns.clone().context("the node has no namespace")?;
        let receiver = netns::namespace::run_in(&node_ns, || UdpSocket::bind(addr))?
            .with_context(|| format!("binding a UDP probe on {addr} in {node_ns}"))?;
        // Room for every datagram: a receiver kept off the CPU by a busy
        // machine must not lose any to a full buffer, which reads as loss.
        force_receive_buffer(&receiver, 16 << 20)?;
        let sender = at_clients(client_namespace(target).as_deref(), || UdpSocket::bind("0.0.0.0:0"))??;
        let listening = std::thread::spawn(move || Arrivals::collect(&receiver));
        for seq in 0..DATAGRAMS {
            sender.send_to(&seq.to_be_bytes(), addr).with_context(|| format!("sending to {addr}"))?;
            std::thread::sleep(DATAGRAM_GAP);
        }
        listening.join().map_err(|_| anyhow::anyhow!("the UDP probe panicked"))?
    }

    /// Reads until a second passes without a datagram.
    fn collect(receiver: &UdpSocket) -> anyhow::Result<Arrivals> {
        receiver.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut arrivals =
            Arrivals { received: 0, duplicates: 0, out_of_order: 0, arrived: vec![false; DATAGRAMS as usize] };
        let (mut buf, mut highest) = ([0u8; 8], None);
        while let Ok(n) = receiver.recv(&mut buf) {
            let Some(seq) = buf.get(..4).filter(|_| n == 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                continue;
            };
            let Some(seen) = arrivals.arrived.get_mut(seq as usize) else { continue };
            arrivals.received += 1;
            arrivals.duplicates += u32::from(*seen);
            *seen = true;
            arrivals.out_of_order += u32::from(highest.is_some_and(|h| seq < h));
            highest = highest.max(Some(seq));
        }
        Ok(arrivals)
    }

    fn lost_pct(&self) -> f64 {
        self.arrived.iter().filter(|a| !**a).count() as f64 * 100.0 / self.arrived.len() as f64
    }

    /// Of the datagrams sent right after a lost one, the share lost too.
    fn loss_after_loss_pct(&self) -> f64 {
        let after_loss: Vec<bool> = self.arrived.windows(2).filter(|w| !w[0]).map(|w| !w[1]).collect();
        after_loss.iter().filter(|lost| **lost).count() as f64 * 100.0 / after_loss.len().max(1) as f64
    }
}
