//! HdrHistogram interval logs, one per operation (`latency_<op>_<stamp>.hlog`),
//! as YCSB's `hdrhistogram` measurement type writes them (its
//! `hdrhistogram.fileoutput`), so HdrHistogram's own tools
//! (HistogramLogProcessor, HdrHistogramVisualizer) read them.
//!
//! Each line is one second of the measured run (warmup on; the preload is
//! left out): the latencies in µs of the successful requests of that
//! operation that completed in it, the same requests as the summary's
//! figures. Made from the workload CSV, which is in completion order.
//! `Interval_Max` is in µs (Java's writer divides it by 10⁶ by default;
//! it is only for people, readers take the histogram).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// The operations that get a log, as the CSV names them.
pub const OPERATIONS: [&str; 3] = ["read", "update", "update_read"];

/// Intervals still open for rows completing out of order: the recorder
/// holds samples for a second before it sorts them, so a row is never
/// more than a couple of seconds behind the latest.
const OPEN_INTERVALS: u64 = 3;

const LEGEND: &str = "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n";

#[derive(serde::Deserialize)]
struct Row {
    t_end_us: i64,
    latency_us: i64,
    op: String,
    ok: bool,
    phase: String,
}

/// Writes one log per operation in `OPERATIONS` from the workload CSV;
/// `path_of(op)` names each file and `t0` is the measured run's start
/// (the logs' StartTime and BaseTime). Returns the files written.
pub fn write(csv: &std::path::Path, t0: SystemTime, path_of: impl Fn(&str) -> PathBuf) -> anyhow::Result<Vec<PathBuf>> {
    let mut logs: Vec<Log> = OPERATIONS.iter().map(|op| Log::new(op, t0, path_of(op))).collect();
    let mut reader = csv::Reader::from_path(csv).with_context(|| format!("reading {}", csv.display()))?;
    for row in reader.deserialize::<Row>() {
        let row = row.with_context(|| format!("reading {}", csv.display()))?;
        if !row.ok || row.phase == "load" {
            continue;
        }
        if let Some(log) = logs.iter_mut().find(|l| l.op == row.op) {
            log.record(&row)?;
        }
    }
    logs.into_iter().map(Log::finish).collect()
}

/// One operation's log being written: its open intervals by second.
struct Log {
    op: &'static str,
    path: PathBuf,
    text: Vec<u8>,
    open: BTreeMap<u64, Histogram<u64>>,
}

impl Log {
    fn new(op: &'static str, t0: SystemTime, path: PathBuf) -> Log {
        let mut text = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment(&format!("[Logging for: {}]", op.to_uppercase()))
            .add_comment("[Histogram log format version 1.3]")
            .with_start_time(t0)
            .with_base_time(t0)
            .begin_log_with(&mut text, &mut serializer)
            .expect("writing to memory");
        text.extend_from_slice(LEGEND.as_bytes());
        Log { op, path, text, open: BTreeMap::new() }
    }

    fn record(&mut self, row: &Row) -> anyhow::Result<()> {
        let second = (row.t_end_us.max(0) / 1_000_000) as u64;
        // A row later than the open intervals goes to the oldest: its
        // count still adds up, a second early.
        let second = self.open.keys().next().map_or(second, |&oldest| second.max(oldest));
        let histogram = self.open.entry(second).or_insert_with(|| Histogram::new(3).expect("3 significant digits"));
        histogram.record(row.latency_us.max(0) as u64).context("recording a latency")?;
        while self.open.len() as u64 > OPEN_INTERVALS {
            self.close_oldest()?;
        }
        Ok(())
    }

    fn close_oldest(&mut self) -> anyhow::Result<()> {
        let Some((second, histogram)) = self.open.pop_first() else { return Ok(()) };
        let mut serializer = V2DeflateSerializer::new();
        // A builder with no headers writes nothing before the interval.
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.text, &mut serializer)
            .context("writing an interval log")?;
        let (start, length) = (Duration::from_secs(second), Duration::from_secs(1));
        writer.write_histogram(&histogram, start, length, None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<PathBuf> {
        while !self.open.is_empty() {
            self.close_oldest()?;
        }
        let mut file =
            std::fs::File::create(&self.path).with_context(|| format!("creating {}", self.path.display()))?;
        file.write_all(&self.text).with_context(|| format!("writing {}", self.path.display()))?;
        Ok(self.path)
    }
}
