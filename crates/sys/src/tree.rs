//! Removing a directory tree that a test wrote, safely: every step is taken relative to an open
//! directory descriptor (`openat`, `fstatat`, `unlinkat`), so a symlink is removed as a link and never
//! followed, even one planted while the walk runs; a directory on another device (something mounted
//! there) is left alone and reported; the walk stops at a deadline; and what cannot be removed is
//! reported, not waited for. Nothing outside the tree is ever touched.
//!
//! `std::fs::remove_dir_all` follows no symlink either, but it crosses mount points, has no bound, and
//! says nothing of what it removed; the report ("left 3 files (1.0 MiB)") needs the count and the size.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// How many paths a report names.
const NAMED: usize = 5;

/// What removing a tree found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tidied {
    /// Entries that were not directories (files, symlinks, sockets, ...), removed or not.
    pub files: u64,
    /// Their size, as `stat` gives it (a symlink's is its target's name).
    pub bytes: u64,
    /// The first few of them, relative to the tree's root.
    pub first: Vec<PathBuf>,
    /// What could not be removed, and why: `path: reason`.
    pub problems: Vec<String>,
}

impl Tidied {
    /// Nothing was there, and nothing is left.
    pub fn is_empty(&self) -> bool {
        self.files == 0 && self.problems.is_empty()
    }

    fn found(&mut self, path: &Path, stat: &FileStat) {
        self.files += 1;
        self.bytes += u64::try_from(stat.st_size).unwrap_or(0);
        if self.first.len() < NAMED {
            self.first.push(path.to_path_buf());
        }
    }

    fn problem(&mut self, path: &Path, why: impl std::fmt::Display) {
        self.problems.push(format!("{}: {why}", path.display()));
    }
}

/// Removes `dir` and everything under it (`dir` itself too, unless `keep_root`), by the rules above;
/// `dir` being a symlink, the link alone goes. A missing `dir` is an empty result.
pub fn remove_tree(dir: &Path, keep_root: bool, deadline: Instant) -> Tidied {
    let mut tidied = Tidied::default();
    let Ok(name) = CString::new(dir.as_os_str().as_bytes()) else {
        tidied.problem(dir, "a path with a NUL byte");
        return tidied;
    };
    let here = nix::fcntl::AT_FDCWD;
    let stat = match fstatat(here, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return tidied,
        Err(e) => {
            tidied.problem(dir, e.desc());
            return tidied;
        }
    };
    if !is_dir(&stat) {
        tidied.found(Path::new(dir.file_name().unwrap_or(dir.as_os_str())), &stat);
        if let Err(e) = unlinkat(here, name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
            tidied.problem(dir, e.desc());
        }
        return tidied;
    }
    match open_dir(here, &name) {
        Ok(fd) => {
            let mut walk = Walk {
                device: stat.st_dev,
                deadline,
                tidied: &mut tidied,
            };
            walk.empty(fd, Path::new(""));
        }
        Err(e) => tidied.problem(dir, e.desc()),
    }
    if !keep_root
        && tidied.problems.is_empty()
        && let Err(e) = unlinkat(here, name.as_c_str(), UnlinkatFlags::RemoveDir)
    {
        tidied.problem(dir, e.desc());
    }
    tidied
}

/// Whether `dir` is a directory (not a symlink to one) of this user's, mode 0700, with nothing in it:
/// fit to be handed to another process as its own.
pub fn is_empty_private_dir(dir: &Path) -> bool {
    let Ok(name) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let Ok(fd) = open_dir(nix::fcntl::AT_FDCWD, &name) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(&fd) else {
        return false;
    };
    let private = stat.st_uid == nix::unistd::geteuid().as_raw() && stat.st_mode & 0o7777 == 0o700;
    private && entries(&fd).is_ok_and(|names| names.is_empty())
}

/// One removal's fixed facts and its running report.
struct Walk<'a> {
    /// The tree's device: a directory on another is a mount point, left alone.
    device: libc::dev_t,
    deadline: Instant,
    tidied: &'a mut Tidied,
}

impl Walk<'_> {
    /// Removes everything inside the open directory `fd` (at `rel` in the tree).
    fn empty(&mut self, fd: OwnedFd, rel: &Path) {
        let names = match entries(&fd) {
            Ok(names) => names,
            Err(e) => return self.tidied.problem(rel, e.desc()),
        };
        for name in names {
            let path = rel.join(OsStr::from_bytes(name.as_bytes()));
            if Instant::now() >= self.deadline {
                return self
                    .tidied
                    .problem(&path, "not removed: the removal's time bound passed");
            }
            self.remove(&fd, &name, &path);
        }
    }

    /// Removes the entry `name` of the open directory `fd`.
    fn remove(&mut self, fd: &OwnedFd, name: &CStr, path: &Path) {
        let stat = match fstatat(fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return,
            Err(e) => return self.tidied.problem(path, e.desc()),
        };
        if !is_dir(&stat) {
            self.tidied.found(path, &stat);
            if let Err(e) = unlinkat(fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                && e != Errno::ENOENT
            {
                self.tidied.problem(path, e.desc());
            }
            return;
        }
        if stat.st_dev != self.device {
            return self.tidied.problem(
                path,
                "a mount point: left alone (unmount it, then remove it)",
            );
        }
        match open_dir(fd.as_fd(), name) {
            Ok(child) => self.empty(child, path),
            Err(e) => return self.tidied.problem(path, e.desc()),
        }
        if let Err(e) = unlinkat(fd.as_fd(), name, UnlinkatFlags::RemoveDir)
            && e != Errno::ENOENT
        {
            self.tidied.problem(path, e.desc());
        }
    }
}

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode as _) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Opens the directory `name` of `at`, refusing a symlink (`O_NOFOLLOW`): one swapped in after the
/// `fstatat` fails here instead of being followed.
fn open_dir<Fd: std::os::fd::AsFd>(at: Fd, name: &CStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(at, name, flags, Mode::empty())
}

