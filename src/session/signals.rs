//! Signals: SIGINT, SIGTERM and SIGHUP never kill the runner directly. A thread receives them, lets the
//! session forward them (first: the same signal to every group; later: SIGKILL), tells the scheduler,
//! and on the third exits at once. SIGCHLD lets the session reap exited orphans as they come.

use std::sync::Arc;
use std::sync::mpsc::Sender;

use nix::sys::signal::Signal;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::Session;
use super::process::Event;
use crate::contract::exit_for_signal;
use crate::errors::Error;

/// Exit code for a run stopped by `signal` (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
pub(crate) fn exit_code(signal: Signal) -> i32 {
    exit_for_signal(signal as i32)
}

pub(crate) fn install(session: Arc<Session>, events: Sender<Event>) -> Result<(), Error> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD]).map_err(Error::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for raw in signals.forever() {
                if raw == SIGCHLD {
                    session.reap_zombies();
                    continue;
                }
                let signal = Signal::try_from(raw).unwrap_or(Signal::SIGTERM);
                let count = session.on_signal(signal);
                if count >= 3 {
                    let first = session.interrupted_by().unwrap_or(signal);
                    crate::output::err("\nwarning: third signal, exiting now without waiting");
                    session.cleanup();
                    // SAFETY: `_exit` ends the process immediately; nothing after it runs.
                    unsafe { libc::_exit(exit_code(first)) };
                }
                if events.send(Event::Signal(signal, count)).is_err() {
                    return;
                }
            }
        })
        .map_err(Error::Signals)?;
    Ok(())
}
