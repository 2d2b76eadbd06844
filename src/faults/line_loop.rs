//! The delay line's packet loop: reads the hub's queue, gives each packet
//! the fate its node's impairments draw (see [`super::impairment`]), and
//! accepts it when it is due.
//!
//! Packets of one flow (addresses and ports, one way) leave in the order
//! they came unless a reorder fault picked them: a jittered delay alone
//! spreads the times but does not reorder a connection's packets (netem's
//! jitter does reorder them; TCP then sees reordering nobody asked for).
//! Order is kept per flow, not per pair of hosts, so that a new
//! connection's packets are not held behind an old one's. A
//! packet that matches no impairment (another port of a targeted node) is
//! accepted at once. On stop, every held packet is accepted before the
//! queue closes (the kernel would drop them).

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use netns::nfqueue::{NfQueue, NfqError, Packet, Verdict};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::impairment::{Draws, Fate, Impairment, Way};

/// The impairments in force, by fault id: the address each one targets and
/// what it does. Changed by the control socket while the loop runs.
pub type Table = Arc<RwLock<BTreeMap<u32, (Ipv4Addr, Impairment)>>>;

/// What the loop did, for its log.
#[derive(Debug, Default)]
pub struct Stats {
    pub held: u64,
    pub passed: u64,
    pub dropped: u64,
    pub dropped_over_limit: u64,
    pub released_at_stop: u64,
}

/// One way of one connection (or of all port-less traffic between two hosts).
type Flow = ((Ipv4Addr, Ipv4Addr), Option<(u16, u16)>);

/// Longest the loop waits before looking at the stop flag.
const TICK: Duration = Duration::from_millis(10);

/// Runs until `stop`: at most `max_held` packets wait at once (more are dropped).
pub fn run(mut queue: NfQueue, table: &Table, max_held: usize, stop: &AtomicBool) -> Result<Stats, NfqError> {
    let mut stats = Stats::default();
    let mut due: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
    let mut last_due: HashMap<Flow, Instant> = HashMap::new();
    let mut draws = Draws::default();
    let mut rng = SmallRng::from_os_rng();
    let mut order = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while let Some(Reverse((_, _, id))) = due.peek_mut().filter(|next| next.0 .0 <= now).map(PeekMut::pop) {
            queue.verdict(id, Verdict::Accept)?;
        }
        let wait = due.peek().map_or(TICK, |Reverse((at, _, _))| at.saturating_duration_since(now).min(TICK));
        let packets = queue.recv(Some(wait))?;
        if packets.is_empty() {
            continue;
        }
        let table = table.read().unwrap_or_else(|e| e.into_inner()).clone();
        draws.retain(|id| table.contains_key(&id));
        // A flow whose last packet is gone holds nothing back.
        last_due.retain(|_, at| *at > now);
        for packet in packets {
            let matching = matching(&table, &packet);
            let fate = if matching.is_empty() { None } else { Some(draws.fate(&mut rng, &matching)) };
            match fate {
                None => {
                    queue.verdict(packet.id, Verdict::Accept)?;
                    stats.passed += 1;
                }
                Some(Fate::Drop) => {
                    queue.verdict(packet.id, Verdict::Drop)?;
                    stats.dropped += 1;
                }
                Some(Fate::Hold { .. }) if due.len() >= max_held => {
                    queue.verdict(packet.id, Verdict::Drop)?;
                    stats.dropped_over_limit += 1;
                }
                Some(Fate::Hold { delay, in_order }) => {
                    let mut at = packet.arrived + delay;
                    if let (true, Some(addresses)) = (in_order, packet.addresses) {
                        let last = last_due.entry((addresses, packet.ports)).or_insert(at);
                        at = at.max(*last);
                        *last = at;
                    }
                    order += 1;
                    due.push(Reverse((at, order, packet.id)));
                    stats.held += 1;
                }
            }
        }
    }
    stats.released_at_stop = queue.close()? as u64;
    Ok(stats)
}

/// The impairments `packet` goes through, with the way it crosses each one's link.
fn matching(table: &BTreeMap<u32, (Ipv4Addr, Impairment)>, packet: &Packet) -> Vec<(u32, Way, Impairment)> {
    let Some((source, dest)) = packet.addresses else { return Vec::new() };
    let on_port = |port: Option<u16>| match (port, packet.ports) {
        (None, _) => true,
        (Some(port), Some((from, to))) => from == port || to == port,
        (Some(_), None) => false,
    };
    table
        .iter()
        .filter(|(_, (_, impairment))| on_port(impairment.port))
        .filter_map(|(&id, &(addr, impairment))| match addr {
            a if a == dest => Some((id, Way::To, impairment)),
            a if a == source => Some((id, Way::From, impairment)),
            _ => None,
        })
        .collect()
}
