//! `.config/cleantest.toml`: loading, profile selection and the settings a run uses.
//!
//! Precedence, highest first: command line, environment (`CLEANTEST_*`), the selected profile, the
//! `default` profile, built-in defaults. Named profiles inherit from `[profile.default]`.

mod archive;
mod compose;
mod duration;
pub(crate) mod guard;
mod isolate;
mod memory;
mod overlay;
mod overrides;
mod profile;
pub(crate) mod proxy;
mod ready;
#[cfg(test)]
mod reference;
pub(crate) mod services;
pub(crate) mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{EngineReaperMode, FlakyResult, GuardOpts, RunnerOpts};
use crate::contract::CONFIG_PATH;
use crate::errors::Error;
pub(crate) use archive::archived_files;
use overrides::Override;
use profile::{LeakPolicy, ProfileConfig};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Listing runs no test: a minute is generous even on a loaded machine, and it is not the per-test
/// timeout, which users set short.
const DEFAULT_LIST_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// libtest's own "has been running for over 60 seconds" period.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profile: BTreeMap<String, ProfileConfig>,
    #[serde(default)]
    services: BTreeMap<String, services::ServiceConfig>,
    #[serde(default)]
    archive: archive::ArchiveConfig,
}

/// The settings of one run, after every source has been applied.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub timeout: Duration,
    /// How long one binary may take to list its tests.
    pub list_timeout: Duration,
    pub grace_period: Duration,
    /// How often a long-running test is reported without a terminal.
    pub heartbeat: Duration,
    pub isolate: bool,
    /// Tests run at once inside one binary (shared) or tests run at once (isolated), when configured.
    pub test_threads: Option<usize>,
    /// Environment lock name from the profile (`--lock` wins).
    pub lock: Option<String>,
    /// Whether leaving processes behind fails the test (isolated) or the binary (shared).
    pub leak_fails: bool,
    /// Whether the profile leaves the labelling proxy on (`proxy = false` turns it off).
    pub proxy: bool,
    /// What the proxy forwards beyond its table (`proxy.allow-foreign`, `proxy.allow`).
    pub proxy_policy: proxy::ProxyPolicy,
    /// The profile's `engine-reaper` (`--engine-reaper` wins).
    pub engine_reaper: Option<EngineReaperMode>,
    /// Whether the run's processes get a `TMPDIR` of the session's (`tmpdir`, `--no-tmpdir`).
    pub tmpdir: bool,
    /// The session services of the profile, each after its dependencies.
    pub services: Vec<services::ServiceSpec>,
    /// How many times a failed test runs again (overrides may say otherwise: `retries_for`).
    pub retries: u32,
    /// A flaky test counts as failed (`flaky-result = "fail"`).
    pub flaky_fails: bool,
    /// The resource guard's limits.
    pub guard: guard::Guard,
    overrides: Vec<Override>,
}

