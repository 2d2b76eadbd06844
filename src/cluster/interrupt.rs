//! Ctrl-C and SIGTERM during a run or a start: noted, not obeyed at once,
//! so that the driver stops its clients, heals every fault and writes what
//! it recorded, and `cluster up` records the node it is starting and then
//! removes everything it started, before either exits.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// From now on the first SIGINT or SIGTERM only sets the flag; a second
/// one acts as usual (SA_RESETHAND), for whoever cannot wait for the heal
/// (`dynabed cleanup` heals from the journal then).
pub fn install() -> anyhow::Result<()> {
    let action =
        SigAction::new(SigHandler::Handler(note), SaFlags::SA_RESTART | SaFlags::SA_RESETHAND, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
