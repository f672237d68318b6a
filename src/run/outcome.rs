//! The run's exit code, as a pure function of how it ended (as nextest's `final_result`): a signal
//! decides first, then what the sweep left, then failed tests.

use nix::sys::signal::Signal;

use crate::contract::{EXIT_LEFTOVERS, EXIT_OK, EXIT_TEST_FAILED};
use crate::session::signals;

/// How a run ended, as far as its exit code cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The first signal the run received.
    pub interrupted: Option<Signal>,
    /// The session's end left Docker resources it should have removed.
    pub left_something: bool,
    /// A test failed, or the run had a problem (`RunSummary::failed`).
    pub failed: bool,
}

impl Outcome {
    /// The exit code: the signal's (130 for SIGINT), else 3 for leftovers, else cargo test's 101 for a
    /// failure, else 0.
    pub(crate) fn exit_code(&self) -> i32 {
        match self.interrupted {
            Some(signal) => signals::exit_code(signal),
            None if self.left_something => EXIT_LEFTOVERS,
            None if self.failed => EXIT_TEST_FAILED,
            None => EXIT_OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_then_leftovers_then_failures_decide() {
        let ended = |interrupted, left_something, failed| {
            Outcome {
                interrupted,
                left_something,
                failed,
            }
            .exit_code()
        };
        assert_eq!(ended(None, false, false), EXIT_OK);
        assert_eq!(ended(None, false, true), EXIT_TEST_FAILED);
        assert_eq!(ended(None, true, true), EXIT_LEFTOVERS);
        assert_eq!(ended(None, true, false), EXIT_LEFTOVERS);
        let interrupted = signals::exit_code(Signal::SIGINT);
        assert_eq!(interrupted, 130);
        assert_eq!(ended(Some(Signal::SIGINT), true, true), interrupted);
        assert_eq!(ended(Some(Signal::SIGINT), false, false), interrupted);
    }
}
