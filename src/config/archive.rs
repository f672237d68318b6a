//! What an archive (`cargo cleantest archive`) carries of the workspace's own files: the config, every
//! file it names in any profile (compose files, their `.env` and `env_file`s, bind-mounted sources,
//! migration directories), and what `[archive] include` lists.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::services::Mount;
use super::{ConfigFile, compose, compose_profiles, read_config};
use crate::contract::CONFIG_PATH;
use crate::errors::{ArchiveError, Error};

/// `[archive]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ArchiveConfig {
    /// Files and directories, relative to the workspace root, that the tests read at run time.
    #[serde(default)]
    include: Vec<String>,
}

/// The workspace's files an archive carries, relative to `root`, sorted and each once: files that
/// exist, and directories (taken whole). Without a config, none.
pub(crate) fn archived_files(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let path = root.join(CONFIG_PATH);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let file = read_config(&path)?;
    let mut named = BTreeSet::from([PathBuf::from(CONFIG_PATH)]);
    for include in &file.archive.include {
        named.insert(included(root, include)?);
    }
    named.extend(service_files(root, &file));
    Ok(named.into_iter().collect())
}

/// An `[archive] include` entry, checked: relative, inside the workspace, and there.
fn included(root: &Path, entry: &str) -> Result<PathBuf, Error> {
    let fail = |reason: &str| ArchiveError::Include {
        path: entry.to_string(),
        reason: reason.to_string(),
    };
    let relative = Path::new(entry);
    if relative.is_absolute() {
        return Err(fail("it is absolute").into());
    }
    if relative.components().any(|c| c == Component::ParentDir) {
        return Err(fail("it leaves the workspace (`..`)").into());
    }
    let normal: PathBuf = relative
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if normal.as_os_str().is_empty() {
        return Err(fail("it names the whole workspace").into());
    }
    if !root.join(&normal).exists() {
        return Err(fail("there is no such file or directory").into());
    }
    Ok(normal)
}

/// The files the services of every profile read: migration directories, compose files with their
/// `.env`, `env_file`s and bind-mounted sources, each where it is inside the workspace.
fn service_files(root: &Path, file: &ConfigFile) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let inside = |path: &Path| -> Option<PathBuf> {
        let relative = lexical(path.strip_prefix(root).ok()?)?;
        root.join(&relative).exists().then_some(relative)
    };
    let migrations = file
        .services
        .values()
        .filter_map(|s| s.migrate.as_ref()?.sql_dir());
    out.extend(migrations.filter_map(|dir| inside(&root.join(dir))));
    let default = file.profile.get("default");
    for profile in file.profile.values() {
        let Some(compose_file) = profile
            .compose_file
            .as_ref()
            .or(default.and_then(|d| d.compose_file.as_ref()))
        else {
            continue;
        };
        let compose_path = root.join(compose_file);
        out.extend(inside(&compose_path));
        if let Some(dir) = compose_path.parent() {
            out.extend(inside(&dir.join(".env")));
        }
        // A compose file the run could not read is the run's to report, with its reason.
        let Ok(read) = compose::read(&compose_path, &compose_profiles(profile)) else {
            continue;
        };
        for service in read.services.values() {
            out.extend(service.env_files.iter().filter_map(|f| inside(f)));
            out.extend(service.mounts.iter().filter_map(|m| match m {
                Mount::Bind { source, .. } => inside(source),
                _ => None,
            }));
        }
    }
    out
}

/// `path` with `.` dropped and `..` applied; None when it climbs above its start (out of the
/// workspace) or is empty.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cleantest-archived-{}-{}",
            std::process::id(),
            files.len()
        ));
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn the_config_and_every_file_it_names_are_carried() {
        let root = workspace(&[
            (
                ".config/cleantest.toml",
                "[archive]\ninclude = [\"data\", \"./tests/fixtures/a.txt\"]\n\
                 [profile.default]\ncompose-file = \"ci/compose.yml\"\n\
                 [services.db]\nimage = \"postgres\"\nisolate = \"database\"\nmigrate = { sql = \"migrations\" }\n",
            ),
            ("data/x.bin", "x"),
            ("tests/fixtures/a.txt", "a"),
            ("migrations/001.sql", "create table t ();"),
            (
                "ci/compose.yml",
                "services:\n  cache:\n    image: redis\n    env_file: [cache.env]\n    volumes: [\"./conf:/etc/conf:ro\"]\n",
            ),
            ("ci/cache.env", "A=1\n"),
            ("ci/.env", "B=2\n"),
            ("ci/conf/redis.conf", ""),
        ]);
        let files = archived_files(&root);
        std::fs::remove_dir_all(&root).unwrap();
        let names: Vec<String> = files
            .unwrap()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                ".config/cleantest.toml",
                "ci/.env",
                "ci/cache.env",
                "ci/compose.yml",
                "ci/conf",
                "data",
                "migrations",
                "tests/fixtures/a.txt"
            ]
        );
    }

    #[test]
    fn an_include_outside_the_workspace_or_missing_is_refused() {
        for (include, says) in [
            ("/etc", "absolute"),
            ("../x", "leaves the workspace"),
            (".", "whole workspace"),
            ("nothing-here", "no such file"),
        ] {
            let root = workspace(&[(
                ".config/cleantest.toml",
                &format!("[archive]\ninclude = [{include:?}]\n"),
            )]);
            let error = archived_files(&root).unwrap_err().to_string();
            std::fs::remove_dir_all(&root).unwrap();
            assert!(error.contains(says), "{include}: {error}");
        }
    }
}
