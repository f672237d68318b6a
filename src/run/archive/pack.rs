//! `cargo cleantest archive`: the build a run would make, then one zstd-compressed tar of what its
//! tests need where they run: the manifest first, the workspace's files next (small, and what a
//! shard reads before it opens its session), then the binaries and their support files.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::manifest::{self, Binary, Manifest, Package, TARGET_PREFIX, WORKSPACE_PREFIX};
use crate::cli::{ArchiveArgs, RunArgs};
use crate::contract::EXIT_OK;
use crate::errors::{ArchiveError, Error};
use crate::run::cargo::{self, Built, TestBinary, Workspace};
use crate::run::harness::Harness;
use crate::run::target_runner::Runners;
use crate::session::{CleanupGuard, Session};

/// Builds and writes the archive; the exit code is 0 when it is written.
pub(crate) fn archive(args: &ArchiveArgs) -> Result<i32, Error> {
    let started = Instant::now();
    let run_args = args.build_args();
    if run_args.targets.doc {
        return Err(ArchiveError::Doctests.into());
    }
    if run_args.compilation.target.len() > 1 {
        return Err(Error::Usage(
            "archive one `--target` at a time: each archive is run on machines of one kind".into(),
        ));
    }
    let session = Session::new();
    let _cleanup = CleanupGuard(session.clone());
    let workspace = Workspace::load(&run_args)?;
    // Checked before the build: a wrong `[archive] include` must not cost one.
    let files = crate::config::archived_files(&workspace.root)?;
    let built = cargo::build(&run_args, &session)?;
    let runners = Runners::load(&run_args.compilation.target, &run_args.cargo_config);
    let binaries = workspace.test_binaries(&built, &runners);
    let target_dir = run_args
        .compilation
        .target_dir
        .clone()
        .map(absolute)
        .unwrap_or_else(|| workspace.target_dir.clone());
    let contents = Contents::of(&built, &binaries, &target_dir, files)?;
    let manifest = contents.manifest(&run_args, &workspace, &binaries, &target_dir)?;
    write(&args.archive_file, &manifest, &workspace.root, &target_dir)?;
    report(args, &manifest, started);
    Ok(EXIT_OK)
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// What the archive holds besides the manifest.
struct Contents {
    files: Vec<PathBuf>,
    support: Vec<PathBuf>,
}

impl Contents {
    fn of(
        built: &Built,
        binaries: &[TestBinary],
        target_dir: &Path,
        files: Vec<PathBuf>,
    ) -> Result<Contents, Error> {
        let mut support = BTreeSet::new();
        for binary in binaries {
            let bins = binary
                .env
                .iter()
                .filter(|(k, _)| k.starts_with("CARGO_BIN_EXE_"))
                .map(|(_, v)| PathBuf::from(v));
            for exe in bins.chain(std::iter::once(binary.executable.clone())) {
                shared_libraries(&exe, &mut support)?;
                if exe != binary.executable {
                    support.insert(exe);
                }
            }
        }
        // Build scripts' output, one level deep (nextest's rule: a build of C sources can leave
        // gigabytes below), for the packages whose tests are archived.
        let packages: BTreeSet<&str> = binaries.iter().map(|b| b.package_id.as_str()).collect();
        for (package, dir) in built.out_dirs() {
            if packages.contains(package.as_str()) {
                support.extend(files_in(dir));
            }
        }
        let support = support
            .into_iter()
            .map(|p| relative(&p, target_dir))
            .collect::<Result<_, _>>()?;
        Ok(Contents { files, support })
    }

    fn manifest(
        self,
        args: &RunArgs,
        workspace: &Workspace,
        binaries: &[TestBinary],
        target_dir: &Path,
    ) -> Result<Manifest, Error> {
        let mut packages: Vec<Package> = Vec::new();
        let mut entries = Vec::new();
        for binary in binaries {
            let dir = binary
                .package
                .dir
                .strip_prefix(&workspace.root)
                .unwrap_or(Path::new(""))
                .to_path_buf();
            if !packages.iter().any(|p| p.name == binary.package.name) {
                packages.push(Package {
                    name: binary.package.name.clone(),
                    dir,
                });
            }
            entries.push(entry(binary, target_dir)?);
        }
        Ok(Manifest {
            kind: manifest::KIND.into(),
            format: manifest::FORMAT,
            made_by: env!("CLEANTEST_LONG_VERSION").into(),
            target: target_triple(args),
            workspace_root: workspace.root.clone(),
            target_dir: target_dir.to_path_buf(),
            packages,
            binaries: entries,
            files: self.files,
            support: self.support,
            doctests_left_out: binaries.iter().any(|b| b.doctests),
        })
    }
}

/// One binary's manifest entry: its environment as text, without what is set anew where it runs.
fn entry(binary: &TestBinary, target_dir: &Path) -> Result<Binary, Error> {
    let env = binary
        .env
        .iter()
        .filter(|(k, _)| k != "CARGO" && k != "LD_LIBRARY_PATH")
        .map(|(k, v)| match v.to_str() {
            Some(v) => Ok((k.clone(), v.to_string())),
            None => Err(Error::Usage(format!(
                "archive {}: its environment variable {k} is not UTF-8, which an archive cannot carry",
                binary.id
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Binary {
        id: binary.id.clone(),
        package: binary.package.name.clone(),
        executable: relative(&binary.executable, target_dir)?,
        sort_key: binary.sort_key.clone(),
        is_lib: binary.is_lib,
        custom_harness: binary.harness != Harness::Libtest,
        env,
    })
}

fn relative(path: &Path, target_dir: &Path) -> Result<PathBuf, Error> {
    path.strip_prefix(target_dir)
        .map(Path::to_path_buf)
        .map_err(|_| {
            ArchiveError::Member {
                what: path.to_path_buf(),
                source: std::io::Error::other(format!(
                    "it is not under the target directory {}",
                    target_dir.display()
                )),
            }
            .into()
        })
}

/// The shared libraries `exe` needs that the build made (found beside it, in `deps/`, or in the
/// profile's directory), and theirs, added to `out`. System libraries are the machine's own.
fn shared_libraries(exe: &Path, out: &mut BTreeSet<PathBuf>) -> Result<(), Error> {
    let dirs: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(Path::to_path_buf)
        .collect();
    let mut pending = vec![exe.to_path_buf()];
    while let Some(file) = pending.pop() {
        let bytes = std::fs::read(&file).map_err(|source| ArchiveError::Member {
            what: file.clone(),
            source,
        })?;
        for name in needed(&bytes) {
            let found = dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file());
            if let Some(lib) = found.filter(|lib| out.insert(lib.clone())) {
                pending.push(lib);
            }
        }
    }
    Ok(())
}

/// The names of the shared libraries an executable or library links (ELF `DT_NEEDED`, Mach-O's
/// load commands by file name); none for what cannot be parsed.
fn needed(bytes: &[u8]) -> Vec<String> {
    if let Ok(elf) = goblin::elf::Elf::parse(bytes) {
        return elf.libraries.iter().map(|s| s.to_string()).collect();
    }
    match goblin::mach::Mach::parse(bytes) {
        Ok(goblin::mach::Mach::Binary(mach)) => mach
            .libs
            .iter()
            .filter_map(|l| Path::new(l).file_name()?.to_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The regular files directly in `dir`.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect()
}

/// The triple the tests were built for: `--target`'s, else the host's as rustc names it, else (no
/// rustc on the PATH cargo used) the triple this runner was built for.
fn target_triple(args: &RunArgs) -> String {
    if let Some(target) = args.compilation.target.first() {
        return target.clone();
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let host = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        });
    host.unwrap_or_else(|| env!("CLEANTEST_TARGET").to_string())
}

/// Writes the archive beside its final name, then renames it: a shard never sees half of one.
fn write(path: &Path, manifest: &Manifest, root: &Path, target_dir: &Path) -> Result<(), Error> {
    let write_error = |source| ArchiveError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temp = path.with_file_name(format!(
        ".{}.{}.partial",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let result = File::create(&temp)
        .map_err(|e| Error::from(write_error(e)))
        .and_then(|file| {
            super::zstd::compressed(file, |pipe| {
                let mut tar = tar::Builder::new(pipe);
                // A link is kept as a link: never a way to pack what lies outside the workspace.
                tar.follow_symlinks(false);
                members(&mut tar, manifest, root, target_dir)?;
                tar.finish().map_err(|e| write_error(e).into())
            })
        })
        .and_then(|file| file.map_err(|e| write_error(e).into()))
        .and_then(|_| std::fs::rename(&temp, path).map_err(|e| write_error(e).into()));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The manifest, then the workspace's files, then the binaries and their support files.
fn members<W: Write>(
    tar: &mut tar::Builder<W>,
    manifest: &Manifest,
    root: &Path,
    target_dir: &Path,
) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| ArchiveError::Member {
        what: manifest::MANIFEST.into(),
        source: e.into(),
    })?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, manifest::MANIFEST, json.as_slice())
        .map_err(|source| ArchiveError::Member {
            what: manifest::MANIFEST.into(),
            source,
        })?;
    let workspace = manifest.files.iter().map(|f| (root, WORKSPACE_PREFIX, f));
    let binaries = manifest
        .binaries
        .iter()
        .map(|b| (target_dir, TARGET_PREFIX, &b.executable));
    let support = manifest
        .support
        .iter()
        .map(|f| (target_dir, TARGET_PREFIX, f));
    for (base, prefix, member) in workspace.chain(binaries).chain(support) {
        append(tar, &base.join(member), &Path::new(prefix).join(member))?;
    }
    Ok(())
}

fn append<W: Write>(tar: &mut tar::Builder<W>, source: &Path, name: &Path) -> Result<(), Error> {
    let member_error = |source| ArchiveError::Member {
        what: name.to_path_buf(),
        source,
    };
    if source.is_dir() && !source.is_symlink() {
        tar.append_dir_all(name, source).map_err(member_error)?;
    } else {
        tar.append_path_with_name(source, name)
            .map_err(member_error)?;
    }
    Ok(())
}

fn report(args: &ArchiveArgs, manifest: &Manifest, started: Instant) {
    let size = std::fs::metadata(&args.archive_file).map_or(0, |m| m.len());
    crate::output::err(format!(
        "     Archived {} test binar{} ({} support file{}, {} workspace file{}) into {} ({:.1} MB) in {:.1}s",
        manifest.binaries.len(),
        if manifest.binaries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        manifest.support.len(),
        plural(manifest.support.len()),
        manifest.files.len(),
        plural(manifest.files.len()),
        args.archive_file.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64(),
    ));
    if manifest.doctests_left_out {
        crate::output::err(
            "note: the doctests are not in the archive (rustdoc builds them as it runs them); run them \
             with `cargo cleantest --doc` where cargo is",
        );
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
