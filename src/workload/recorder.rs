//! The recorder: one thread that turns samples into CSV rows, off the
//! request path.
//!
//! Clients only push a `Sample` into an unbounded channel; everything else
//! — staleness, the CSV, the summary's tally — happens here. Staleness needs
//! every write acknowledged before a read started to be known when the read
//! is judged, and samples from different clients arrive in no strict order,
//! so samples are held for `HOLD` and handled in order of completion: a
//! write acknowledged before a read began ended before the read ended.
//! Each request also goes to the history spool, one JSON line, with what
//! the CSV leaves out (value ids, dots, clocks).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::history::{Brief, History};
use super::ops::{key_name, Op};
use super::sample::Sample;
use super::staleness::AckedWrites;
use super::stats::{Row, Stats};
use crate::api::dot::{Clock, Dot};
use crate::api::run::Request;

/// How long a sample waits for samples that finished before it.
const HOLD: Duration = Duration::from_secs(1);
const FLUSH_EVERY: Duration = Duration::from_millis(100);

pub enum Message {
    Sample(Sample),
    /// The measured run starts: times in the CSV count from here.
    Start {
        t0_us: i64,
    },
}

pub struct Recorder {
    sender: Sender<Message>,
    thread: JoinHandle<anyhow::Result<Recorded>>,
}

/// What the recorder leaves once every client is done.
pub struct Recorded {
    pub rows: u64,
    pub stats: Stats,
    pub acked: AckedWrites,
    /// Every measured request in brief.
    pub history: History,
    /// Reads whose `X-Dynamo-Clock` could not be parsed (a store bug if any).
    pub unreadable_clocks: u64,
}

