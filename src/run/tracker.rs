//! Following a libtest process from its output: which tests finished with what result, which are running
//! right now and since when, and the captured output libtest prints for failures.
//!
//! The model: libtest sorts the selected tests by name (that is also the `--list` order), starts them in
//! that order, and keeps at most `--test-threads` running; a finished test frees its slot before the next
//! starts. So after `k` result lines, tests `0 .. k + threads` have started and those without a result are
//! running. (`tests/libtest_order.rs` checks this against real libtest.) Doctests are followed in "open"
//! mode: names are learned from result lines and nothing is known about the running set.

use std::collections::HashMap;
use std::time::Instant;

/// What libtest said of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Passed,
    Failed,
    Ignored,
}

/// How one output line was understood.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A result line for the test at this index.
    Result(usize, Verdict),
    /// libtest's own framing (`running N tests`, section headers, the summary).
    Framing,
    /// Anything else: the tests' own output (with `--nocapture`) or a child's.
    Output,
}

/// Counts from libtest's `test result:` lines (summed when a process prints several, as rustdoc does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub measured: usize,
    pub filtered_out: usize,
}

#[derive(Debug)]
pub(crate) struct Tracker {
    names: Vec<String>,
    index: HashMap<String, usize>,
    /// Learn names from result lines instead of knowing them up front (doctests).
    open: bool,
    threads: usize,
    started: usize,
    started_at: Vec<Option<Instant>>,
    verdicts: Vec<Option<Verdict>>,
    finished_at: Vec<Option<Instant>>,
    completed: usize,
    /// A single-threaded libtest prints `test NAME ... ` before running NAME and the verdict after.
    awaiting: Option<usize>,
    /// Inside a `failures:`/`successes:` section: the test whose captured output follows.
    section: Option<Option<usize>>,
    outputs: HashMap<usize, String>,
    summary: Option<Summary>,
    /// Results that contradicted the model (a test finishing before it could have started).
    pub anomalies: usize,
    /// Verdicts that came before their test could have started (outside libtest's running window):
    /// likely a child's lines. Not final: one counts only once libtest's totals line has come (a
    /// harness that runs tests out of order), and until then the test is running, or not yet started,
    /// by the model, so a timeout or crash is blamed on it and not on another.
    provisional: Vec<Option<Verdict>>,
    /// Tests given two different verdicts: one of the lines came from a process other than libtest
    /// (a test's child writing to the inherited stdout). The failure is kept.
    conflicts: Vec<usize>,
    /// The leading lines of test names that hold a newline (`a\nb` gives `a`): a result line for such
    /// a test arrives as several lines, joined back in `pending`.
    name_starts: std::collections::HashSet<String>,
    /// The lines so far of a result line that may be a multi-line name's.
    pending: Option<String>,
}

impl Tracker {
    /// A tracker for a process that runs `names` (in libtest's order) on `threads` threads.
    pub(crate) fn new(names: Vec<String>, threads: usize, now: Instant) -> Tracker {
        let n = names.len();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut tracker = Tracker {
            names,
            index,
            open: false,
            threads: threads.max(1),
            started: 0,
            started_at: vec![None; n],
            verdicts: vec![None; n],
            finished_at: vec![None; n],
            completed: 0,
            awaiting: None,
            section: None,
            outputs: HashMap::new(),
            summary: None,
            anomalies: 0,
            provisional: vec![None; n],
            name_starts: std::collections::HashSet::new(),
            pending: None,
            conflicts: Vec::new(),
        };
        for name in &tracker.names {
            let mut at = 0;
            while let Some(newline) = name[at..].find('\n') {
                at += newline;
                tracker.name_starts.insert(name[..at].to_string());
                at += 1;
            }
        }
        tracker.advance(now);
        tracker
    }

