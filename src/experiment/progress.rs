//! A progress bar on stderr while the workload runs, when stderr is a
//! terminal (nothing otherwise, so logs and CI output stay clean).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::workload::runner::Shared;

pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(shared: Arc<Shared>, duration: Duration) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let done = done.clone();
            std::thread::spawn(move || show(&shared, duration, &done))
        });
        Progress { done, thread }
    }

    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn show(shared: &Shared, duration: Duration, done: &AtomicBool) {
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos:>3}/{len} s  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    while !done.load(Ordering::Relaxed) {
        let requests = shared.requests.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        bar.set_prefix(shared.phase.get().as_str());
        if let Some(t0) = shared.t0() {
            let elapsed = t0.elapsed();
            bar.set_position(elapsed.as_secs().min(duration.as_secs()));
            let rate = requests as f64 / elapsed.as_secs_f64().max(0.001);
            bar.set_message(format!("{requests} requests ({rate:.0}/s), {failed} failed"));
        } else {
            bar.set_message(format!("loading: {requests} requests"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
}
