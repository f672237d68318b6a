//! `--archive-file`: the archive checked (its manifest first: a foreign file or another platform fails
//! before anything is written), unpacked once, and its binaries described as a build would describe
//! them, with every path of the build machine moved here.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::manifest::{self, Manifest, Remap, TARGET_PREFIX, WORKSPACE_PREFIX};
use crate::cli::RunArgs;
use crate::errors::{ArchiveError, Error};
use crate::run::cargo::{self, PackageInfo, TestBinary, Workspace};
use crate::run::cargo_env::{cargo_program, library_path};
use crate::run::harness;
use crate::run::target_runner::Runners;
use crate::session::state;

/// In an unpacked directory: written last, so a directory without it is not reused.
const COMPLETE: &str = ".cleantest-complete";
/// In an `--extract-to` directory: held (flock) while it is checked, unpacked and used.
const LOCK: &str = ".cleantest-lock";

/// An archive's tests, ready to run.
pub(crate) struct Unpacked {
    pub workspace: Workspace,
    pub binaries: Vec<TestBinary>,
    /// The directory it unpacked into, removed when dropped unless it is `--extract-to`'s.
    pub dir: Extracted,
}

/// Where an archive unpacked: the session's own directory (removed when dropped, or by the reaper
/// and the next run when the runner was killed), or `--extract-to`'s (kept for the next run).
pub(crate) struct Extracted {
    path: PathBuf,
    /// The state directory and session id of a session's own directory.
    owner: Option<(PathBuf, String)>,
    _lock: File,
}

impl Extracted {
    /// Whether it holds the whole of the archive whose manifest is `text`.
    fn holds(&self, text: &str) -> bool {
        self.path.join(COMPLETE).exists()
            && read_text(&self.path.join(manifest::MANIFEST)).as_deref() == Some(text)
    }

    /// `--extract-to`'s lock taken alone, to unpack (a session's own directory is its alone already).
    fn exclusive(&self) -> Result<(), Error> {
        match self.owner {
            Some(_) => Ok(()),
            None => self._lock.lock().map_err(|e| self.lock_error(e)),
        }
    }

    /// `--extract-to`'s lock shared again, with the other runs that use the same copy.
    fn shared(&self) -> Result<(), Error> {
        match self.owner {
            Some(_) => Ok(()),
            None => self._lock.lock_shared().map_err(|e| self.lock_error(e)),
        }
    }

    fn lock_error(&self, source: std::io::Error) -> Error {
        ArchiveError::Extract {
            dir: self.path.clone(),
            source,
        }
        .into()
    }
}

impl Drop for Extracted {
    fn drop(&mut self) {
        if let Some((state, session)) = &self.owner {
            state::remove_archive_dir(state, session);
        }
    }
}

type Entries<'a> = tar::Entries<'a, super::zstd::Decoder>;

