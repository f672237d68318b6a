//! The warm pool of one isolating service: databases made ahead of need, in batches, on two threads of
//! their own, so that a test takes one that is ready; released ones dropped (or, for a fixed set, reset
//! and handed out again) on another, off every test's path.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::server::{Names, Server};
use crate::session::locked;

/// How long a test waits for a database before it is told why none came.
const TAKE_BOUND: Duration = Duration::from_secs(120);

/// At most this many databases are made (or dropped) by one command.
const BATCH: usize = 8;

/// Threads making databases at once.
const MAKERS: usize = 2;

/// The most databases kept ready ahead of need, however often tests found none.
const MAX_AHEAD: usize = 32;

pub(super) struct Pool {
    server: Server,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// How many ready databases are kept ahead of need: grows by half each time a test finds none.
    ahead: usize,
    ready: VecDeque<String>,
    making: usize,
    /// Tests waiting for one.
    waiting: usize,
    in_use: usize,
    to_drop: VecDeque<String>,
    dropping: usize,
    /// `Names::Fixed`: the names not yet made ready (then reset after each use), else None.
    free: Option<VecDeque<String>>,
    fixed_total: usize,
    next: u64,
    /// Why making stopped: every later take is told.
    broken: Option<String>,
    closed: bool,
}

impl Pool {
    /// A pool over `server`, filled by a thread of its own, `ahead` ready at a time.
    pub(super) fn start(server: Server, names: Names, ahead: usize) -> std::io::Result<Arc<Pool>> {
        let mut state = State {
            ahead: ahead.max(1),
            ..State::default()
        };
        if let Names::Fixed(names) = names {
            state.fixed_total = names.len();
            state.free = Some(names.into());
        }
        let pool = Arc::new(Pool {
            server,
            state: Mutex::new(state),
            changed: Condvar::new(),
        });
        // Two makers: while one command runs, the next batch is already on its way.
        for _ in 0..MAKERS {
            let maker = pool.clone();
            std::thread::Builder::new()
                .name("isolate-make".into())
                .spawn(move || maker.make_loop())?;
        }
        let dropper = pool.clone();
        std::thread::Builder::new()
            .name("isolate-drop".into())
            .spawn(move || dropper.drop_loop())?;
        Ok(pool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// Takes a ready database, waiting (bounded) for one to be made; never one that is in use.
    pub(super) fn take(&self) -> Result<String, String> {
        let deadline = Instant::now() + TAKE_BOUND;
        let mut state = self.lock();
        if state.ready.is_empty() {
            // Demand outran the pool: keep half as many again ready from now on.
            state.ahead = (state.ahead + state.ahead.div_ceil(2)).min(MAX_AHEAD);
        }
        state.waiting += 1;
        self.changed.notify_all();
        let taken = loop {
            if let Some(name) = state.ready.pop_front() {
                state.in_use += 1;
                break Ok(name);
            }
            if let Some(why) = &state.broken {
                break Err(why.clone());
            }
            if state.closed {
                break Err("the session is ending".into());
            }
            let nothing_coming =
                state.making == 0 && state.dropping == 0 && state.to_drop.is_empty();
            if state.free.as_ref().is_some_and(VecDeque::is_empty) && nothing_coming {
                break Err(format!(
                    "all {} of its databases are in use by tests running now; raise the server's \
                     count (redis: `command = [\"redis-server\", \"--databases\", \"64\"]`) or run \
                     fewer tests at once (--test-threads)",
                    state.fixed_total
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(format!(
                    "no database was ready within {}s",
                    TAKE_BOUND.as_secs()
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        state.waiting -= 1;
        // The maker refills behind the taker.
        self.changed.notify_all();
        taken
    }

    /// Waits (bounded) until the first databases are ready, so that the first tests find them; a
    /// failure to make them is the error.
    pub(super) fn wait_filled(&self) -> Result<(), String> {
        let deadline = Instant::now() + TAKE_BOUND;
        let mut state = self.lock();
        loop {
            if let Some(why) = &state.broken {
                return Err(why.clone());
            }
            let full = match state.free {
                Some(_) => state.ahead.min(state.fixed_total),
                None => state.ahead,
            };
            if state.ready.len() >= full || Instant::now() >= deadline {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A database a test is done with: dropped in the background, unless `keep`.
    pub(super) fn release(&self, name: String, keep: bool) {
        let mut state = self.lock();
        state.in_use = state.in_use.saturating_sub(1);
        if !keep {
            state.to_drop.push_back(name);
        }
        self.changed.notify_all();
    }

    /// Stops making and dropping (the container goes with the session).
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// How many to make now, and their names; None once closed.
    fn next_batch(&self) -> Option<Vec<String>> {
        let mut state = self.lock();
        loop {
            if state.closed || state.broken.is_some() {
                return None;
            }
            // Made in batches (one command each): once half the pool is gone, or a test waits.
            let deficit =
                (state.ahead + state.waiting).saturating_sub(state.ready.len() + state.making);
            let due = state.waiting > state.making || deficit * 2 >= state.ahead;
            let want = if due { deficit } else { 0 };
            let batch: Vec<String> = match &mut state.free {
                Some(free) => (0..want.min(BATCH))
                    .map_while(|_| free.pop_front())
                    .collect(),
                None => (0..want.min(BATCH) as u64)
                    .map(|i| format!("cleantest_{}", state.next + i + 1))
                    .collect(),
            };
            if !batch.is_empty() {
                if state.free.is_none() {
                    state.next += batch.len() as u64;
                }
                state.making += batch.len();
                return Some(batch);
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn make_loop(&self) {
        while let Some(batch) = self.next_batch() {
            let made = self.server.make(&batch);
            let mut state = self.lock();
            state.making -= batch.len();
            match made {
                Ok(()) => state.ready.extend(batch),
                Err(e) => state.broken = Some(format!("making a database failed: {e}")),
            }
            self.changed.notify_all();
        }
    }

    fn drop_loop(&self) {
        loop {
            let names: Vec<String> = {
                let mut state = self.lock();
                loop {
                    if state.closed {
                        return;
                    }
                    if !state.to_drop.is_empty() {
                        let n = state.to_drop.len().min(BATCH);
                        state.dropping += n;
                        break state.to_drop.drain(..n).collect();
                    }
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            let dropped = self.server.drop(&names);
            let mut state = self.lock();
            state.dropping -= names.len();
            // Reset names of a fixed set are ready again; a failed reset is never handed out.
            if let (Some(_), Ok(())) = (&state.free, &dropped) {
                state.ready.extend(names);
            }
            self.changed.notify_all();
        }
    }
}