/// The names in the open directory `fd`, read through a duplicate of it (the directory stream owns
/// and closes its descriptor).
fn entries(fd: &OwnedFd) -> nix::Result<Vec<CString>> {
    let stream = nix::dir::Dir::from_fd(fd.try_clone().map_err(|_| Errno::EMFILE)?)?;
    let mut names = Vec::new();
    for entry in stream {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    /// A directory of this test's own, removed by its own name when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(label: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("cleantest-sys-tree-{label}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A directory outside the tree, holding `precious`.
    fn outside_with_precious(s: &Scratch) -> PathBuf {
        let outside = s.0.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), "keep me").unwrap();
        outside
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn removes_files_and_directories_and_counts_them() {
        let s = Scratch::new("count");
        let tree = s.0.join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("one"), vec![0u8; 1000]).unwrap();
        std::fs::write(tree.join("a/b/two"), vec![0u8; 24]).unwrap();
        let tidied = remove_tree(&tree, false, soon());
        assert_eq!(tidied.files, 2, "{tidied:?}");
        assert_eq!(tidied.bytes, 1024);
        assert!(tidied.problems.is_empty(), "{tidied:?}");
        assert!(!tree.exists());
    }

    #[test]
    fn a_symlink_out_is_removed_and_its_target_kept() {
        let s = Scratch::new("link");
        let outside = outside_with_precious(&s);
        let tree = s.0.join("tree");
        std::fs::create_dir_all(tree.join("d")).unwrap();
        symlink(&outside, tree.join("d/home")).unwrap();
        symlink(outside.join("precious"), tree.join("file-link")).unwrap();
        let tidied = remove_tree(&tree, false, soon());
        assert_eq!(tidied.files, 2, "{tidied:?}");
        assert!(!tree.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("precious")).unwrap(),
            "keep me"
        );
    }

    #[test]
    fn a_root_that_is_a_symlink_is_unlinked_not_followed() {
        let s = Scratch::new("root-link");
        let outside = outside_with_precious(&s);
        let root = s.0.join("tmp");
        symlink(&outside, &root).unwrap();
        let tidied = remove_tree(&root, false, soon());
        assert_eq!(tidied.files, 1);
        assert!(std::fs::symlink_metadata(&root).is_err());
        assert!(outside.join("precious").exists());
    }

    #[test]
    fn keep_root_empties_it() {
        let s = Scratch::new("keep-root");
        std::fs::write(s.0.join("f"), "x").unwrap();
        let tidied = remove_tree(&s.0, true, soon());
        assert_eq!(tidied.files, 1);
        assert!(s.0.is_dir());
        assert_eq!(std::fs::read_dir(&s.0).unwrap().count(), 0);
    }

    #[test]
    fn a_passed_deadline_reports_instead_of_removing() {
        let s = Scratch::new("deadline");
        let tree = s.0.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("f"), "x").unwrap();
        let tidied = remove_tree(&tree, false, Instant::now());
        assert_eq!(tidied.files, 0);
        assert_eq!(tidied.problems.len(), 1, "{tidied:?}");
        assert!(tidied.problems[0].contains("time bound"), "{tidied:?}");
        assert!(tree.join("f").exists());
    }

    #[test]
    fn only_an_empty_private_directory_is_fit_to_hand_on() {
        use std::os::unix::fs::PermissionsExt;
        let s = Scratch::new("fit");
        let dir = s.0.join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(is_empty_private_dir(&dir));
        std::fs::write(dir.join("f"), "x").unwrap();
        assert!(!is_empty_private_dir(&dir));
        std::fs::remove_file(dir.join("f")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!is_empty_private_dir(&dir));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = s.0.join("link");
        symlink(&dir, &link).unwrap();
        assert!(!is_empty_private_dir(&link));
        assert!(!is_empty_private_dir(&s.0.join("missing")));
    }

    #[test]
    fn a_missing_tree_is_nothing() {
        let s = Scratch::new("missing");
        assert!(remove_tree(&s.0.join("nope"), false, soon()).is_empty());
    }
}