/// Opens the archive `opts` names, unpacks it (or reuses `--extract-to`'s copy of it) and describes its
/// binaries; `session` names the directory it unpacks into by default.
pub(crate) fn open(args: &RunArgs, session: &str) -> Result<Unpacked, Error> {
    let opts = &args.archive;
    let path = opts
        .archive_file
        .as_deref()
        .expect("open is called with --archive-file");
    let read_error = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let decoder = super::zstd::decoder(file).map_err(|e| foreign(path, &e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive
        .entries()
        .map_err(|e| foreign(path, &e.to_string()))?;
    let (manifest, text) = read_manifest(path, &mut entries)?;
    let runners = Runners::load(std::slice::from_ref(&manifest.target), &[]);
    check_platform(path, &manifest, &runners)?;
    let dir = match &opts.extract_to {
        Some(dir) => reusable_dir(dir)?,
        None => session_dir(session)?,
    };
    if !dir.holds(&text) {
        // Runs that use `--extract-to`'s copy hold it shared; this one waits for them to end.
        dir.exclusive()?;
        if !dir.holds(&text) {
            let started = Instant::now();
            unpack(path, entries, &dir.path, &text)?;
            crate::output::err(format!(
                "     Unpacked {} ({} test binaries) into {} in {:.1}s",
                path.display(),
                manifest.binaries.len(),
                dir.path.display(),
                started.elapsed().as_secs_f64()
            ));
        }
        dir.shared()?;
    }
    let root = match &opts.workspace_remap {
        Some(remap) => std::path::absolute(remap).map_err(|source| ArchiveError::Extract {
            dir: remap.clone(),
            source,
        })?,
        None => dir.path.join(WORKSPACE_PREFIX),
    };
    let target = dir.path.join(TARGET_PREFIX);
    let remap = Remap {
        manifest: &manifest,
        workspace: &root,
        target: &target,
    };
    let all = describe(path, &remap, &runners, opts.workspace_remap.is_none())?;
    let ids: Vec<&str> = all.iter().map(|b| b.id.as_str()).collect();
    if let Some(why) = super::select::unknown(args, &ids) {
        return Err(Error::Usage(format!(
            "select tests in {}: {why}",
            path.display()
        )));
    }
    let binaries = cargo::in_cargo_order(
        all.into_iter()
            .filter(|b| super::select::selects(args, &b.id))
            .collect(),
    );
    let packages = binaries.iter().map(|b| b.package.clone()).collect();
    Ok(Unpacked {
        workspace: Workspace::restored(root, target, packages),
        binaries,
        dir,
    })
}

fn foreign(path: &Path, reason: &str) -> Error {
    ArchiveError::Foreign {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
    .into()
}

fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The first member, which must be a manifest of this runner's format.
fn read_manifest(path: &Path, entries: &mut Entries<'_>) -> Result<(Manifest, String), Error> {
    let not_ours = |e: &dyn std::fmt::Display| foreign(path, &e.to_string());
    let mut first = match entries.next() {
        Some(entry) => entry.map_err(|e| not_ours(&e))?,
        None => return Err(foreign(path, "it is empty")),
    };
    let name = first.path().map_err(|e| not_ours(&e))?.into_owned();
    if name != Path::new(manifest::MANIFEST) {
        return Err(foreign(
            path,
            &format!(
                "its first member is {}, not {}",
                name.display(),
                manifest::MANIFEST
            ),
        ));
    }
    let mut text = String::new();
    (&mut first)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| not_ours(&e))?;
    let manifest: Manifest = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => {
            let format = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("format")?.as_u64());
            let reason = match format {
                Some(n) if n != u64::from(manifest::FORMAT) => format!(
                    "it has format {n}, and this runner reads format {}; make it with this version",
                    manifest::FORMAT
                ),
                _ => format!("its manifest does not parse: {e}"),
            };
            return Err(foreign(path, &reason));
        }
    };
    if manifest.kind != manifest::KIND || manifest.format != manifest::FORMAT {
        return Err(foreign(
            path,
            &format!(
                "its manifest says {:?}, format {}",
                manifest.kind, manifest.format
            ),
        ));
    }
    Ok((manifest, text))
}

/// Tests built for another platform run only through a target runner configured for their triple
/// (`CARGO_TARGET_<TRIPLE>_RUNNER`, qemu say).
fn check_platform(path: &Path, manifest: &Manifest, runners: &Runners) -> Result<(), Error> {
    let (arch, os) = manifest::platform(&manifest.target);
    let here = manifest::here();
    if (arch, os) == here || runners.for_executable(Path::new("")).is_some() {
        return Ok(());
    }
    Err(ArchiveError::Target {
        path: path.to_path_buf(),
        target: manifest.target.clone(),
        here: format!("{}-{}", here.0, here.1),
    }
    .into())
}

/// `--extract-to`: created if missing, locked shared, and used only when empty or holding an earlier
/// unpacking (ours: it has our manifest); anything else there is somebody's, and left alone.
fn reusable_dir(dir: &Path) -> Result<Extracted, Error> {
    let fail = |source| ArchiveError::Extract {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let lock = File::create(dir.join(LOCK)).map_err(fail)?;
    lock.lock_shared().map_err(fail)?;
    let ours = dir.join(manifest::MANIFEST).is_file();
    let others = std::fs::read_dir(dir)
        .map_err(fail)?
        .flatten()
        .any(|e| e.file_name() != LOCK);
    if others && !ours {
        return Err(fail(std::io::Error::other(
            "it holds files that no archive unpacked; name an empty directory, or one an archive \
             was unpacked into before",
        ))
        .into());
    }
    Ok(Extracted {
        path: dir.to_path_buf(),
        owner: None,
        _lock: lock,
    })
}

/// The session's own directory for it, `<state>/archives/<session>/`, made private after its lock is
/// taken; the directories of runners that were killed (their lock free) are removed first, each by its
/// own name.
fn session_dir(session: &str) -> Result<Extracted, Error> {
    let state = state::state_dir().map_err(Error::State)?;
    state::prune_archive_dirs(&state);
    let path = state::archive_dir(&state, session);
    if let Some(parent) = path.parent() {
        state::private_dir(parent).map_err(Error::State)?;
    }
    let lock = File::create(state::archive_lock(&state, session)).map_err(Error::State)?;
    lock.try_lock()
        .map_err(|e| Error::State(std::io::Error::other(e.to_string())))?;
    let extracted = Extracted {
        path,
        owner: Some((state, session.to_string())),
        _lock: lock,
    };
    state::private_dir(&extracted.path).map_err(Error::State)?;
    Ok(extracted)
}

/// Unpacks the rest of the archive into `dir` (what an earlier unpacking left there goes first, by
/// its own names), then writes the manifest and the mark of completion.
fn unpack(path: &Path, entries: Entries<'_>, dir: &Path, text: &str) -> Result<(), Error> {
    let extract_error = |source| ArchiveError::Extract {
        dir: dir.to_path_buf(),
        source,
    };
    for name in [COMPLETE, manifest::MANIFEST] {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(extract_error(e).into());
            }
            _ => {}
        }
    }
    for name in [TARGET_PREFIX, WORKSPACE_PREFIX] {
        match std::fs::remove_dir_all(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(extract_error(e).into());
            }
            _ => {}
        }
    }
    let damaged = |e: std::io::Error| ArchiveError::Read {
        path: path.to_path_buf(),
        source: e,
    };
    for entry in entries {
        let mut entry = entry.map_err(damaged)?;
        let name = entry.path().map_err(damaged)?.into_owned();
        if !member_name_is_ours(&name) {
            return Err(foreign(path, &format!("it holds {}", name.display())));
        }
        // `unpack_in` refuses a member whose path (or a link on it) leads outside `dir`.
        match entry.unpack_in(dir) {
            Ok(true) => {}
            Ok(false) => return Err(foreign(path, &format!("{} leads outside", name.display()))),
            Err(e) => return Err(unpack_error(path, dir, &name, e)),
        }
    }
    std::fs::write(dir.join(manifest::MANIFEST), text).map_err(extract_error)?;
    std::fs::write(dir.join(COMPLETE), "").map_err(extract_error)?;
    Ok(())
}

