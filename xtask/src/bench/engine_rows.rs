//! The engine rows: sweeping a session's containers, networks and volumes against the docker CLI, and
//! the proxy's cost per call.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::*;

pub(super) fn sh(script: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "`{script}`: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// 100 containers (10 with a named volume each, the rest over 10 networks), labelled for one session.
fn create_session_resources(session: &str, containers: usize, groups: usize) -> Result<(), String> {
    let l = format!("--label cleantest.session={session}");
    sh(&format!(
        "set -e; for n in $(seq 1 {groups}); do docker network create {l} {session}-n$n >/dev/null; docker volume create {l} {session}-v$n >/dev/null; done
         seq 1 {groups} | xargs -P 8 -I N docker run -d {l} -v {session}-vN:/data cleantest-fixture:latest sleep 1000 >/dev/null
         seq {} {containers} | xargs -P 8 -I N sh -c 'docker run -d {l} --network {session}-n$((N % {groups} + 1)) cleantest-fixture:latest sleep 1000 >/dev/null'",
        groups + 1
    ))
    .map(|_| ())
}

pub(super) fn sweep(opts: &Opts, bin: &Path) -> Result<Row, String> {
    let (containers, groups) = if opts.smoke { (6, 2) } else { (100, 10) };
    let (mut ours, mut cli) = (Samples::default(), Samples::default());
    for run in 0..opts.runs {
        let session = format!("benchsweep{}x{run}", std::process::id());
        create_session_resources(&session, containers, groups)?;
        let started = Instant::now();
        let status = Command::new(bin.join("cargo-cleantest"))
            .args(["sweep", "--session", &session])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        push(&mut ours, started.elapsed().as_secs_f64());
        if !status.success() {
            return Err("cargo cleantest sweep failed".into());
        }
        let session = format!("benchcli{}x{run}", std::process::id());
        create_session_resources(&session, containers, groups)?;
        let f = format!("--filter label=cleantest.session={session}");
        let ids = sh(&format!(
            "docker ps -aq {f} | tr '\\n' ' '; echo; docker network ls -q {f} | tr '\\n' ' '; echo; docker volume ls -q {f} | tr '\\n' ' '"
        ))?;
        let mut parts = ids.lines();
        let (c, n, v) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let started = Instant::now();
        sh(&format!(
            "docker rm -f -v {c} >/dev/null && docker network rm {n} >/dev/null && docker volume rm {v} >/dev/null"
        ))?;
        push(&mut cli, started.elapsed().as_secs_f64());
    }
    let what = format!(
        "sweep of {containers} containers, {groups} networks, {groups} volumes vs the docker CLI"
    );
    Ok(row(&what, &ours, &cli, "s", 0.8, true))
}

pub(super) fn proxy(opts: &Opts, bin: &Path) -> Result<Row, String> {
    let n = if opts.smoke { 5 } else { 50 };
    let script = format!(
        "s=$(date +%s%N); for i in $(seq 1 {n}); do docker create --label ct-bench.proxy=1 cleantest-fixture:latest true >/dev/null; done; e=$(date +%s%N); echo $(( (e - s) / 1000 ))"
    );
    let (mut through, mut direct) = (Samples::default(), Samples::default());
    for run in 0..opts.runs {
        let mut sides = [(&mut direct, Some("--no-proxy")), (&mut through, None)];
        // The sides take turns going first, and each starts on an engine without the other's
        // containers: creates slow down as containers pile up.
        if run % 2 == 1 {
            sides.reverse();
        }
        for (samples, extra) in sides {
            let out = Command::new(bin.join("cargo-cleantest"))
                .args(["exec", "--no-lock"])
                .args(extra)
                .args(["--", "sh", "-c", &script])
                .env(
                    "CLEANTEST_STATE_DIR",
                    crate::target_dir(&opts.root).join("bench/state"),
                )
                .stderr(Stdio::null())
                .output()
                .map_err(|e| e.to_string())?;
            let micros: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| format!("read the proxy bench's output ({})", out.status))?;
            samples.0.push(micros / 1e6);
            // The proxied side's containers went with its session's sweep; the direct side's carry
            // only the bench's label: remove them by it.
            sh("docker ps -aq --filter label=ct-bench.proxy=1 | xargs -r docker rm -f >/dev/null")?;
        }
    }
    Ok(row(
        &format!("{n} container creates through the session proxy vs directly"),
        &through,
        &direct,
        "s",
        1.05,
        true,
    ))
}
