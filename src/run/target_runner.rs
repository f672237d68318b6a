//! The target runner: the program cargo puts in front of every test binary it runs
//! (`CARGO_TARGET_<TRIPLE>_RUNNER`, `target.<triple>.runner` or `target.'cfg(..)'.runner` in
//! `.cargo/config.toml`, or `--config`). cargo test and nextest run every binary through it, for
//! listing and for running, so we do too: valgrind, qemu and cross setups depend on it.
//!
//! Config files and environment are resolved by `cargo-config2`, from the current directory as cargo
//! does (not the manifest's). It does not read `--config`, so a `--config` runner keyed by a triple is
//! handed to it as the environment variable of the same meaning; one keyed by `cfg(..)` cannot be, and
//! is reported in one line instead of being silently ignored.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A runner program and its arguments; the test binary and its arguments follow them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetRunner {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl TargetRunner {
    /// `program args.. executable`: the caller adds the binary's own arguments.
    pub(crate) fn command(&self, executable: &Path) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).arg(executable);
        command
    }
}

/// The runner of each target triple the build was for.
#[derive(Debug, Default)]
pub(crate) struct Runners {
    /// `(triple, runner)` for each `--target` (or the host when none was given).
    by_target: Vec<(String, Option<TargetRunner>)>,
}

impl Runners {
    /// Resolves the runners of `targets` (cargo's `--target` values; the host if empty). Problems are
    /// warnings: cargo, which builds first, has already refused a config it cannot read.
    pub(crate) fn load(targets: &[String], cli_config: &[String]) -> Runners {
        match resolve(targets, cli_config) {
            Ok(by_target) => Runners { by_target },
            Err(e) => {
                crate::output::err(format!(
                    "warning: failed to read the target runner from cargo's config: {e}"
                ));
                Runners::default()
            }
        }
    }

    /// The runner for an executable: the one of the `--target` whose directory holds it, else the first.
    pub(crate) fn for_executable(&self, executable: &Path) -> Option<TargetRunner> {
        let in_dir = |triple: &str| executable.components().any(|c| c.as_os_str() == triple);
        self.by_target
            .iter()
            .find(|(triple, _)| in_dir(triple))
            .or(self.by_target.first())
            .and_then(|(_, runner)| runner.clone())
    }
}

fn resolve(
    targets: &[String],
    cli_config: &[String],
) -> Result<Vec<(String, Option<TargetRunner>)>, String> {
    let mut env: HashMap<String, OsString> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .collect();
    for (triple, value) in cli_runners(cli_config) {
        env.insert(runner_env_name(&triple), value.into());
    }
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    if !any_runner(&cwd, &env)? {
        return Ok(Vec::new());
    }
    let options = cargo_config2::ResolveOptions::default().env(env);
    let config =
        cargo_config2::Config::load_with_options(&cwd, options).map_err(|e| e.to_string())?;
    let triples: Vec<String> = if targets.is_empty() {
        vec![config.host_triple().map_err(|e| e.to_string())?.to_string()]
    } else {
        targets.to_vec()
    };
    triples
        .into_iter()
        .map(|triple| {
            let runner = config
                .runner(triple.as_str())
                .map_err(|e| e.to_string())?
                .map(|r| TargetRunner {
                    program: r.path,
                    args: r.args,
                });
            Ok((triple, runner))
        })
        .collect()
}

/// Whether a runner is set anywhere: an environment variable (a `--config` one is handed over as
/// one) or a `target.*.runner` in a config file. Most workspaces set none, and then the host triple
/// is not looked up: cargo-config2 asks `cargo -vV` for it, which runs `lsb_release` and costs about
/// 30 ms of every run's start.
fn any_runner(cwd: &Path, env: &HashMap<String, OsString>) -> Result<bool, String> {
    if env
        .keys()
        .any(|k| k.starts_with("CARGO_TARGET_") && k.ends_with("_RUNNER"))
    {
        return Ok(true);
    }
    let files = cargo_config2::de::Config::load_with_cwd(cwd).map_err(|e| e.to_string())?;
    Ok(files.target.values().any(|t| t.runner.is_some()))
}

/// `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER` for `x86_64-unknown-linux-gnu`.
fn runner_env_name(triple: &str) -> String {
    let key: String = triple
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("CARGO_TARGET_{key}_RUNNER")
}

/// `target.<triple>.runner` values given on the command line, as `KEY=VALUE` or in a `--config` file,
/// rendered as the environment variable's value (space-separated).
fn cli_runners(cli_config: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for item in cli_config {
        let text = if Path::new(item).is_file() {
            std::fs::read_to_string(item).unwrap_or_default()
        } else {
            item.clone()
        };
        let Ok(table) = text.parse::<toml::Table>() else {
            continue;
        };
        let Some(targets) = table.get("target").and_then(|t| t.as_table()) else {
            continue;
        };
        for (key, value) in targets {
            let Some(runner) = value.as_table().and_then(|t| t.get("runner")) else {
                continue;
            };
            if key.starts_with("cfg(") {
                crate::output::err(format!(
                    "warning: the runner for `{key}` given with --config is not applied to test \
                     binaries; set it in .cargo/config.toml or CARGO_TARGET_<TRIPLE>_RUNNER"
                ));
                continue;
            }
            let words: Vec<String> = match runner {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => continue,
            };
            out.push((key.clone(), words.join(" ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_name_follows_cargo() {
        assert_eq!(
            runner_env_name("x86_64-unknown-linux-gnu"),
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER"
        );
    }

    #[test]
    fn cli_runner_key_value() {
        let got = cli_runners(&[
            "target.x86_64-unknown-linux-gnu.runner = [\"valgrind\", \"-q\"]".into(),
            "build.jobs = 2".into(),
        ]);
        assert_eq!(
            got,
            vec![("x86_64-unknown-linux-gnu".into(), "valgrind -q".into())]
        );
    }

    #[test]
    fn runner_follows_the_target_directory() {
        let runner = |p: &str| {
            Some(TargetRunner {
                program: p.into(),
                args: Vec::new(),
            })
        };
        let runners = Runners {
            by_target: vec![
                ("a-b-c".into(), runner("one")),
                ("x-y-z".into(), runner("two")),
            ],
        };
        let exe = Path::new("/t/x-y-z/debug/deps/it-123");
        assert_eq!(runners.for_executable(exe), runner("two"));
        assert_eq!(
            runners.for_executable(Path::new("/t/debug/it")),
            runner("one")
        );
    }
}
