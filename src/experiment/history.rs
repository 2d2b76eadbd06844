//! Writes `history_<stamp>.jsonl` (Jepsen's operation model, see
//! `api::run::history`) from the recorder's spool once the workload ends,
//! and appends the final reads after the lost-write checker ran.
//!
//! The spool is in order of completion; a history is in order of time,
//! invokes included. Requests are merged through a heap that releases an
//! event once no request still to come can start before it: requests are
//! read in completion order, so none to come started before (the latest
//! completion so far − the spool's disorder − the longest request), both
//! measured in a first pass. Memory stays bounded by what is in flight.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::holdings::Holding;
use crate::api::run::{Event, EventType, Function, ReplicaRead, Request, Value};
use crate::workload::ops::key_name;

/// Where the history stands after the workload's events: what the final
/// reads need to follow on.
pub struct Written {
    pub path: PathBuf,
    next_index: u64,
    /// The process after every client's.
    final_process: u64,
}

/// Turns `spool` into the history at `path` and removes the spool;
/// `clients` is the run's concurrency (a process's renumbering step).
pub fn write(spool: &Path, path: &Path, clients: u32) -> anyhow::Result<Written> {
    let (longest_ns, disorder_ns) = spread(spool)?;
    let mut out = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let mut merge = Merge::default();
    let mut processes: HashMap<u32, u64> = HashMap::new();
    let mut latest_end = i64::MIN;
    for request in requests(spool)? {
        let request = request?;
        let process = processes.entry(request.client).or_insert(request.client as u64);
        merge.push_request(&request, *process);
        if request.completion == EventType::Info {
            // Jepsen: a process whose operation is indeterminate never invokes again.
            *process += clients as u64;
        }
        latest_end = latest_end.max(request.end_ns);
        merge.release(latest_end - disorder_ns - longest_ns, &mut out)?;
    }
    merge.release(i64::MAX, &mut out)?;
    out.flush().with_context(|| format!("writing {}", path.display()))?;
    std::fs::remove_file(spool).with_context(|| format!("removing {}", spool.display()))?;
    let final_process = processes.values().map(|p| p + 1).max().unwrap_or(0).max(clients as u64);
    Ok(Written { path: path.to_owned(), next_index: merge.next_index, final_process })
}

/// Appends one final read per key (an invoke and its `ok` at `time_ns`).
pub fn append_final_reads(written: &Written, held: &HashMap<u32, Holding>, time_ns: i64) -> anyhow::Result<()> {
    let path = &written.path;
    let file = File::options().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut index = written.next_index;
    let mut keys: Vec<&u32> = held.keys().collect();
    keys.sort_unstable();
    for key in keys {
        let holding = &held[key];
        let replicas: Vec<ReplicaRead> = holding
            .copies
            .iter()
            .map(|c| ReplicaRead {
                node: c.node.clone(),
                versions: c.versions.iter().cloned().collect(),
                clock: c.clock.clone(),
                values: c.values.clone(),
            })
            .collect();
        let mut seen: Vec<String> = replicas.iter().flat_map(|r| r.values.iter().cloned()).collect();
        seen.sort_unstable();
        seen.dedup();
        let invoke = Event {
            index,
            kind: EventType::Invoke,
            process: written.final_process,
            f: Function::FinalRead,
            key: key_name(*key),
            value: None,
            time: time_ns,
            ..blank()
        };
        let ok = Event {
            index: index + 1,
            kind: EventType::Ok,
            value: Some(Value::Read(seen)),
            replicas: Some(replicas),
            unreadable: holding.unreadable.clone(),
            ..invoke.clone()
        };
        index += 2;
        line(&mut out, &invoke)?;
        line(&mut out, &ok)?;
    }
    out.flush().with_context(|| format!("writing {}", path.display()))
}

/// The longest request and the spool's disorder (how far a completion
/// comes after a later one), ns.
fn spread(spool: &Path) -> anyhow::Result<(i64, i64)> {
    let (mut longest, mut disorder, mut latest_end) = (0, 0, i64::MIN);
    for request in requests(spool)? {
        let request = request?;
        longest = longest.max(request.end_ns - request.sent_ns);
        disorder = disorder.max(latest_end.saturating_sub(request.end_ns));
        latest_end = latest_end.max(request.end_ns);
    }
    Ok((longest, disorder))
}