    /// A tracker that learns test names as results arrive (for rustdoc's doctests).
    pub(crate) fn open() -> Tracker {
        let mut tracker = Tracker::new(Vec::new(), 1, Instant::now());
        tracker.open = true;
        tracker
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The test's verdict: libtest's, or, once libtest has printed its totals, one that came before
    /// the test could have started (see `provisional`).
    pub(crate) fn verdict(&self, index: usize) -> Option<Verdict> {
        self.verdicts[index].or_else(|| self.summary.and(self.provisional[index]))
    }

    /// Whether the test's verdict came inside libtest's running window (and so was shown live).
    pub(crate) fn is_final(&self, index: usize) -> bool {
        self.verdicts[index].is_some()
    }

    /// How long the test ran, by the model's clock (from when its slot opened to its result line).
    pub(crate) fn duration(&self, index: usize, now: Instant) -> std::time::Duration {
        let start = self.started_at[index].unwrap_or(now);
        self.finished_at[index]
            .unwrap_or(now)
            .saturating_duration_since(start)
    }

    pub(crate) fn output(&self, index: usize) -> Option<&str> {
        self.outputs.get(&index).map(String::as_str)
    }

    pub(crate) fn summary(&self) -> Option<Summary> {
        self.summary
    }

    /// Tests running now, with the instant each started.
    pub(crate) fn running(&self) -> impl Iterator<Item = (usize, Instant)> + '_ {
        (0..self.started).filter_map(|i| match (self.verdicts[i], self.started_at[i]) {
            (None, Some(at)) => Some((i, at)),
            _ => None,
        })
    }

    fn advance(&mut self, now: Instant) {
        let target = (self.completed + self.threads).min(self.names.len());
        while self.started < target {
            if self.verdicts[self.started].is_none() {
                self.started_at[self.started] = Some(now);
            }
            self.started += 1;
        }
    }

    /// Reads one line of the process's output.
    pub(crate) fn on_line(&mut self, line: &str, now: Instant) -> Line {
        if let Some(start) = self.pending.take() {
            let joined = format!("{start}\n{line}");
            let awaiting = self.awaiting;
            if let Some((index, verdict)) = self.parse_result(&joined) {
                return self.record(index, verdict, now);
            }
            self.awaiting = awaiting;
            // A line of its own (another result, the totals) ends what was held.
            if !line.starts_with("test ")
                && parse_summary(line).is_none()
                && self.may_continue(&joined)
            {
                self.pending = Some(joined);
                return Line::Output;
            }
        }
        if self.may_continue(line) {
            // Held until the next line says whether it is a multi-line name's result; the line is
            // output meanwhile, as it would be anyway.
            self.pending = Some(line.to_string());
            return Line::Output;
        }
        self.on_whole_line(line, now)
    }

    /// Whether `text` may be the first lines of a result line for a name that holds a newline: a known
    /// name's leading lines or, for names learned from results (a harness run whole), `test ` with no
    /// ` ... ` yet, up to eight lines.
    fn may_continue(&self, text: &str) -> bool {
        let Some(rest) = text.strip_prefix("test ") else {
            return false;
        };
        if self.open {
            !rest.trim().is_empty()
                && parse_summary(text).is_none()
                && !rest.contains(" ...")
                && rest.matches('\n').count() < 8
        } else {
            // Almost always empty: no lookup on the per-line path then.
            !self.name_starts.is_empty() && self.name_starts.contains(rest)
        }
    }

    fn on_whole_line(&mut self, line: &str, now: Instant) -> Line {
        if let Some(summary) = parse_summary(line) {
            self.add_summary(summary);
            self.section = None;
            return Line::Framing;
        }
        if line == "failures:" || line == "successes:" {
            self.section = Some(None);
            return Line::Framing;
        }
        // A `failures:` may come from a test's child, not libtest (or before libtest's, from a child
        // that also faked a verdict): inside a section, a result line for one of the process's tests
        // is still a result. A second verdict for a test is then a conflict as anywhere, so a real
        // failure is never swallowed; libtest itself prints no result lines there.
        if self.section.is_some() && !self.open {
            let awaiting = self.awaiting;
            match self.parse_result(line) {
                Some((index, verdict)) => {
                    self.section = None;
                    return self.record(index, verdict, now);
                }
                _ => self.awaiting = awaiting,
            }
        }
        if let Some(current) = self.section {
            return self.on_section_line(line, current);
        }
        if line.starts_with("running ") && (line.ends_with(" tests") || line.ends_with(" test")) {
            return Line::Framing;
        }
        if let Some((index, verdict)) = self.parse_result(line) {
            return self.record(index, verdict, now);
        }
        if let Some(index) = self.awaiting.take() {
            // The verdict of a single-threaded run, after output printed between name and verdict.
            if let Some(verdict) = parse_verdict(line.trim()) {
                return self.record(index, verdict, now);
            }
            self.awaiting = Some(index);
        }
        Line::Output
    }

