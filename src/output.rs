//! The one place the runner writes to the terminal. Every layer sends its lines here (`err` for
//! diagnostics and news on stderr, `out` for results on stdout), and while the run's progress bar is
//! shown (`show_progress`, by the reporter) they are printed above it, so that no line is torn by a
//! redraw, whichever thread sends it (a service that died, a warning of the session's end, a note of
//! the control socket). Lines are written whole, one at a time.

use std::io::Write;
use std::sync::Mutex;

use indicatif::ProgressBar;

/// The progress bar lines go above, while the reporter shows one.
static PROGRESS: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn progress() -> Option<ProgressBar> {
    PROGRESS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// From now on, lines go above `bar` (the reporter's).
pub(crate) fn show_progress(bar: ProgressBar) {
    *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
}

/// The bar is gone: lines go to their streams again.
pub(crate) fn hide_progress() {
    *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// A line on stderr: a diagnostic, a warning, news of the session.
pub(crate) fn err(line: impl AsRef<str>) {
    match progress() {
        Some(bar) => bar.println(line.as_ref()),
        None => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}", line.as_ref());
        }
    }
}

/// `warning: TEXT` on stderr.
pub(crate) fn warn(text: impl std::fmt::Display) {
    err(format!("warning: {text}"));
}

/// `note: TEXT` on stderr.
pub(crate) fn note(text: impl std::fmt::Display) {
    err(format!("note: {text}"));
}

/// Text on stderr as it is, without a newline of its own (a prompt, a child's stderr passed on).
pub(crate) fn err_raw(text: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_ref().as_bytes());
    let _ = err.flush();
}

/// A line on stdout: a result, a listing.
pub(crate) fn out(line: impl AsRef<str>) {
    match progress() {
        Some(bar) => bar.println(line.as_ref()),
        None => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", line.as_ref());
        }
    }
}
