//! The creates the proxy has forwarded and whose answer it has not seen. The engine completes a create
//! it has received even when the client is gone, so the end of a session waits for these before its
//! sweep lists; while any is out, a marker file in the session's directory tells a reaper cleaning up
//! after a killed runner that one may still appear.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug)]
pub struct InFlight {
    count: AtomicUsize,
    changed: Notify,
    marker: PathBuf,
}

/// One forwarded create; dropped when its answer came (or its sending failed).
pub struct Forwarded(Arc<InFlight>);

impl InFlight {
    pub fn new(marker: PathBuf) -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            changed: Notify::new(),
            marker,
        }
    }

    /// Notes a create about to be forwarded, until the returned guard drops.
    pub fn forward(me: &Arc<InFlight>) -> Forwarded {
        if me.count.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = std::fs::write(&me.marker, b"");
        }
        Forwarded(me.clone())
    }

    /// Waits until no create is out, at most `bound`; true when none is.
    pub async fn settle(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // Registered before the check, so a guard dropped in between still wakes it.
            let changed = self.changed.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.count.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        let me = &self.0;
        if me.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = std::fs::remove_file(&me.marker);
        }
        me.changed.notify_waiters();
    }
}