impl Settings {
    /// Resolves the settings for a workspace whose root is `root`, from its layers merged once
    /// (`ProfileConfig::over`): the command line (with the `CLEANTEST_*` environment, which clap reads
    /// into the same flags), the selected profile, `[profile.default]`; what none sets takes its
    /// built-in default here.
    pub(crate) fn load(
        root: &Path,
        args: &RunnerOpts,
        guard: &GuardOpts,
    ) -> Result<Settings, Error> {
        let path = root.join(CONFIG_PATH);
        let file = read_config(&path)?;
        let name = args.profile.config_profile.as_deref().unwrap_or("default");
        let profile = select_profile(&file, name, &path)?;
        let config_error = |message: String| Error::Config {
            path: path.clone(),
            message,
        };
        let overrides = profile
            .overrides
            .iter()
            .map(Override::compile)
            .collect::<Result<Vec<_>, _>>()
            .map_err(config_error)?;
        if profile.test_threads == Some(0) {
            return Err(config_error("`test-threads` must be at least 1".into()));
        }
        let services = resolve_services(root, &path, &file, &profile)?;
        let merged = ProfileConfig::command_line(args).over(&profile);
        let proxy_policy = match &merged.proxy {
            Some(p) => p.policy().map_err(config_error)?,
            None => proxy::ProxyPolicy::default(),
        };
        let settings = Settings {
            timeout: merged.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
            list_timeout: merged.list_timeout.map_or(DEFAULT_LIST_TIMEOUT, |d| d.0),
            grace_period: merged.grace_period.map_or(DEFAULT_GRACE, |d| d.0),
            heartbeat: merged.heartbeat.map_or(DEFAULT_HEARTBEAT, |d| d.0),
            isolate: merged.isolate.unwrap_or(false),
            test_threads: merged.test_threads,
            lock: merged.lock.clone(),
            proxy: merged.proxy.as_ref().is_none_or(|p| p.enabled()),
            proxy_policy,
            engine_reaper: merged.engine_reaper,
            tmpdir: merged.tmpdir.unwrap_or(true),
            services,
            retries: merged.retries.unwrap_or(0),
            flaky_fails: merged.flaky_result == Some(FlakyResult::Fail),
            // The guard's limits name where each was set, so the flags are kept apart from the keys.
            guard: guard::resolve(
                guard,
                guard::GuardConfig {
                    max_containers: profile.max_containers,
                    max_memory: profile.max_memory,
                    default_memory: profile.default_memory,
                    min_free_memory: profile.min_free_memory,
                },
            ),
            leak_fails: merged.leak == Some(LeakPolicy::Fail),
            overrides,
        };
        for (key, limit) in [
            ("timeout", settings.timeout),
            ("list-timeout", settings.list_timeout),
            ("heartbeat", settings.heartbeat),
        ] {
            if limit.is_zero() {
                return Err(config_error(format!("`{key}` must be longer than zero")));
            }
        }
        Ok(settings)
    }

    /// The timeout of one test: the first matching override, else the run's timeout.
    pub(crate) fn timeout_for(&self, binary_id: &str, test: &str) -> Duration {
        self.first_override(binary_id, test, |o| o.timeout)
            .unwrap_or(self.timeout)
    }

    /// The grace period of one test: the first matching override, else the run's grace period.
    pub(crate) fn grace_for(&self, binary_id: &str, test: &str) -> Duration {
        self.first_override(binary_id, test, |o| o.grace_period)
            .unwrap_or(self.grace_period)
    }

    /// How many times one failed test runs again: the first matching override, else the run's.
    pub(crate) fn retries_for(&self, binary_id: &str, test: &str) -> u32 {
        self.first_override(binary_id, test, |o| o.retries)
            .unwrap_or(self.retries)
    }

    /// What the first override that matches the test and sets `key` says.
    fn first_override<T>(
        &self,
        binary_id: &str,
        test: &str,
        key: impl Fn(&Override) -> Option<T>,
    ) -> Option<T> {
        self.overrides
            .iter()
            .filter(|o| o.matches(binary_id, test))
            .find_map(key)
    }
}

fn read_config(path: &Path) -> Result<ConfigFile, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => {
            return Err(Error::Config {
                path: path.into(),
                message: format!("cannot read it: {e}"),
            });
        }
    };
    let file: ConfigFile = toml::from_str(&text).map_err(|e| Error::Config {
        path: PathBuf::from(path),
        message: describe_toml_error(&text, &e),
    })?;
    Ok(file)
}

