//! The environment `cargo test` gives a test binary, rebuilt for running binaries directly:
//! `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, `CARGO_BIN_EXE_*`, `LD_LIBRARY_PATH`, and `[env]` from
//! `.cargo/config.toml` files (looked up from the current directory, as cargo does).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cargo_metadata::Package;

/// The `cargo` to run: the one that started us (cargo sets `CARGO` for subcommands), else from PATH.
pub(crate) fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `CARGO_MANIFEST_*` and `CARGO_PKG_*`, with the empty strings cargo uses for unset fields.
pub(crate) fn package_env(package: &Package) -> Vec<(String, String)> {
    let dir = package
        .manifest_path
        .parent()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let version = &package.version;
    vec![
        ("CARGO_MANIFEST_DIR".into(), dir),
        (
            "CARGO_MANIFEST_PATH".into(),
            package.manifest_path.to_string(),
        ),
        ("CARGO_PKG_NAME".into(), package.name.to_string()),
        ("CARGO_PKG_VERSION".into(), version.to_string()),
        ("CARGO_PKG_VERSION_MAJOR".into(), version.major.to_string()),
        ("CARGO_PKG_VERSION_MINOR".into(), version.minor.to_string()),
        ("CARGO_PKG_VERSION_PATCH".into(), version.patch.to_string()),
        ("CARGO_PKG_VERSION_PRE".into(), version.pre.to_string()),
        ("CARGO_PKG_AUTHORS".into(), package.authors.join(":")),
        ("CARGO_PKG_DESCRIPTION".into(), opt(&package.description)),
        ("CARGO_PKG_HOMEPAGE".into(), opt(&package.homepage)),
        ("CARGO_PKG_REPOSITORY".into(), opt(&package.repository)),
        ("CARGO_PKG_LICENSE".into(), opt(&package.license)),
        (
            "CARGO_PKG_LICENSE_FILE".into(),
            package
                .license_file
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
        ),
        (
            "CARGO_PKG_RUST_VERSION".into(),
            package
                .rust_version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
        ),
        (
            "CARGO_PKG_README".into(),
            package
                .readme
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
        ),
    ]
}

/// Everything a test binary gets on top of the runner's own environment.
pub(crate) fn binary_env(
    package_env: &[(String, String)],
    executable: &Path,
    bins: &[(String, PathBuf)],
    out_dir: Option<&PathBuf>,
) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = package_env
        .iter()
        .map(|(k, v)| (k.clone(), OsString::from(v)))
        .collect();
    env.push(("CARGO".into(), cargo_program()));
    for (name, path) in bins {
        env.push((format!("CARGO_BIN_EXE_{name}"), path.into()));
    }
    // cargo test sets the build script's output directory for the package's tests, as at compile time.
    if let Some(dir) = out_dir {
        env.push(("OUT_DIR".into(), dir.into()));
    }
    if let Some(paths) = library_path(executable) {
        env.push(("LD_LIBRARY_PATH".into(), paths));
    }
    for (key, value) in config_env() {
        // `[env]` does not override the caller's environment unless `force = true`.
        if value.force || std::env::var_os(key).is_none() {
            env.push((key.clone(), value.value.clone()));
        }
    }
    env
}

/// `target/<profile>` and `target/<profile>/deps` before the inherited `LD_LIBRARY_PATH`, as cargo does,
/// so tests linking dylibs built by the workspace find them.
pub(crate) fn library_path(executable: &Path) -> Option<OsString> {
    let deps = executable.parent()?;
    let profile = deps.parent()?;
    let mut paths = vec![profile.to_path_buf(), deps.to_path_buf()];
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).ok()
}

/// One `[env]` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConfigEnvValue {
    pub value: OsString,
    pub force: bool,
}

/// `[env]` from every `.cargo/config.toml` (and legacy `.cargo/config`) from the current directory up,
/// then `$CARGO_HOME/config.toml`; the deepest file wins, as in cargo. Read once per run.
fn config_env() -> &'static [(String, ConfigEnvValue)] {
    static ENV: OnceLock<Vec<(String, ConfigEnvValue)>> = OnceLock::new();
    ENV.get_or_init(|| {
        let cwd = std::env::current_dir().unwrap_or_default();
        let mut files: Vec<PathBuf> = Vec::new();
        for dir in cwd.ancestors() {
            files.extend(config_file_in(&dir.join(".cargo")));
        }
        if let Some(home) = cargo_home() {
            files.extend(config_file_in(&home).filter(|f| !files.contains(f)));
        }
        let mut out: Vec<(String, ConfigEnvValue)> = Vec::new();
        // Walk from the least specific file to the most specific one so later entries replace earlier.
        for file in files.iter().rev() {
            for (key, value) in read_env_table(file) {
                out.retain(|(k, _)| *k != key);
                out.push((key, value));
            }
        }
        out
    })
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

fn config_file_in(dir: &Path) -> Option<PathBuf> {
    ["config.toml", "config"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// The `[env]` table of one config file. A file cargo could not read either is ignored here: the build
/// that ran before has already reported it.
pub(crate) fn read_env_table(file: &Path) -> Vec<(String, ConfigEnvValue)> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(env) = table.get("env").and_then(|v| v.as_table()) else {
        return Vec::new();
    };
    // Relative values are relative to the directory holding `.cargo/`.
    let base = file
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    env.iter()
        .filter_map(|(key, value)| {
            let entry = match value {
                toml::Value::String(s) => ConfigEnvValue {
                    value: s.into(),
                    force: false,
                },
                toml::Value::Table(t) => {
                    let text = t.get("value")?.as_str()?;
                    let relative = t.get("relative").and_then(|v| v.as_bool()).unwrap_or(false);
                    let value = if relative {
                        base.join(text).into_os_string()
                    } else {
                        text.into()
                    };
                    let force = t.get("force").and_then(|v| v.as_bool()).unwrap_or(false);
                    ConfigEnvValue { value, force }
                }
                _ => return None,
            };
            Some((key.clone(), entry))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_table_reads_plain_relative_and_forced_values() {
        let dir = std::env::temp_dir().join(format!("cleantest-envtable-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".cargo")).unwrap();
        let file = dir.join(".cargo/config.toml");
        std::fs::write(
            &file,
            "[env]\nA = \"1\"\nB = { value = \"data\", relative = true }\nC = { value = \"x\", force = true }\n",
        )
        .unwrap();
        let env = read_env_table(&file);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(env.len(), 3);
        assert_eq!(
            env[0],
            (
                "A".into(),
                ConfigEnvValue {
                    value: "1".into(),
                    force: false
                }
            )
        );
        assert_eq!(env[1].1.value, dir.join("data").into_os_string());
        assert!(env[2].1.force);
    }
}
