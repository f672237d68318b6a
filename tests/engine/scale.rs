//! CI at scale against the real engine (`fixtures/guard`): one `sweep --run` removing two kept shards
//! of a run (and not another run's, and not a live shard's without `--include-live`), the resource
//! guard's refusals and `default-memory`, and a remote engine over TCP (a private dockerd in a network
//! namespace of its own) with a service reached at `{host}`.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::docker::*;
use common::*;
use libtest_mimic::Failed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    let mut remote = trial(
        "a_tcp_engine_runs_tests_and_a_service_reached_at_its_host",
        remote_engine,
    );
    remote.unavailable = private_engine_problem();
    let mut tls = trial(
        "a_tls_engine_runs_tests_a_service_and_the_engine_side_reaper",
        tls_engine,
    );
    tls.unavailable = private_engine_problem().or_else(|| {
        let openssl = Command::new("openssl").arg("version").output();
        (!openssl.is_ok_and(|o| o.status.success()))
            .then(|| "no openssl binary to make the certificates".to_string())
    });
    engine_cells(vec![
        trial(
            "two_kept_sessions_of_one_run_are_removed_by_one_sweep_run",
            one_sweep_per_run,
        ),
        trial(
            "a_live_shard_is_swept_by_run_only_with_include_live",
            live_shard,
        ),
        trial(
            "the_guard_refuses_over_its_limits_and_sets_default_memory",
            resource_guard,
        ),
        remote,
        tls,
    ])
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cargo-cleantest")
}

fn sweep_run(run: &str, extra: &[&str]) -> Result<std::process::Output, Failed> {
    let out = Command::new(binary())
        .args(["sweep", "--run", run])
        .args(extra)
        .env("CLEANTEST_STATE_DIR", target_dir().join("it-state"))
        .output()?;
    check_success(&out)?;
    Ok(out)
}

fn of_run(run: &str) -> Vec<String> {
    matching(None, &format!("label=cleantest.run={run}"))
}

/// Two shards of one run fail and keep their containers; a third session belongs to another run, whose
/// id comes from GitHub Actions' variables. `sweep --run` removes the two, and only them.
fn one_sweep_per_run() -> Result<(), Failed> {
    let mark = unique_mark("runid");
    let run = format!("{mark}-shards");
    for shard in 1..=2 {
        kept_failure(&format!("{mark}-{shard}"), &[("CLEANTEST_RUN_ID", &run)])?;
    }
    let kept = of_run(&run);
    check(kept.len() == 2, || {
        format!("two kept containers of the run, found {kept:?}")
    })?;
    let other_run = format!("{}-7", mark.replace('-', "_"));
    let github_run = mark.replace('-', "_");
    kept_failure(
        &format!("{mark}-other"),
        &[("GITHUB_RUN_ID", &github_run), ("GITHUB_RUN_ATTEMPT", "7")],
    )?;
    let other = of_run(&other_run);
    check(other.len() == 1, || {
        format!("GitHub's run id labels the session: {other:?}")
    })?;

    sweep_run(&run, &[])?;
    check(of_run(&run).is_empty(), || {
        format!("left of the run: {:?}", of_run(&run))
    })?;
    check(of_run(&other_run) == other, || {
        "another run's session was touched".into()
    })?;
    sweep_run(&other_run, &[])?;
    check(of_run(&other_run).is_empty(), || {
        "the other run is swept by its own id".into()
    })
}

/// A run of `fixtures/guard` that leaves a container, fails, and keeps it (`--keep-on-failure`).
fn kept_failure(mark: &str, env: &[(&str, &str)]) -> Result<(), Failed> {
    let mut command = cleantest("guard", mark);
    command
        .args(["--keep-on-failure"])
        .env("CT_GUARD_FAIL", "1")
        .envs(env.iter().copied());
    let (_, out) = run_owned(command)?;
    check_exit(&out, 101)
}