/// The compose profiles that are active: the profile's `compose-profiles`, else `COMPOSE_PROFILES`
/// (comma-separated), as docker-compose reads it.
fn compose_profiles(profile: &ProfileConfig) -> Vec<String> {
    profile.compose_profiles.clone().unwrap_or_else(|| {
        std::env::var("COMPOSE_PROFILES")
            .unwrap_or_default()
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

/// A `[services.NAME]` without an `image`, that adds to no compose service.
fn no_image(path: &Path, name: &str, compose: Option<&str>) -> Error {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = table_line(&text, &format!("services.{name}"))
        .map_or(String::new(), |n| format!("line {n}: "));
    Error::Config {
        path: path.to_path_buf(),
        message: match compose {
            Some(compose) => format!(
                "{line}[services.{name}] has no `image`, and {compose} has no service `{name}` for \
                 it to add to: give it an `image`, or name a service of the compose file"
            ),
            None => format!(
                "{line}[services.{name}] has no `image`: add e.g. `image = \"postgres:15\"`, \
                 naming an image the engine has or can pull"
            ),
        },
    }
}

/// A service check's error, on the file the service comes from: a compose service's is the compose
/// file's, named as compose names it.
fn resolve_error(
    path: &Path,
    defined: &BTreeMap<String, services::ServiceConfig>,
    message: String,
) -> Error {
    let origin = defined.iter().find_map(|(name, s)| {
        let prefix = format!("[services.{name}]");
        let origin = s.origin.clone()?;
        message
            .starts_with(&prefix)
            .then_some((origin, prefix, name))
    });
    match origin {
        Some((origin, prefix, name)) => Error::Config {
            path: origin,
            message: message
                .replacen(&prefix, &format!("service `{name}`"), 1)
                .replace("`depends-on`", "`depends_on`"),
        },
        None => Error::Config {
            path: path.to_path_buf(),
            message,
        },
    }
}

/// The line of the header `[NAME]` (or `[a."b"]` quoted alike) in `text`, counted from 1.
fn table_line(text: &str, name: &str) -> Option<usize> {
    let bare = |s: &str| s.replace(['"', '\'', ' '], "");
    text.lines()
        .position(|line| {
            let line = line.trim();
            line.starts_with('[')
                && !line.starts_with("[[")
                && bare(line.trim_start_matches('[').split(']').next().unwrap_or("")) == bare(name)
        })
        .map(|i| i + 1)
}

/// One line: `line 3, column 1: unknown field `foo`, expected ...`.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// The profile `name` over `[profile.default]`; an unknown name says which profiles there are.
fn select_profile(file: &ConfigFile, name: &str, path: &Path) -> Result<ProfileConfig, Error> {
    let default = file.profile.get("default").cloned().unwrap_or_default();
    match (name, file.profile.get(name)) {
        ("default", _) => Ok(default),
        (_, Some(p)) => Ok(p.over(&default)),
        (_, None) if !path.exists() => Err(Error::NoConfigFile {
            name: name.to_string(),
            path: path.to_path_buf(),
        }),
        (_, None) => {
            let mut defined: Vec<String> = file.profile.keys().cloned().collect();
            if !defined.iter().any(|p| p == "default") {
                defined.insert(0, "default".into());
            }
            Err(Error::NoProfile {
                name: name.to_string(),
                path: path.to_path_buf(),
                defined,
            })
        }
    }
}

/// The profile's services, each after its dependencies: the config's `[services.NAME]` tables and
/// its compose file's services, with the tables that have no `image` laid over compose services of
/// their name, and `migrate` directories resolved.
fn resolve_services(
    root: &Path,
    path: &Path,
    file: &ConfigFile,
    profile: &ProfileConfig,
) -> Result<Vec<services::ServiceSpec>, Error> {
    let mut defined = file.services.clone();
    // `[services.NAME]` tables without an `image` add to a compose service of that name.
    let mut overlays: BTreeMap<String, services::ServiceConfig> = BTreeMap::new();
    defined.retain(|name, service| {
        let overlay = service.image.trim().is_empty();
        if overlay {
            overlays.insert(name.clone(), service.clone());
        }
        !overlay
    });
    if let Some(compose) = &profile.compose_file {
        add_compose_services(root, path, compose, profile, &mut defined, &mut overlays)?;
    }
    // One left over adds to no service here: fine if another profile's compose file has it (the
    // tables are shared by every profile), else a mistake. Those files are read only then.
    if !overlays.is_empty() {
        let elsewhere: Vec<String> = file
            .profile
            .values()
            .filter_map(|p| p.compose_file.as_ref())
            .filter_map(|f| compose::service_names(&root.join(f)))
            .flatten()
            .collect();
        if let Some(name) = overlays.keys().find(|n| !elsewhere.contains(n)) {
            return Err(no_image(path, name, profile.compose_file.as_deref()));
        }
    }
    let mut services = services::resolve(&defined, profile.services.as_deref())
        .map_err(|message| resolve_error(path, &defined, message))?;
    for spec in &mut services {
        if let Some(migrate) = &spec.migrate {
            let resolved = migrate.resolved(root).map_err(|why| Error::Config {
                path: path.to_path_buf(),
                message: format!("[services.{}]: {why}", spec.name),
            })?;
            spec.migrate = Some(resolved);
        }
    }
    Ok(services)
}

/// The services of the profile's compose file, added to `defined`, with the overlays of their names
/// applied (and taken from `overlays`).
fn add_compose_services(
    root: &Path,
    path: &Path,
    compose: &str,
    profile: &ProfileConfig,
    defined: &mut BTreeMap<String, services::ServiceConfig>,
    overlays: &mut BTreeMap<String, services::ServiceConfig>,
) -> Result<(), Error> {
    let compose_path = root.join(compose);
    let fail = |message: String| Error::Config {
        path: compose_path.clone(),
        message,
    };
    let read = compose::read(&compose_path, &compose_profiles(profile)).map_err(fail)?;
    for warning in read.warnings {
        crate::output::err(format!("warning: {}: {warning}", compose_path.display()));
    }
    for note in read.notes {
        crate::output::err(format!("note: {}: {note}", compose_path.display()));
    }
    for (name, mut service) in read.services {
        if defined.contains_key(&name) {
            return Err(fail(format!(
                "service `{name}` is also defined in {}; rename one of them, or leave `image` \
                 out of its [services.{name}] table to add `export`, `ready` or \
                 `ready-timeout` to the compose service",
                path.display()
            )));
        }
        if let Some(overlay) = overlays.remove(&name) {
            overlay::apply(&name, &overlay, &mut service).map_err(|message| Error::Config {
                path: path.to_path_buf(),
                message,
            })?;
        }
        defined.insert(name, service);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, args: &RunnerOpts) -> Result<Settings, Error> {
        let dir = std::env::temp_dir().join(format!(
            "cleantest-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(dir.join(".config")).unwrap();
        std::fs::write(dir.join(CONFIG_PATH), text).unwrap();
        let out = Settings::load(&dir, args, &GuardOpts::default());
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn tmpdir_is_on_unless_a_profile_turns_it_off() {
        let text = "[profile.default]\n[profile.raw]\ntmpdir = false\n";
        assert!(load(text, &RunnerOpts::default()).unwrap().tmpdir);
        let raw = RunnerOpts {
            profile: crate::cli::ProfileArg {
                config_profile: Some("raw".into()),
            },
            ..RunnerOpts::default()
        };
        assert!(!load(text, &raw).unwrap().tmpdir);
    }

    #[test]
    fn cli_beats_profile_beats_default_profile_beats_builtin() {
        let text = r#"
[profile.default]
timeout = "10s"
grace-period = "2s"
[profile.ci]
timeout = "20s"
isolate = true
[[profile.ci.overrides]]
filter = "db::*"
timeout = "1m"
"#;
        let args = RunnerOpts {
            profile: crate::cli::ProfileArg {
                config_profile: Some("ci".into()),
            },
            ..Default::default()
        };
        let s = load(text, &args).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(20));
        assert_eq!(s.grace_period, Duration::from_secs(2));
        assert!(s.isolate);
        assert_eq!(s.timeout_for("pkg", "db::query"), Duration::from_secs(60));
        assert_eq!(s.timeout_for("pkg", "api::get"), Duration::from_secs(20));

        let args = RunnerOpts {
            profile: crate::cli::ProfileArg {
                config_profile: Some("ci".into()),
            },
            timeout: Some(Duration::from_secs(3)),
            isolate_given: true,
            ..Default::default()
        };
        let s = load(text, &args).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert!(!s.isolate);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "[profile.default]\ntimeout = \"1s\"\ntimeuot = \"2s\"\n";
        let err = load(text, &RunnerOpts::default()).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("timeuot"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_duration_and_unknown_profile_are_errors() {
        let err = load(
            "[profile.default]\ntimeout = \"soon\"\n",
            &RunnerOpts::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let args = RunnerOpts {
            profile: crate::cli::ProfileArg {
                config_profile: Some("nightly".into()),
            },
            ..Default::default()
        };
        let err = load("[profile.default]\n", &args).unwrap_err();
        assert!(err.to_string().contains("nightly"), "{err}");
    }

    #[test]
    fn no_file_means_builtin_defaults() {
        let dir = std::env::temp_dir().join("cleantest-config-none-here");
        let s = Settings::load(&dir, &RunnerOpts::default(), &GuardOpts::default()).unwrap();
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.grace_period, DEFAULT_GRACE);
        assert!(!s.isolate);
    }
}