impl Recorder {
    /// Starts the thread writing `csv` and the history `spool`; `nodes`
    /// names entry indices; `origin` is the instant samples count from.
    pub fn start(csv: &Path, spool: &Path, nodes: Vec<String>, origin: Instant) -> anyhow::Result<Recorder> {
        let create = |path: &Path| {
            File::create(path)
                .map(|file| BufWriter::with_capacity(1 << 20, file))
                .with_context(|| format!("creating {}", path.display()))
        };
        let writer = csv::Writer::from_writer(create(csv)?);
        let spool = create(spool)?;
        let (sender, receiver) = mpsc::channel();
        let state = State { writer, spool, nodes, t0_us: None, pending: Vec::new(), recorded: Recorded::empty() };
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || state.run(receiver, origin))
            .context("starting the recorder thread")?;
        Ok(Recorder { sender, thread })
    }

    pub fn sender(&self) -> Sender<Message> {
        self.sender.clone()
    }

    /// Waits for every sender to be dropped and every row to be written.
    pub fn finish(self) -> anyhow::Result<Recorded> {
        drop(self.sender);
        self.thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Recorded {
    fn empty() -> Self {
        Recorded {
            rows: 0,
            stats: Stats::default(),
            acked: AckedWrites::default(),
            history: History::default(),
            unreadable_clocks: 0,
        }
    }
}

struct State {
    writer: csv::Writer<BufWriter<File>>,
    spool: BufWriter<File>,
    nodes: Vec<String>,
    t0_us: Option<i64>,
    pending: Vec<Sample>,
    recorded: Recorded,
}

impl State {
    /// Drains the channel every `FLUSH_EVERY` rather than waiting on it: a
    /// receiver blocked in `recv` is woken by every send, a context switch
    /// per request that cost the clients more CPU than the rest of the
    /// recorder together.
    fn run(mut self, receiver: Receiver<Message>, origin: Instant) -> anyhow::Result<Recorded> {
        loop {
            std::thread::sleep(FLUSH_EVERY);
            let connected = loop {
                match receiver.try_recv() {
                    Ok(Message::Sample(sample)) => self.pending.push(sample),
                    Ok(Message::Start { t0_us }) => self.t0_us = Some(t0_us),
                    Err(TryRecvError::Empty) => break true,
                    Err(TryRecvError::Disconnected) => break false,
                }
            };
            if !connected {
                break;
            }
            let now_us = origin.elapsed().as_micros() as i64;
            self.flush(Some(now_us - HOLD.as_micros() as i64))?;
        }
        self.flush(None)?;
        self.writer.flush().context("writing the workload CSV")?;
        self.spool.flush().context("writing the history spool")?;
        Ok(self.recorded)
    }

    /// Writes the held samples that ended before `until` (all when `None`),
    /// in order of completion. Nothing is written before t0 is known.
    fn flush(&mut self, until: Option<i64>) -> anyhow::Result<()> {
        let Some(t0_us) = self.t0_us.or(until.is_none().then_some(0)) else { return Ok(()) };
        self.pending.sort_unstable_by_key(|s| s.end_us);
        let ready = until.map_or(self.pending.len(), |u| self.pending.partition_point(|s| s.end_us < u));
        let samples: Vec<Sample> = self.pending.drain(..ready).collect();
        for sample in samples {
            self.write(sample, t0_us)?;
        }
        Ok(())
    }

    fn write(&mut self, sample: Sample, t0_us: i64) -> anyhow::Result<()> {
        let ok = sample.ok();
        let mut row = Row {
            t_start_us: sample.intended_us - t0_us,
            t_end_us: sample.end_us - t0_us,
            latency_us: sample.end_us - sample.intended_us,
            client: sample.client,
            op: sample.op.as_str(),
            key: key_name(sample.key),
            entry: &self.nodes[sample.entry as usize],
            node: sample.coordinator.as_deref().unwrap_or(""),
            ok,
            status: sample.outcome.label(),
            siblings: sample.siblings,
            siblings_after_write: sample.siblings_after.filter(|_| ok && sample.op == Op::Update),
            vclock_entries: 0,
            stale: None,
            stale_versions: None,
            stale_ms: None,
            phase: sample.phase.as_str(),
        };
        let recorded = &mut self.recorded;
        match sample.op {
            Op::Update if ok => {
                if let Some(dot) = sample.dot.as_deref().and_then(|d| d.parse::<Dot>().ok()) {
                    recorded.acked.acknowledge(sample.key, dot, sample.end_us);
                }
                if let Some(Ok(clock)) = sample.clock.as_deref().map(Clock::parse) {
                    row.vclock_entries = clock.len() as u32;
                }
            }
            // An update's read is judged as any read: its row says whether it was stale.
            Op::Read | Op::UpdateRead if ok => match Clock::parse(sample.clock.as_deref().unwrap_or("")) {
                Ok(clock) => {
                    row.vclock_entries = clock.len() as u32;
                    let missed = recorded.acked.missed(sample.key, &clock, sample.sent_us);
                    row.stale = Some(missed.is_some());
                    row.stale_versions = Some(missed.map_or(0, |m| m.versions));
                    row.stale_ms = Some(missed.map_or(0.0, |m| (sample.sent_us - m.oldest_acked_us) as f64 / 1000.0));
                }
                Err(_) => recorded.unreadable_clocks += 1,
            },
            _ => {}
        }
        recorded.stats.observe(&row, sample.op, sample.phase);
        recorded.history.push(Brief {
            start_us: row.t_start_us,
            end_us: row.t_end_us,
            entry: sample.entry,
            node: self.nodes.iter().position(|n| Some(n.as_str()) == sample.coordinator.as_deref()).map(|i| i as u16),
            vclock_entries: row.vclock_entries.min(u16::MAX as u32) as u16,
            phase: sample.phase,
            ok,
        });
        self.writer.serialize(&row).context("writing the workload CSV")?;
        recorded.rows += 1;
        let entry = row.entry.to_owned();
        self.spool_request(sample, entry)
    }

    fn spool_request(&mut self, sample: Sample, entry: String) -> anyhow::Result<()> {
        let request = Request {
            client: sample.client,
            op: sample.op.as_str().to_owned(),
            key: key_name(sample.key),
            entry,
            node: sample.coordinator,
            sent_ns: sample.sent_us * 1000,
            end_ns: sample.end_us * 1000,
            completion: sample.outcome.completion(sample.op),
            status: sample.outcome.label(),
            phase: sample.phase.as_str().to_owned(),
            written: sample.written,
            read: sample.read,
            dot: sample.dot,
            clock: sample.clock,
        };
        serde_json::to_writer(&mut self.spool, &request).context("writing the history spool")?;
        self.spool.write_all(b"\n").context("writing the history spool")
    }
}
