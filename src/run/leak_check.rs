//! The end-of-unit container check, off the scheduler's thread. Asking the engine which containers a
//! finished unit left running takes as long as the engine takes to answer, up to the engine calls'
//! whole bound when it hangs; the scheduler enforces timeouts and passes on signals, so it only sends
//! the question here and takes the answer as an event, like a unit's output.

use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use crate::docker::{self, Engine};
use crate::session::process::Event;

/// How long the end of the run waits for checks still out: past it, the run goes on to its end (whose
/// sweep removes those containers anyway) and says which units were not checked.
pub(crate) const END_WAIT: Duration = Duration::from_secs(10);

/// One question: the running containers matching `filter`, for `unit`.
struct Question {
    unit: String,
    order: usize,
    engine: Engine,
    filter: Vec<String>,
}

/// The checks asked and not yet answered, and the thread that asks the engine, one question at a
/// time: a hung engine costs one blocked thread, not one per unit.
#[derive(Default)]
pub(crate) struct LeakCheck {
    questions: Option<Sender<Question>>,
    pending: Vec<String>,
}

impl LeakCheck {
    /// Asks, for `unit`, which containers matching `filter` still run; the answer comes back on
    /// `events` as `Event::Leaked`.
    pub(crate) fn ask(
        &mut self,
        events: &Sender<Event>,
        unit: String,
        order: usize,
        (engine, filter): (Engine, Vec<String>),
    ) {
        let questions = self.questions.get_or_insert_with(|| start(events.clone()));
        let question = Question {
            unit: unit.clone(),
            order,
            engine,
            filter,
        };
        // If the thread is gone (it could not be started), the unit goes unchecked, as with no engine.
        if questions.send(question).is_ok() {
            self.pending.push(unit);
        }
    }

    /// Takes note of an answer.
    pub(crate) fn answered(&mut self, unit: &str) {
        if let Some(at) = self.pending.iter().position(|u| u == unit) {
            self.pending.remove(at);
        }
    }

    /// The units whose check has not been answered yet.
    pub(crate) fn pending(&self) -> &[String] {
        &self.pending
    }
}

/// Starts the thread that asks the engine; it ends when the scheduler drops its sender.
fn start(events: Sender<Event>) -> Sender<Question> {
    let (send, receive) = channel::<Question>();
    // If the thread cannot be started, the closure and its receiver are dropped with the error, and
    // `ask` sees its send fail.
    let _ = std::thread::Builder::new()
        .name("leak-check".into())
        .spawn(move || {
            for q in receive {
                let containers = docker::running_containers(&q.engine, &q.filter);
                let answer = Event::Leaked {
                    unit: q.unit,
                    order: q.order,
                    containers,
                };
                if events.send(answer).is_err() {
                    return;
                }
            }
        });
    send
}
