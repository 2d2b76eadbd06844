//! Group commit: the journal made durable by a thread of its own.
//!
//! fjall makes its journal durable with an fsync taken under its journal
//! mutex, which every writer needs; the node's writers run on its event
//! loop, so that fsync stopped the whole node. Two places did it: with
//! `--sync always` every write paid its own fsync, one after another, and
//! with `--sync kernel` fjall's flush worker fsyncs the journal before each
//! memtable flush — writing back everything since the previous flush, tens
//! of milliseconds on a busy disk, with the mutex held.
//!
//! Here writers only hand their entry to the OS (write(2) under fjall's
//! mutex, microseconds) and count it; this thread fdatasyncs the journal
//! file through a descriptor of its own, outside fjall's mutex. One fsync
//! covers every write counted before it began (fjall syncs a journal before
//! it starts the next one, so syncing the newest file is enough), and those
//! who must not ack before that await it ([`JournalSync::durable`]). With
//! `--sync kernel` nobody waits, but the thread still writes the journal
//! back every [`WRITEBACK`], so the fsync fjall takes under its mutex finds
//! little left to do.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Health, StorageError};

/// How often `--sync kernel` writes the journal back.
pub const WRITEBACK: Duration = Duration::from_millis(50);

/// Makes the journal durable; the syncing itself, so tests can hold it.
pub type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// What the syncing thread has made durable so far.
#[derive(Debug, Clone)]
enum Synced {
    /// Every write counted up to this number.
    Upto(u64),
    /// A sync failed; nothing written since is known durable.
    Failed(String),
}

struct Requests {
    /// The highest write number someone awaits.
    wanted: u64,
    closing: bool,
}

struct Shared {
    /// Writes handed to the OS, counted after their write(2) returned.
    written: AtomicU64,
    requests: Mutex<Requests>,
    wake: Condvar,
    synced: tokio::sync::watch::Sender<Synced>,
    syncs: AtomicU64,
}

impl Shared {
    fn requests(&self) -> std::sync::MutexGuard<'_, Requests> {
        // Two counters and a flag, each written whole: nothing to tear.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The syncing thread and what writers share with it.
pub struct JournalSync {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl JournalSync {
    /// Syncs the newest journal in `dir` when asked, and at least every
    /// `writeback` when there is something new.
    pub fn start(dir: &Path, writeback: Option<Duration>, health: Arc<Health>) -> std::io::Result<JournalSync> {
        let mut journal = NewestJournal::new(dir.to_path_buf());
        JournalSync::start_with(Box::new(move || journal.sync()), writeback, health)
    }

    pub fn start_with(sync: SyncFn, writeback: Option<Duration>, health: Arc<Health>) -> std::io::Result<JournalSync> {
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            requests: Mutex::new(Requests { wanted: 0, closing: false }),
            wake: Condvar::new(),
            synced: tokio::sync::watch::Sender::new(Synced::Upto(0)),
            syncs: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new().name("journal-sync".into()).spawn({
            let shared = shared.clone();
            move || run(&shared, sync, writeback, &health)
        })?;
        Ok(JournalSync { shared, thread: Some(thread) })
    }

    /// Counts a write whose write(2) has returned.
    pub fn written(&self) {
        self.shared.written.fetch_add(1, Ordering::Release);
    }

    /// Resolves once every write counted so far is on stable storage.
    pub async fn durable(&self) -> Result<(), StorageError> {
        let target = self.shared.written.load(Ordering::Acquire);
        let mut synced = self.shared.synced.subscribe();
        if !matches!(*synced.borrow(), Synced::Upto(n) if n >= target) {
            let mut requests = self.shared.requests();
            if requests.wanted < target {
                requests.wanted = target;
                self.shared.wake.notify_one();
            }
        }
        let done = synced.wait_for(|s| !matches!(s, Synced::Upto(n) if *n < target)).await;
        match done.as_deref() {
            Ok(Synced::Upto(_)) => Ok(()),
            Ok(Synced::Failed(why)) => Err(StorageError::Unsynced(why.clone())),
            Err(_) => Err(StorageError::Unsynced("the journal's sync thread stopped".into())),
        }
    }