/// A member that could not be unpacked: the archive's fault when it ended early or its compressed data
/// is damaged (the zstd and tar layers say so as "unexpected end" or "invalid data"), else the
/// directory's (a full disk, say). tar's own words name the member; the cause is below them.
fn unpack_error(path: &Path, dir: &Path, name: &Path, e: std::io::Error) -> Error {
    // The deepest cause says what happened; tar's layers above it only name the member.
    let mut cause: &dyn std::error::Error = &e;
    let mut kind = e.kind();
    while let Some(inner) = cause.source() {
        cause = inner;
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            kind = io.kind();
        }
    }
    let source = std::io::Error::new(kind, format!("{}: {cause}", name.display()));
    match kind {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => ArchiveError::Read {
            path: path.to_path_buf(),
            source,
        },
        _ => ArchiveError::Extract {
            dir: dir.to_path_buf(),
            source,
        },
    }
    .into()
}

/// A member under `target/` or `workspace/`, by plain names only.
fn member_name_is_ours(name: &Path) -> bool {
    let mut components = name.components();
    let first = components.next();
    matches!(first, Some(Component::Normal(n)) if n == TARGET_PREFIX || n == WORKSPACE_PREFIX)
        && components.all(|c| matches!(c, Component::Normal(_)))
}

/// The manifest's binaries as a build describes its own. Package directories the
/// archive's workspace lacks (it carries only the files named) are made, as the tests' working
/// directories.
fn describe(
    path: &Path,
    remap: &Remap<'_>,
    runners: &Runners,
    make_dirs: bool,
) -> Result<Vec<TestBinary>, Error> {
    let manifest = remap.manifest;
    let mut packages = Vec::new();
    for package in &manifest.packages {
        let dir = remap.workspace.join(&package.dir);
        if make_dirs {
            std::fs::create_dir_all(&dir).map_err(|source| ArchiveError::Extract {
                dir: dir.clone(),
                source,
            })?;
        }
        packages.push(Arc::new(PackageInfo::restored(package.name.clone(), dir)));
    }
    let mut binaries = Vec::new();
    for entry in &manifest.binaries {
        let executable = remap.target.join(&entry.executable);
        let package = packages.iter().find(|p| p.name == entry.package);
        let (true, Some(package)) = (executable.is_file(), package) else {
            return Err(ArchiveError::Missing {
                path: path.to_path_buf(),
                what: format!("{} ({})", entry.executable.display(), entry.id),
            }
            .into());
        };
        let mut env: Vec<(String, std::ffi::OsString)> = entry
            .env
            .iter()
            .map(|(k, v)| (k.clone(), remap.value(v).into()))
            .collect();
        env.push(("CARGO".into(), cargo_program()));
        env.extend(library_path(&executable).map(|p| ("LD_LIBRARY_PATH".to_string(), p)));
        binaries.push(TestBinary {
            id: entry.id.clone(),
            harness: harness::classify(&executable, entry.custom_harness),
            runner: runners.for_executable(&executable),
            executable,
            package: package.clone(),
            is_lib: entry.is_lib,
            doctests: false,
            env,
            order: 0,
            sort_key: entry.sort_key.clone(),
            package_id: String::new(),
        });
    }
    Ok(binaries)
}
