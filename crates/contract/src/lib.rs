//! The public contract in one place: what tests, scripts, CI and other tools may rely on. Environment
//! variable names, Docker label keys, exit codes and the layout of the state directory are named here
//! and nowhere else, so that every layer (the proxy, the reaper, the environment scan, the run) agrees on
//! them, and a change to the contract is a change to this file.
//!
//! This module imports nothing of the crate: it is the bottom of the dependency graph.

// ---- environment every process of a session gets ----

/// `CLEANTEST=1`: "running under cargo cleantest".
pub const ENV_MARKER: &str = "CLEANTEST";
/// The session id (24 characters of `[a-z0-9]`).
pub const ENV_SESSION: &str = "CLEANTEST_SESSION";

/// Whether `text` has the form of a session id: a short run of `[a-z0-9]` (a little looser than the
/// ids this version makes, so that ids from other versions and tests still count). Anything else is
/// never used as a label key or taken for a session directory.
pub fn is_session_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}
/// `CLEANTEST_SERVICE_<NAME>_HOST` and `CLEANTEST_SERVICE_<NAME>_PORT_<CONTAINER_PORT>` of each session
/// service, `<NAME>` the service's name upper-cased with every character outside `[A-Z0-9]` as `_`.
pub const ENV_SERVICE_PREFIX: &str = "CLEANTEST_SERVICE_";
/// `CLEANTEST_DATABASE_<NAME>`: the database a process was given on an isolating service (`isolate`),
/// `<NAME>` as for `CLEANTEST_SERVICE_`.
pub const ENV_DATABASE_PREFIX: &str = "CLEANTEST_DATABASE_";
/// The control socket's path: where `cleantest::Service::start` asks the runner for a shared container.
pub const ENV_CONTROL: &str = "CLEANTEST_CONTROL";
/// The binary id of the unit (`pkg`, `pkg::it`, `pkg::bin/tool`, `doctests`, `exec`).
pub const ENV_BINARY: &str = "CLEANTEST_BINARY";
/// The test name of an isolated unit.
pub const ENV_TEST: &str = "CLEANTEST_TEST";
/// Points Docker clients at the session's proxy.
pub const ENV_DOCKER_HOST: &str = "DOCKER_HOST";
/// Removed while the proxy runs: a selected context would win over `DOCKER_HOST`.
pub const ENV_DOCKER_CONTEXT: &str = "DOCKER_CONTEXT";

// ---- environment the runner reads ----

/// Where session records and locks live.
pub const ENV_STATE_DIR: &str = "CLEANTEST_STATE_DIR";
/// The machine-wide directory of environment locks (default `/run/lock/cleantest`, else
/// `/tmp/cleantest-locks`).
pub const ENV_LOCK_DIR: &str = "CLEANTEST_LOCK_DIR";
/// The engine's socket as a container on the engine's host sees it, for the engine-side reaper's mount,
/// when the client's path is not it (default: the client's `unix://` path, or `/var/run/docker.sock`
/// for a remote engine or one in a VM).
pub const ENV_ENGINE_SOCKET: &str = "CLEANTEST_ENGINE_SOCKET";
/// `off`: the runner does not become a child subreaper, and finds escapees as on macOS (snapshots of
/// the process tree and the environment scan), to check a suite's containment there from Linux.
pub const ENV_SUBREAPER: &str = "CLEANTEST_SUBREAPER";
/// The run a session belongs to, shared by the shards of one CI run (labelled `cleantest.run`). Also
/// given to every process of the session.
pub const ENV_RUN_ID: &str = "CLEANTEST_RUN_ID";
/// `1` (or `true`): leave `TMPDIR` alone, as the profile key `tmpdir = false` does; tests then write
/// into the runner's own temporary directory, which nothing sweeps.
pub const ENV_NO_TMPDIR: &str = "CLEANTEST_NO_TMPDIR";
/// The variable every process of a run reads its temporary directory from (`std::env::temp_dir()`,
/// `tempfile`, `mktemp`, most C libraries): set to a directory of the session's.
pub const ENV_TMPDIR: &str = "TMPDIR";
/// Where the run id comes from when `CLEANTEST_RUN_ID` is not set: the CI's own run, as
/// `(variables joined by '-', CI)`.
pub const RUN_ID_SOURCES: &[(&[&str], &str)] = &[
    (&["GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT"], "GitHub Actions"),
    (&["CI_PIPELINE_ID"], "GitLab CI"),
    (&["BUILDKITE_BUILD_ID"], "Buildkite"),
];

// ---- binary ids with a fixed meaning ----

/// `CLEANTEST_BINARY` of the doctest unit.
pub const DOCTESTS_ID: &str = "doctests";
/// `CLEANTEST_BINARY` of the command `cargo cleantest exec` runs.
pub const EXEC_ID: &str = "exec";

// ---- Docker labels ----