/// A session of the run still running (an `exec` holding a container) is left by `sweep --run`, and
/// swept with `--include-live`; the session then ends cleanly.
fn live_shard() -> Result<(), Failed> {
    let mark = unique_mark("live-run");
    let run = format!("{mark}-live");
    let dir = temp_dir("live-run");
    let ready = dir.join("ready");
    let script = format!(
        "docker run -d {} sleep 1000 >/dev/null && touch {} && sleep 60",
        image::IMAGE,
        ready.display()
    );
    let mut exec = exec_in_session(&mark, &target_dir().join("it-state"))
        .env("CLEANTEST_RUN_ID", &run)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for_file(&ready, Duration::from_secs(30));
    let out = sweep_run(&run, &[])?;
    let left = of_run(&run);
    check(left.len() == 1, || {
        format!(
            "the live shard's container stays: {left:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    sweep_run(&run, &["--include-live"])?;
    check(of_run(&run).is_empty(), || {
        "--include-live sweeps the live shard".into()
    })?;
    kill(Pid::from_raw(exec.id() as i32), Signal::SIGINT)?;
    exec.wait()?;
    assert_no_survivors(&mark);
    Ok(())
}

/// `max-containers` from the profile, `max-memory` from the command line, `default-memory` in
/// `docker inspect`, and the peak line; nothing left after any of them.
fn resource_guard() -> Result<(), Failed> {
    let mark = unique_mark("guard");
    let (pid, out) = run_owned({
        let mut c = cleantest("guard", &mark);
        c.args(["-P", "guarded"])
            .env("CT_GUARD_COUNT", "3")
            .env("CT_GUARD_EXPECT_MEMORY", (64u64 << 20).to_string());
        c
    })?;
    check_exit(&out, 101)?;
    let text = stdout(&out);
    check(
        text.contains(
            "cleantest: this session already has 2 containers (max-containers in .config/cleantest.toml)",
        ),
        || format!("the refusal names the limit and where it is set:\n{text}"),
    )?;
    check(
        text.contains("session peak: 2 container(s) at once"),
        || format!("the peak line:\n{text}"),
    )?;
    // A memory that was never sampled is said so, never shown as none used.
    check(
        !text
            .lines()
            .any(|l| l.starts_with("session peak") && l.contains(" 0k of memory")),
        || format!("the peak line:\n{text}"),
    )?;
    check_nothing_owned(pid)?;

    let (pid, out) = run_owned({
        let mut c = cleantest("guard", &format!("{mark}-default"));
        c.args(["--default-memory", "96m"])
            .env("CT_GUARD_COUNT", "2")
            .env("CT_GUARD_EXPECT_MEMORY", (96u64 << 20).to_string());
        c
    })?;
    check_exit(&out, 0)?;
    check_nothing_owned(pid)?;

    let (pid, out) = run_owned({
        let mut c = cleantest("guard", &format!("{mark}-memory"));
        c.args(["--max-memory", "250m"])
            .env("CT_GUARD_COUNT", "3")
            .env("CT_GUARD_MEMORY", "100m");
        c
    })?;
    check_exit(&out, 101)?;
    let text = stdout(&out);
    check(
        text.contains("100m more would go over 250m (--max-memory)"),
        || format!("the memory refusal:\n{text}"),
    )?;
    check_nothing_owned(pid)
}

/// The runner in the private engine's network namespace with `DOCKER_HOST=tcp://127.0.0.1:PORT`: the
/// tests create a container through the proxy, the `echo` service is reached at `{host}`, and
/// nothing of the session is left on that engine. (The engine-side reaper is off: it mounts
/// `/var/run/docker.sock`, which on this machine is the shared engine's, not the private one's.)
fn remote_engine() -> Result<(), Failed> {
    let engine = PrivateEngine::start_with_tcp(2375)?;
    let mark = unique_mark("remote");
    let mut command = engine.in_namespace(binary());
    in_fixture(&mut command, "guard", &mark);
    command
        .args(["-P", "remote", "--engine-reaper", "off", "--junit"])
        .arg(run_dir("remote").join("junit.xml"))
        .env("DOCKER_HOST", "tcp://127.0.0.1:2375")
        .env("CT_GUARD_COUNT", "1");
    let (_, out) = run_owned(command)?;
    check_exit(&out, 0)?;
    let totals = last_totals(&out);
    check(totals.passed == 3 && totals.failed == 0, || {
        format!("{totals:?}\n{}", stdout(&out))
    })?;
    let left = matching(Some(&engine.host()), "label=cleantest.session");
    check(left.is_empty(), || {
        format!("left on the remote engine: {left:?}")
    })?;
    engine.check_host_untouched()
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as the docker docs make them:
/// `ca.pem`, `server-cert.pem`, `server-key.pem`, and the client's `cert.pem` and `key.pem`.
fn make_certs(dir: &std::path::Path) -> Result<(), Failed> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    openssl(
        dir,
        "req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=ct-ca",
    )?;
    for (who, key, cert, name) in [
        ("server", "server-key.pem", "server-cert.pem", "127.0.0.1"),
        ("client", "key.pem", "cert.pem", "client"),
    ] {
        openssl(
            dir,
            &format!("req -newkey rsa:2048 -nodes -keyout {key} -out {who}.csr -subj /CN={name}"),
        )?;
        openssl(
            dir,
            &format!(
                "x509 -req -in {who}.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out {cert} \
                 -days 2 -extfile {who}.ext"
            ),
        )?;
    }
    Ok(())
}

/// `openssl ARGS` (split at spaces) in `dir`.
fn openssl(dir: &std::path::Path, args: &str) -> Result<(), Failed> {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()?;
    check(out.status.success(), || {
        format!("openssl {args}: {}", String::from_utf8_lossy(&out.stderr))
    })
}

/// The same run against a dockerd that takes only TLS clients (`--tlsverify`) on its TCP port, with
/// `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`: the proxy's upstream, bollard's client (services, the
/// sweep) and the engine-side reaper's attached link all speak TLS. (Here the reaper runs: it is only
/// dismissed, and the socket it mounts is never used for a sweep.) Without the client certificate the
/// run is refused before anything starts.
fn tls_engine() -> Result<(), Failed> {
    let certs = temp_dir("tls-certs");
    make_certs(&certs)?;
    let engine = PrivateEngine::start_with_tls(2376, &certs)?;
    let mark = unique_mark("tls");
    let mut command = engine.in_namespace(binary());
    in_fixture(&mut command, "guard", &mark);
    command
        .args(["-P", "remote", "--engine-reaper", "on"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:2376")
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &*certs)
        .env("CT_GUARD_COUNT", "2");
    let (_, out) = run_owned(command)?;
    check_exit(&out, 0)?;
    let totals = last_totals(&out);
    check(totals.passed == 3, || {
        format!("{totals:?}\n{}", stdout(&out))
    })?;
    check(
        stdout(&out).contains("session peak: 3 container(s)"),
        || format!("two test containers and the service:\n{}", stdout(&out)),
    )?;
    let left = matching(Some(&engine.host()), "label=cleantest.session");
    check(left.is_empty(), || {
        format!("left on the TLS engine: {left:?}")
    })?;

    // No client certificate: refused with exit 2 before any test runs.
    std::fs::remove_file(certs.join("key.pem"))?;
    let mut command = engine.in_namespace(binary());
    in_fixture(&mut command, "guard", &format!("{mark}-nokey"));
    command
        .env("DOCKER_HOST", "tcp://127.0.0.1:2376")
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &*certs);
    let (_, out) = run_owned(command)?;
    check_exit(&out, 2)?;
    engine.check_host_untouched()
}
