//! For unit tests: a directory of a test's own under the system's temporary directory, made fresh and
//! removed when dropped, failed test or not.

use std::path::PathBuf;

pub(crate) struct TestDir(pub(crate) PathBuf);

impl TestDir {
    /// `<temp>/cleantest-<label>-<pid>`, empty.
    pub(crate) fn fresh(label: &str) -> TestDir {
        let path = std::env::temp_dir().join(format!("cleantest-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Its own name, made by `fresh`: never a computed parent.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
