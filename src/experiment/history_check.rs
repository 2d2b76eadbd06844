//! `dynabed check HISTORY`: the run's own lost-write and staleness checks,
//! from its history file alone.
//!
//! Lost writes are judged as the run judged them (`checker::judge`): each
//! acknowledged write against the final reads' replicas. Staleness as the
//! recorder judged it: a read whose clock misses a write acknowledged
//! before the read was invoked. The history is in time order, so every
//! such write's `ok` comes before the read's invoke and one pass suffices.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context};

use super::checker;
use super::holdings::{Copy, Holding};
use crate::api::dot::{Clock, Dot};
use crate::api::run::{Event, EventType, Function, LostWrites};
use crate::workload::staleness::AckedWrites;

/// What a history holds and what the checks found.
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    pub operations: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub final_reads: u64,
    pub lost_writes: LostWrites,
    /// The workload's successful reads in measured phases whose clock was
    /// judged, and the stale ones (the summary's `[STALENESS]` figures).
    pub reads_judged: u64,
    pub stale_reads: u64,
    /// The same for the reads of read-modify-write updates.
    pub update_reads_judged: u64,
    pub stale_update_reads: u64,
}

impl Findings {
    /// A violation: an acknowledged write is gone. (Stale reads are not:
    /// Dynamo allows them.)
    pub fn violated(&self) -> bool {
        self.lost_writes.lost > 0
    }
}