    /// Syncs done so far.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }
}

impl Drop for JournalSync {
    fn drop(&mut self) {
        self.shared.requests().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic there already said what went wrong.
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, mut sync: SyncFn, writeback: Option<Duration>, health: &Health) {
    let mut done = 0;
    while let Some(target) = next_target(shared, done, writeback) {
        if let Err(e) = sync() {
            let error = StorageError::Unsynced(format!("fdatasync of the journal: {e}"));
            health.record(&error);
            shared.synced.send_replace(Synced::Failed(error.to_string()));
            return;
        }
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        done = target;
        shared.synced.send_replace(Synced::Upto(done));
    }
}

/// Waits until a sync is due; the write number it will cover, or None when
/// closing. Read after waking, so it covers writers who came meanwhile too.
fn next_target(shared: &Shared, done: u64, writeback: Option<Duration>) -> Option<u64> {
    let mut requests = shared.requests();
    loop {
        if requests.closing {
            return None;
        }
        let written = shared.written.load(Ordering::Acquire);
        if requests.wanted > done {
            return Some(written);
        }
        requests = match writeback {
            Some(every) if written > done => {
                let (requests, waited) =
                    shared.wake.wait_timeout(requests, every).unwrap_or_else(PoisonError::into_inner);
                if waited.timed_out() && !requests.closing {
                    return Some(shared.written.load(Ordering::Acquire));
                }
                requests
            }
            // Nothing new to write back: sleep until asked, or for a while.
            Some(every) => shared.wake.wait_timeout(requests, every).unwrap_or_else(PoisonError::into_inner).0,
            None => shared.wake.wait(requests).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// The journal fjall currently appends to, followed across rotations.
struct NewestJournal {
    dir: PathBuf,
    open: Option<(u64, File)>,
}

impl NewestJournal {
    fn new(dir: PathBuf) -> Self {
        NewestJournal { dir, open: None }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.follow()?;
        match &self.open {
            Some((_, file)) => file.sync_data(),
            None => Err(std::io::Error::other(format!("no journal in {}", self.dir.display()))),
        }
    }

    /// fjall names its journals `<n>.jnl` and starts `n + 1` only after
    /// syncing `n`, so the newest one holds everything not yet synced.
    fn follow(&mut self) -> std::io::Result<()> {
        let mut number = match &self.open {
            Some((number, _)) => *number,
            None => {
                let Some((number, path)) = super::newest_journal(&self.dir) else { return Ok(()) };
                self.open = Some((number, File::open(path)?));
                number
            }
        };
        while let Ok(file) = File::open(self.dir.join(format!("{}.jnl", number + 1))) {
            number += 1;
            self.open = Some((number, file));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A sync that waits for a permit, so a test decides when syncs end.
    /// Bind the permits after the journal: dropped first, they let a sync
    /// still waiting (a failed assertion) end, so dropping the journal
    /// cannot hang.
    fn gated() -> (SyncFn, mpsc::Sender<std::io::Result<()>>) {
        let (permits, gate) = mpsc::channel::<std::io::Result<()>>();
        let gate = Mutex::new(gate);
        let sync = Box::new(move || gate.lock().unwrap().recv().unwrap_or(Ok(())));
        (sync, permits)
    }

    #[tokio::test]
    async fn waiters_are_answered_only_after_a_sync_that_covers_them() {
        let (sync, permits) = gated();
        let journal = JournalSync::start_with(sync, None, Arc::default()).unwrap();
        let permits = permits;
        for _ in 0..50 {
            journal.written();
        }
        let mut waiters: Vec<_> = (0..50).map(|_| Box::pin(journal.durable())).collect();
        for waiter in &mut waiters {
            assert!(futures::poll!(waiter).is_pending(), "answered before any sync ended");
        }
        permits.send(Ok(())).unwrap();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        // All fifty were written before anyone asked: one sync covers them.
        assert_eq!(journal.syncs(), 1);

        journal.written();
        let mut later = Box::pin(journal.durable());
        assert!(futures::poll!(&mut later).is_pending(), "a write after the sync counted as synced");
        permits.send(Ok(())).unwrap();
        later.await.unwrap();
        assert_eq!(journal.syncs(), 2);
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_waiters_and_the_engine() {
        let (sync, permits) = gated();
        let health = Arc::<Health>::default();
        let journal = JournalSync::start_with(sync, None, health.clone()).unwrap();
        let permits = permits;
        journal.written();
        permits.send(Err(std::io::Error::other("disk on fire"))).unwrap();
        let error = journal.durable().await.unwrap_err();
        assert!(error.to_string().contains("disk on fire"), "{error}");
        assert!(health.failure().is_some_and(|f| f.contains("disk on fire")));
        // Later writers are refused too, not left waiting.
        journal.written();
        assert!(journal.durable().await.is_err());
    }

    #[test]
    fn writeback_syncs_new_writes_without_being_asked() {
        let (sync, permits) = gated();
        let journal = JournalSync::start_with(sync, Some(Duration::from_millis(1)), Arc::default()).unwrap();
        let permits = permits;
        journal.written();
        permits.send(Ok(())).unwrap();
        // No one awaits: only the writeback can make this sync happen.
        while journal.syncs() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(journal.syncs(), 1);
    }
}