    /// The test's own part of an output line: libtest prints `test NAME ... ` before a test runs, and
    /// what a test prints without capture (`--nocapture`, isolated runs) continues that line. The
    /// marker is framing; the rest is the test's (None when nothing is left).
    pub(crate) fn own_part<'a>(&self, line: &'a str) -> Option<&'a str> {
        let marked = line.strip_prefix("test ").and_then(|rest| {
            let (name, after) = rest.split_once(" ... ")?;
            let name = name.strip_suffix(" - should panic").unwrap_or(name);
            self.index.contains_key(name).then_some(after)
        });
        match marked {
            Some("") => None,
            Some(after) => Some(after),
            None => Some(line),
        }
    }

    /// What makes this process's results impossible, if anything: tests given two verdicts, or more
    /// results of a kind than libtest's own totals count. Both mean another process printed result
    /// lines into the test binary's output, so no result of this process can be taken on trust.
    pub(crate) fn contradiction(&self) -> Option<String> {
        if let Some(&first) = self.conflicts.first() {
            return Some(format!(
                "{} test(s) were reported both passed and failed (first: {}): a process other than \
                 libtest printed result lines into the test binary's output; each is counted failed",
                self.conflicts.len(),
                self.names[first]
            ));
        }
        let totals = self.summary?;
        let count = |v: Verdict| self.verdicts.iter().filter(|x| **x == Some(v)).count();
        let (passed, failed, ignored) = (
            count(Verdict::Passed),
            count(Verdict::Failed),
            count(Verdict::Ignored),
        );
        // Benchmarks run with `--bench` print `bench:` results, which libtest counts as measured.
        let over = passed > totals.passed + totals.measured
            || failed > totals.failed
            || ignored > totals.ignored;
        over.then(|| {
            format!(
                "its result lines say {passed} passed, {failed} failed, {ignored} ignored, but \
                 libtest's totals say {} passed, {} failed, {} ignored: a process other than libtest \
                 printed result lines into the test binary's output",
                totals.passed + totals.measured,
                totals.failed,
                totals.ignored
            )
        })
    }

    fn on_section_line(&mut self, line: &str, current: Option<usize>) -> Line {
        // libtest heads each test's captured output `---- NAME stdout ----`; libtest-mimic (and so
        // datatest-stable) `---- NAME ----`.
        let header = line.strip_prefix("---- ").and_then(|l| {
            l.strip_suffix(" stdout ----")
                .or_else(|| l.strip_suffix(" ----"))
        });
        if let Some(name) = header {
            let index = self.lookup(name);
            self.section = Some(index);
            return Line::Framing;
        }
        if let Some(index) = current {
            let out = self.outputs.entry(index).or_default();
            out.push_str(line);
            out.push('\n');
        }
        Line::Framing
    }

    /// Takes a verdict. A second line for a test that already has one is output, unless it contradicts
    /// it: then the test is failed (a fake pass must never hide a real failure) and the conflict noted.
    fn record(&mut self, index: usize, verdict: Verdict, now: Instant) -> Line {
        if let Some(earlier) = self.verdicts[index] {
            if earlier == verdict {
                return Line::Output;
            }
            if !self.conflicts.contains(&index) {
                self.conflicts.push(index);
            }
            if verdict != Verdict::Failed {
                return Line::Output;
            }
            self.verdicts[index] = Some(Verdict::Failed);
            return Line::Result(index, verdict);
        }
        if index >= self.started && !self.open {
            // Before its slot: not final, and the window does not move (see `provisional`). Two
            // such lines that disagree leave it failed.
            self.anomalies += 1;
            let held = &mut self.provisional[index];
            *held = match *held {
                Some(earlier) if earlier != verdict => Some(Verdict::Failed),
                _ => Some(verdict),
            };
            self.finished_at[index].get_or_insert(now);
            return Line::Output;
        }
        // libtest's own verdict, in the window, after an early one that said otherwise: a conflict.
        if let Some(early) = self.provisional[index].take()
            && early != verdict
        {
            if !self.conflicts.contains(&index) {
                self.conflicts.push(index);
            }
            let verdict = Verdict::Failed;
            self.verdicts[index] = Some(verdict);
            self.finished_at[index] = Some(now);
            self.completed += 1;
            self.advance(now);
            return Line::Result(index, verdict);
        }
        self.verdicts[index] = Some(verdict);
        self.finished_at[index] = Some(now);
        self.completed += 1;
        self.advance(now);
        Line::Result(index, verdict)
    }

    fn lookup(&mut self, name: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        if !self.open {
            return None;
        }
        let i = self.names.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        self.started_at.push(None);
        self.verdicts.push(None);
        self.finished_at.push(None);
        self.provisional.push(None);
        self.started = self.names.len();
        Some(i)
    }

    /// `test NAME ... ok`, `test NAME - should panic ... ok`, `test NAME ... ignored, reason`.
    /// Names may contain ` ... ` themselves (custom harnesses), so every split point is tried against
    /// the known names; in open mode the last split point is used.
    fn parse_result(&mut self, line: &str) -> Option<(usize, Verdict)> {
        let rest = line.strip_prefix("test ")?;
        let splits: Vec<usize> = rest.match_indices(" ... ").map(|(i, _)| i).collect();
        for &at in &splits {
            let name = &rest[..at];
            let name = name.strip_suffix(" - should panic").unwrap_or(name);
            // libtest-mimic pads names to one width: a learned name loses the padding.
            let name = if self.open { name.trim_end() } else { name };
            let tail = &rest[at + 5..];
            if !self.open && !self.index.contains_key(name) {
                continue;
            }
            if self.open && Some(&at) != splits.last() {
                continue;
            }
            let Some(index) = self.lookup(name) else {
                continue;
            };
            let verdict = parse_verdict(tail);
            if verdict.is_none() {
                // The start marker, maybe followed by the test's own output (`--nocapture`).
                self.awaiting = Some(index);
            }
            return verdict.map(|v| (index, v));
        }
        // `test NAME ... ` with nothing after it: the single-threaded start marker.
        let name = rest
            .strip_suffix(" ...")
            .or_else(|| rest.strip_suffix(" ... "))?;
        let name = name.strip_suffix(" - should panic").unwrap_or(name);
        self.awaiting = self.lookup(name);
        None
    }

    fn add_summary(&mut self, s: Summary) {
        let total = self.summary.get_or_insert_with(Summary::default);
        total.passed += s.passed;
        total.failed += s.failed;
        total.ignored += s.ignored;
        total.measured += s.measured;
        total.filtered_out += s.filtered_out;
    }
}

fn parse_verdict(tail: &str) -> Option<Verdict> {
    let word = tail.split([',', ' ']).next().unwrap_or("");
    match word {
        "ok" => Some(Verdict::Passed),
        "FAILED" => Some(Verdict::Failed),
        "ignored" => Some(Verdict::Ignored),
        "bench:" => Some(Verdict::Passed),
        _ => None,
    }
}

/// `test result: ok. 3 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.12s`
pub(crate) fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut summary = Summary::default();
    for part in counts.split("; ") {
        let (number, what) = part.split_once(' ')?;
        let Ok(n) = number.parse::<usize>() else {
            continue;
        };
        match what {
            "passed" => summary.passed = n,
            "failed" => summary.failed = n,
            "ignored" => summary.ignored = n,
            "measured" => summary.measured = n,
            "filtered out" => summary.filtered_out = n,
            _ => {}
        }
    }
    Some(summary)
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
