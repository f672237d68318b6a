//! The units' temporary directories (`TMPDIR`, one per unit in the session's): taken when a unit
//! starts, handed back when it is done. One its unit left empty, still private and ours, is used
//! again by a later unit instead of being removed and made anew: on ext4 a `mkdir` and an `rmdir` cost
//! about 150 µs together, which a thousand isolated tests would pay on the scheduler's thread. One
//! with anything in it is removed (safely, `sys::tree`), and what was there is the unit's report.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::session::Session;
use crate::sys::tree::{self, Tidied};

/// How long removing one unit's directory may hold the scheduler; what is left then goes with the
/// session's, at its end.
const UNIT_BOUND: Duration = Duration::from_secs(5);

/// Empty directories ready for the next unit, and how many were ever made.
#[derive(Default)]
pub(crate) struct TempPool {
    spare: Mutex<(Vec<PathBuf>, usize)>,
}

impl TempPool {
    /// A directory for a unit about to start: a spare one, else a new `<session temp>/u<N>`, mode
    /// 0700; none when the session has no temporary directory. The path is kept short: a test that
    /// binds a unix socket there has about 108 bytes for the whole path.
    pub(crate) fn take(&self, session: &Session) -> std::io::Result<Option<PathBuf>> {
        let Some(root) = session.temp_dir() else {
            return Ok(None);
        };
        let mut spare = crate::session::locked(&self.spare);
        if let Some(dir) = spare.0.pop() {
            return Ok(Some(dir));
        }
        spare.1 += 1;
        let dir = root.join(format!("u{}", spare.1));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("create its temporary directory {}: {e}", dir.display()),
                )
            })?;
        Ok(Some(dir))
    }

    /// Takes back the directory of a unit that is done (its processes are gone): kept for another
    /// unit when it is empty, private and ours, else removed. What was in it is returned (empty when
    /// nothing was).
    pub(crate) fn give_back(&self, dir: PathBuf) -> Tidied {
        if tree::is_empty_private_dir(&dir) {
            crate::session::locked(&self.spare).0.push(dir);
            return Tidied::default();
        }
        tree::remove_tree(&dir, false, Instant::now() + UNIT_BOUND)
    }
}
