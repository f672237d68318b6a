//! Which harness a test binary runs its tests with, found without running it: that decides whether it can
//! be listed, whether its running tests can be followed, and how it is started.
//!
//! - `harness = true` (the default): libtest.
//! - `harness = false`: the binary is looked at, not run. A Rust binary keeps the source paths of the
//!   crates it was built from (panic locations name `…/libtest-mimic-0.8.2/src/lib.rs`, even in a
//!   stripped release build), so the harness crate it links shows in its bytes. libtest-mimic,
//!   datatest-stable and tester answer `--list` like libtest. Anything else (criterion, bencher, a plain
//!   `main`) may run its whole body when asked to list, reject libtest's flags, or print no results: it
//!   is run once, the way cargo test runs it.
//!
//! A binary that links no known harness crate is treated as a plain `main`: running it as cargo test does
//! is always right, only less fine-grained.

use std::io::Read;
use std::path::Path;

/// How a binary runs its tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Harness {
    /// libtest: listed, and followed test by test from its output.
    Libtest,
    /// A `harness = false` target on a libtest-compatible crate: listed like libtest. `ordered` when it
    /// starts its tests in list order with at most `--test-threads` at once, as libtest does (tester,
    /// a fork of libtest), so its running tests can be followed too; libtest-mimic runs them on threads
    /// of its own in its own order.
    Compatible { ordered: bool },
    /// Any other `harness = false` target (criterion, bencher, a plain `main`): never listed, run once as
    /// cargo test runs it, counted by the `test result:` lines it prints, if any.
    Opaque,
}

/// Crates whose harness answers `--list --format terse` and `--exact NAME` like libtest, with whether it
/// follows libtest's scheduling. Each is matched by its source path as a crates.io package or a
/// vendored one.
const COMPATIBLE: &[(&str, bool)] = &[
    ("libtest-mimic", false),
    ("datatest-stable", false),
    ("tester", true),
];

/// Classifies a binary; `custom` is its target's `harness = false`.
pub(crate) fn classify(executable: &Path, custom: bool) -> Harness {
    if !custom {
        return Harness::Libtest;
    }
    let markers: Vec<(Vec<u8>, bool)> = COMPATIBLE
        .iter()
        .flat_map(|&(name, ordered)| {
            // `…/tester-0.9.1/src/…` from crates.io, `…/tester/src/…` vendored.
            [format!("/{name}-"), format!("/{name}/src/")]
                .into_iter()
                .map(move |m| (m.into_bytes(), ordered))
        })
        .collect();
    match find_first(executable, &markers) {
        Some(ordered) => Harness::Compatible { ordered },
        None => Harness::Opaque,
    }
}

/// Reads `file` once and returns the tag of the first marker found in it (checked as crate source
/// paths: the marker must be followed by a digit or `src/`, which `classify` builds in).
fn find_first(file: &Path, markers: &[(Vec<u8>, bool)]) -> Option<bool> {
    let mut reader = std::fs::File::open(file).ok()?;
    let longest = markers.iter().map(|(m, _)| m.len()).max().unwrap_or(0);
    let mut buf = vec![0u8; 1 << 20];
    // The tail of the previous chunk, so a marker split across two reads is still found.
    let mut carry = 0;
    loop {
        let read = reader.read(&mut buf[carry..]).ok()?;
        if read == 0 {
            return None;
        }
        let window = &buf[..carry + read];
        for (marker, tag) in markers {
            if contains_path(window, marker) {
                return Some(*tag);
            }
        }
        carry = longest.min(window.len());
        let from = window.len() - carry;
        buf.copy_within(from..from + carry, 0);
    }
}

/// `marker` in `haystack`, where a `/name-` marker must go on with a version digit (so `/tester-` does
/// not match `/tester-utils/`).
fn contains_path(haystack: &[u8], marker: &[u8]) -> bool {
    let versioned = marker.last() == Some(&b'-');
    memchr::memmem::find_iter(haystack, marker).any(|at| {
        !versioned
            || haystack
                .get(at + marker.len())
                .is_some_and(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_bytes(bytes: &[u8]) -> Harness {
        let path = std::env::temp_dir().join(format!(
            "cleantest-harness-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let harness = classify(&path, true);
        std::fs::remove_file(&path).unwrap();
        harness
    }

    #[test]
    fn harness_crates_are_found_by_their_source_paths() {
        let mimic = b"xx/registry/src/index/libtest-mimic-0.8.2/src/lib.rs\0yy";
        assert_eq!(
            classify_bytes(mimic),
            Harness::Compatible { ordered: false }
        );
        let tester = b"..vendor/tester/src/lib.rs..";
        assert_eq!(
            classify_bytes(tester),
            Harness::Compatible { ordered: true }
        );
        let criterion = b"/criterion-0.5.1/src/lib.rs /tester-utils-1.0/src/x.rs";
        assert_eq!(classify_bytes(criterion), Harness::Opaque);
        assert_eq!(classify_bytes(b"fn main"), Harness::Opaque);
    }

    #[test]
    fn a_marker_across_two_reads_is_found() {
        let mut bytes = vec![b'x'; (1 << 20) - 5];
        bytes.extend_from_slice(b"/libtest-mimic-0.8.2/src/lib.rs");
        assert_eq!(
            classify_bytes(&bytes),
            Harness::Compatible { ordered: false }
        );
    }

    #[test]
    fn libtest_targets_are_not_read() {
        assert_eq!(classify(Path::new("/nonexistent"), false), Harness::Libtest);
    }
}