pub fn check(path: &Path) -> anyhow::Result<Findings> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut checking = Checking::default();
    for (no, text) in BufReader::new(file).lines().enumerate() {
        let text = text.with_context(|| format!("reading {}", path.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        let event: Event =
            serde_json::from_str(&text).with_context(|| format!("{} line {}", path.display(), no + 1))?;
        checking.take(event).with_context(|| format!("{} line {}", path.display(), no + 1))?;
    }
    Ok(checking.finish())
}

#[derive(Default)]
struct Checking {
    findings: Findings,
    /// Each process's open invoke time.
    open: HashMap<u64, i64>,
    acked: AckedWrites,
    held: HashMap<u32, Holding>,
}

impl Checking {
    fn take(&mut self, event: Event) -> anyhow::Result<()> {
        if event.kind == EventType::Invoke {
            if self.open.insert(event.process, event.time).is_some() {
                bail!("process {} invokes while its previous operation is open", event.process);
            }
            self.findings.operations += 1;
            return Ok(());
        }
        let Some(invoked) = self.open.remove(&event.process) else {
            bail!("a completion of process {} without an open invoke", event.process)
        };
        let f = &mut self.findings;
        match event.kind {
            EventType::Ok => f.ok += 1,
            EventType::Fail => f.fail += 1,
            _ => f.info += 1,
        }
        if event.kind != EventType::Ok {
            return Ok(());
        }
        let key = key_index(&event.key)?;
        match event.f {
            Function::Write => {
                if let Some(dot) = event.dot.as_deref().and_then(|d| d.parse::<Dot>().ok()) {
                    self.acked.acknowledge(key, dot, event.time);
                }
            }
            Function::Read => self.judge_read(key, &event, invoked),
            Function::FinalRead => {
                self.findings.final_reads += 1;
                self.held.insert(key, holding(event));
            }
        }
        Ok(())
    }

    /// As the recorder does: a read whose clock cannot be parsed is not judged.
    fn judge_read(&mut self, key: u32, event: &Event, invoked: i64) {
        let Ok(clock) = Clock::parse(event.clock.as_deref().unwrap_or("")) else { return };
        let stale = self.acked.missed(key, &clock, invoked).is_some();
        let f = &mut self.findings;
        match (event.op.as_deref(), event.phase.as_deref()) {
            (_, Some("load")) => {}
            (Some("update_read"), _) => {
                f.update_reads_judged += 1;
                f.stale_update_reads += stale as u64;
            }
            _ => {
                f.reads_judged += 1;
                f.stale_reads += stale as u64;
            }
        }
    }

    fn finish(mut self) -> Findings {
        self.findings.lost_writes = checker::judge(&self.acked, &self.held);
        self.findings
    }
}

/// The final read's replicas as the checker holds them.
fn holding(event: Event) -> Holding {
    let copies = event
        .replicas
        .unwrap_or_default()
        .into_iter()
        .map(|r| Copy { node: r.node, versions: r.versions.into_iter().collect(), clock: r.clock, values: r.values })
        .collect();
    Holding { copies, unreadable: event.unreadable }
}

/// `user17` → 17.
fn key_index(key: &str) -> anyhow::Result<u32> {
    key.strip_prefix("user").and_then(|n| n.parse().ok()).with_context(|| format!("key {key:?} is not user<N>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::run::{ReplicaRead, Value};

    fn event(kind: EventType, process: u64, f: Function, time: i64) -> Event {
        Event {
            index: 0,
            kind,
            process,
            f,
            key: "user1".into(),
            value: None,
            time,
            client: Some(process as u32),
            op: Some(if f == Function::Write { "update" } else { "read" }.into()),
            phase: Some("warmup".into()),
            entry: None,
            node: None,
            status: None,
            dot: None,
            clock: None,
            replicas: None,
            unreadable: Vec::new(),
        }
    }

    /// A write acknowledged at 100; reads that miss it, invoked before and
    /// after; then a final read whose replica holds `held` under that clock.
    fn history(held: &str) -> Vec<Event> {
        let read_ok = |time, clock: &str| Event {
            clock: Some(clock.into()),
            value: Some(Value::Read(Vec::new())),
            ..event(EventType::Ok, 1, Function::Read, time)
        };
        let replica =
            ReplicaRead { node: "node1".into(), versions: vec![held.into()], clock: held.into(), values: vec![] };
        vec![
            event(EventType::Invoke, 0, Function::Write, 10),
            event(EventType::Invoke, 1, Function::Read, 50),
            Event { dot: Some("n1.a:1".into()), ..event(EventType::Ok, 0, Function::Write, 100) },
            read_ok(150, ""), // invoked before the acknowledgement: not stale
            event(EventType::Invoke, 1, Function::Read, 200),
            read_ok(250, ""), // misses it: stale
            event(EventType::Invoke, 1, Function::Read, 300),
            read_ok(350, "n1.a:1"),
            event(EventType::Invoke, 2, Function::FinalRead, 400),
            Event { replicas: Some(vec![replica]), ..event(EventType::Ok, 2, Function::FinalRead, 400) },
        ]
    }

    fn checked(events: Vec<Event>) -> anyhow::Result<Findings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let text: String = events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
        std::fs::write(&path, text).unwrap();
        check(&path)
    }

    #[test]
    fn a_read_missing_an_earlier_acknowledged_write_is_stale_and_a_write_no_replica_covers_is_lost() {
        let found = checked(history("n1.a:2")).unwrap();
        assert_eq!((found.operations, found.ok, found.final_reads), (5, 5, 1));
        assert_eq!((found.stale_reads, found.reads_judged), (1, 3));
        assert_eq!((found.lost_writes.acknowledged, found.lost_writes.lost), (1, 0), "n1.a:2 supersedes n1.a:1");
        assert!(!found.violated());

        let found = checked(history("n2.b:1")).unwrap();
        assert_eq!(found.lost_writes.lost, 1, "a concurrent version does not cover it");
        assert_eq!(found.lost_writes.examples, ["user1 n1.a:1"]);
        assert!(found.violated());
    }

    #[test]
    fn a_completion_without_its_invoke_is_an_error_not_a_verdict() {
        let mut events = history("n1.a:1");
        events.remove(4);
        let error = checked(events).unwrap_err();
        assert!(format!("{error:#}").contains("line 5: a completion of process 1 without an open invoke"), "{error:#}");
    }
}
