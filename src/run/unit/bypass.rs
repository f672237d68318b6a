//! Output of a shared binary that bypassed libtest's capture: what a test's child process printed, or
//! a direct write to the stdout or stderr descriptor. libtest's failure report holds only what it
//! captured, so without this such output (trybuild's diffs, a server's log) would be lost from a
//! failure. A line that came while exactly one test was running is that test's; any other (several
//! running, none) is the binary's, shown under it.

use std::collections::HashMap;

/// The bypassing output of one unit, attributed.
#[derive(Debug, Default)]
pub(crate) struct Bypass {
    by_test: HashMap<usize, String>,
    binary: String,
    /// Bytes kept, over both.
    kept: usize,
    dropped: usize,
}

/// The header of a test's bypassing output, under libtest's own capture of it.
pub(crate) const ALONE_HEADER: &str = "[printed outside libtest's capture (a child process, or a direct write) while this test ran alone]";

impl Bypass {
    /// One line, printed while `alone` was the only test running (None: several, or none).
    pub(crate) fn add(&mut self, alone: Option<usize>, line: &str, cap: usize) {
        if self.kept + line.len() >= cap {
            self.dropped += line.len() + 1;
            return;
        }
        self.kept += line.len() + 1;
        let text = match alone {
            Some(i) => self.by_test.entry(i).or_default(),
            None => &mut self.binary,
        };
        text.push_str(line);
        text.push('\n');
    }

    /// What test `index` printed outside the capture while it ran alone.
    pub(crate) fn of_test(&mut self, index: usize) -> Option<String> {
        self.by_test.remove(&index)
    }

    /// What was printed outside the capture while several tests (or none) ran, with a note of what did
    /// not fit.
    pub(crate) fn of_binary(&mut self) -> Option<String> {
        let mut text = std::mem::take(&mut self.binary);
        if self.dropped > 0 {
            text.push_str(&format!(
                "[cleantest: {} bytes of such output dropped]\n",
                self.dropped
            ));
        }
        (!text.trim().is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_the_test_running_alone_or_to_the_binary() {
        let mut b = Bypass::default();
        b.add(Some(2), "child says why", 1 << 20);
        b.add(None, "two tests were running", 1 << 20);
        assert_eq!(b.of_test(2).as_deref(), Some("child says why\n"));
        assert_eq!(b.of_test(2), None);
        assert_eq!(b.of_binary().as_deref(), Some("two tests were running\n"));
    }

    #[test]
    fn what_does_not_fit_is_counted_not_kept() {
        let mut b = Bypass::default();
        b.add(None, &"x".repeat(10), 16);
        b.add(None, &"y".repeat(10), 16);
        let text = b.of_binary().unwrap();
        assert!(text.starts_with("xxxxxxxxxx\n"), "{text}");
        assert!(text.contains("11 bytes of such output dropped"), "{text}");
    }
}