fn requests(spool: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Request>>> {
    let file = File::open(spool).with_context(|| format!("opening {}", spool.display()))?;
    let lines = BufReader::new(file).lines().enumerate();
    Ok(lines.map(|(no, text)| {
        let text = text.context("reading the history spool")?;
        serde_json::from_str(&text).with_context(|| format!("history spool line {}", no + 1))
    }))
}

/// Events waiting for their turn, by time; at one instant a completion
/// goes before an invoke (a process's next request may start the
/// nanosecond its previous one ended), then in arrival order.
#[derive(Default)]
struct Merge {
    heap: BinaryHeap<Reverse<(i64, u8, u64)>>,
    events: HashMap<u64, Event>,
    arrivals: u64,
    next_index: u64,
}

impl Merge {
    fn push_request(&mut self, request: &Request, process: u64) {
        let (invoke, completion) = events_of(request, process);
        self.push(invoke, 1);
        self.push(completion, 0);
    }

    fn push(&mut self, event: Event, rank: u8) {
        self.heap.push(Reverse((event.time, rank, self.arrivals)));
        self.events.insert(self.arrivals, event);
        self.arrivals += 1;
    }

    /// Writes every event before `until`, numbering them.
    fn release(&mut self, until: i64, out: &mut impl Write) -> anyhow::Result<()> {
        while let Some(Reverse((time, _, arrival))) = self.heap.peek().copied() {
            if time >= until {
                break;
            }
            self.heap.pop();
            let mut event = self.events.remove(&arrival).expect("every queued event is held");
            event.index = self.next_index;
            self.next_index += 1;
            line(out, &event)?;
        }
        Ok(())
    }
}

/// A request's invoke and completion. A completion stamped no later than
/// its invoke (both in whole µs) is moved 1 ns after it, so that it sorts after.
fn events_of(r: &Request, process: u64) -> (Event, Event) {
    let f = if r.op == "update" { Function::Write } else { Function::Read };
    let invoke = Event {
        kind: EventType::Invoke,
        process,
        f,
        key: r.key.clone(),
        value: r.written.clone().map(Value::Written),
        time: r.sent_ns,
        client: Some(r.client),
        op: Some(r.op.clone()),
        phase: Some(r.phase.clone()),
        entry: Some(r.entry.clone()),
        ..blank()
    };
    let value = match (&r.written, r.completion) {
        (Some(id), _) => Some(Value::Written(id.clone())),
        (None, EventType::Ok) => Some(Value::Read(r.read.clone())),
        (None, _) => None,
    };
    let completion = Event {
        kind: r.completion,
        value,
        time: r.end_ns.max(r.sent_ns + 1),
        node: r.node.clone(),
        status: Some(r.status.clone()),
        dot: r.dot.clone(),
        clock: r.clock.clone(),
        ..invoke.clone()
    };
    (invoke, completion)
}

fn blank() -> Event {
    Event {
        index: 0,
        kind: EventType::Invoke,
        process: 0,
        f: Function::Read,
        key: String::new(),
        value: None,
        time: 0,
        client: None,
        op: None,
        phase: None,
        entry: None,
        node: None,
        status: None,
        dot: None,
        clock: None,
        replicas: None,
        unreadable: Vec::new(),
    }
}

fn line(out: &mut impl Write, event: &Event) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, event).context("writing the history")?;
    out.write_all(b"\n").context("writing the history")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(client: u32, op: &str, sent_us: i64, end_us: i64, completion: EventType) -> Request {
        Request {
            client,
            op: op.into(),
            key: "user1".into(),
            entry: "node1".into(),
            node: Some("node1".into()),
            sent_ns: sent_us * 1000,
            end_ns: end_us * 1000,
            completion,
            status: "200".into(),
            phase: "warmup".into(),
            written: (op == "update").then(|| format!("c{client}-{sent_us}")),
            read: if op == "read" { vec!["c0-1".into()] } else { Vec::new() },
            dot: None,
            clock: None,
        }
    }

    fn history_of(requests: &[Request], clients: u32) -> (Vec<Event>, Written) {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let text: String = requests.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        std::fs::write(&spool, text).unwrap();
        let path = dir.path().join("history.jsonl");
        let written = write(&spool, &path, clients).unwrap();
        assert!(!spool.exists(), "the spool is removed");
        let events =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (events, Written { path: PathBuf::new(), ..written })
    }

    #[test]
    fn events_are_in_time_order_with_each_completion_after_its_invoke() {
        // In completion order, as the recorder spools them; client 1's long
        // write started before client 0's first read ended.
        let requests = [
            request(0, "read", 100, 200, EventType::Ok),
            request(0, "update", 200, 300, EventType::Ok),
            request(1, "update", 50, 5_000, EventType::Info),
            request(1, "read", 5_000, 5_100, EventType::Fail),
        ];
        let (events, written) = history_of(&requests, 2);
        let order: Vec<(EventType, u64, i64)> = events.iter().map(|e| (e.kind, e.process, e.time / 1000)).collect();
        assert_eq!(
            order,
            [
                (EventType::Invoke, 1, 50),
                (EventType::Invoke, 0, 100),
                (EventType::Ok, 0, 200),
                (EventType::Invoke, 0, 200),
                (EventType::Ok, 0, 300),
                (EventType::Info, 1, 5_000),
                (EventType::Invoke, 3, 5_000),
                (EventType::Fail, 3, 5_100),
            ],
            "after its info, client 1 is process 1 + 2 clients"
        );
        assert!(events.iter().enumerate().all(|(i, e)| e.index == i as u64));
        assert_eq!(events[2].value, Some(Value::Read(vec!["c0-1".into()])));
        assert_eq!(events[3].value, Some(Value::Written("c0-200".into())), "a write's invoke names its value");
        assert_eq!(events[7].value, None, "a failed read returned nothing");
        assert_eq!((written.next_index, written.final_process), (8, 4));
    }
}