/// Every resource of a session carries `cleantest.session=<id>`; the sweep selects by it alone.
pub const SESSION_LABEL: &str = "cleantest.session";
/// The run (`CLEANTEST_RUN_ID`) of the session, on every resource of it: `sweep --run` selects by it.
pub const RUN_LABEL: &str = "cleantest.run";
/// The unit that created a resource through the proxy.
pub const BINARY_LABEL: &str = "cleantest.binary";
/// The isolated test that created a resource through the proxy.
pub const TEST_LABEL: &str = "cleantest.test";
/// The owner of a session's resources, fixed at creation so that any sweep, from any state directory,
/// can prove it alive or dead: the host (boot id and pid namespace), the runner's pid, and that pid's
/// start time in clock ticks since boot (a reused pid has another start time).
pub const HOST_LABEL: &str = "cleantest.host";
pub const PID_LABEL: &str = "cleantest.pid";
pub const PID_START_LABEL: &str = "cleantest.pid-start";
/// `cleantest.nested.<id>`: set by a session's proxy on a resource whose creator had labelled it with
/// another session `<id>` (a `cargo cleantest` run inside this one). The proxy's own session label wins,
/// so this one's sweep always finds it; session `<id>`'s sweep selects by this key too.
pub const NESTED_LABEL_PREFIX: &str = "cleantest.nested.";
/// `cleantest.role=reaper`: the session's engine-side reaper container (it carries the session label
/// too, so that any sweep of the session removes it; the reaper's own sweep spares itself).
pub const ROLE_LABEL: &str = "cleantest.role";
pub const ROLE_REAPER: &str = "reaper";
/// `cleantest.service=<name>`: a session service's container.
pub const SERVICE_LABEL: &str = "cleantest.service";
/// On the images of this binary that the engine-side reaper runs from (`cleantest-reaper:<tag>`).
pub const REAPER_IMAGE_LABEL: &str = "cleantest.reaper-image";

// ---- exit codes (the README's table) ----

/// Every test passed.
pub const EXIT_OK: i32 = 0;
/// A test failed or timed out, the build failed, or tests could not be run (as cargo test).
pub const EXIT_TEST_FAILED: i32 = 101;
/// The command line or the config file is wrong.
pub const EXIT_USAGE: i32 = 2;
/// The session's Docker resources could not all be removed (even if every test passed).
pub const EXIT_LEFTOVERS: i32 = 3;
/// The environment lock was not free within `--lock-timeout`.
pub const EXIT_LOCK_TIMEOUT: i32 = 4;
/// A session service could not be started or did not become ready; no test ran.
pub const EXIT_SERVICE: i32 = 5;
/// `exec` only: the command ran past `--timeout` (as coreutils' `timeout`).
pub const EXIT_TIMEOUT: i32 = 124;
/// `exec` only: the command does not exist (126: it cannot be run), as a shell says it.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The exit code of a run stopped by a signal: 130 SIGINT, 143 SIGTERM, 129 SIGHUP.
pub fn exit_for_signal(signal: i32) -> i32 {
    128 + signal
}

// ---- the state directory ----

/// `sessions/<id>/` holds one session's record, lock, proxy socket and reaper log.
pub const SESSIONS_DIR: &str = "sessions";
/// The per-user directory under the system's temporary directory that holds each session's
/// temporary directory: `<temp>/cleantest-<uid>/<session>/`.
pub const TEMP_ROOT_PREFIX: &str = "cleantest-";
/// `service-logs/<id>/<service>.log`: the logs of a session's services, kept when its tests failed or
/// a service stopped during the run (the session's own directory goes when it is swept).
pub const SERVICE_LOGS_DIR: &str = "service-logs";
/// Under the state directory: `archives/<session>/`, where a run from an archive unpacks it (unless
/// `--extract-to`); removed with the session.
pub const ARCHIVES_DIR: &str = "archives";
/// Under the state directory: what `cargo metadata` said of each workspace, remembered between runs.
pub const METADATA_CACHE_DIR: &str = "metadata";
/// In a session's directory: who ran, where, which engine, status.
pub const RECORD_FILE: &str = "record.json";
/// In a session's directory: held with `flock` by the runner for its whole life.
pub const RECORD_LOCK_FILE: &str = "lock";
/// In a session's directory: the Docker API proxy's socket.
pub const PROXY_SOCKET_FILE: &str = "docker.sock";
/// In a session's directory: the control socket (`CLEANTEST_CONTROL`).
pub const CONTROL_SOCKET_FILE: &str = "control.sock";
/// In a session's directory: what the reaper did.
pub const REAPER_LOG_FILE: &str = "reaper.log";
/// Present in a session's directory while its proxy has forwarded a create whose answer it has not
/// seen: the engine may still complete it, so whoever cleans up after a dead runner looks again.
pub const CREATES_IN_FLIGHT_FILE: &str = "creates-in-flight";
/// A session's anonymous volumes (an image's `VOLUME`, `-v /path`), one name a line, as the proxy saw
/// them at creation: the engine labels them not, and removes them only with their container's `v`.
pub const ANONYMOUS_VOLUMES_FILE: &str = "anonymous-volumes";

// ---- the config file ----

/// Where the config lives, relative to the workspace root.
pub const CONFIG_PATH: &str = ".config/cleantest.toml";
