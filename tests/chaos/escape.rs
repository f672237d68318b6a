//! The "nothing escapes" cells of issue 12 (B) that need no private engine: processes the run adopts.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    let mut images = trial(
        "builds_commits_and_imports_in_a_session_leave_no_container_or_image",
        builds_and_commits_are_swept,
    );
    images.unavailable = private_engine_problem();
    let mut zombie = trial(
        "a_zombie_leader_with_live_threads_is_killed_by_the_reaper",
        zombie_leader,
    );
    zombie.unavailable = Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
        .then(|| "python3 is not installed (it makes the process whose main thread exits)".into());
    vec![
        zombie,
        trial(
            "orphans_are_reaped_as_they_come_not_when_the_unit_ends",
            zombies_are_reaped,
        ),
        trial("a_create_in_flight_at_the_end_is_swept", || {
            create_in_flight(false)
        }),
        trial(
            "a_create_in_flight_when_the_runner_is_killed_is_swept_by_the_reaper",
            || create_in_flight(true),
        ),
        trial(
            "the_selected_docker_context_is_the_proxys_upstream",
            docker_context_is_followed,
        ),
        trial(
            "volumes_a_container_creates_implicitly_are_swept",
            implicit_volumes_are_swept,
        ),
        trial(
            "a_chain_of_environment_cleared_processes_dies_with_the_run",
            env_cleared_chain,
        ),
        trial(
            "without_a_subreaper_a_setsid_env_cleared_server_is_found_by_tree_snapshots",
            || setsid_server_without_subreaper(true),
        ),
        trial(
            "with_the_subreaper_a_setsid_env_cleared_server_is_adopted_and_killed",
            || setsid_server_without_subreaper(false),
        ),
        images,
    ]
}

/// On a private engine (so that "nothing else is there" can be checked): a session builds an image, a
/// build fails at a `RUN` step (the classic builder used to leave its intermediate container), a
/// container is committed, and its export imported. After the session the engine has no container and no image but the fixture.
fn builds_and_commits_are_swept() -> Result<(), Failed> {
    let engine = PrivateEngine::start()?;
    let host = engine.host();
    let mark = unique_mark("images");
    let dir = temp_dir("images");
    let image = image::IMAGE;
    std::fs::create_dir_all(dir.join("ok"))?;
    std::fs::create_dir_all(dir.join("bad"))?;
    std::fs::write(
        dir.join("ok/Dockerfile"),
        format!("FROM {image}\nRUN echo built > /built\n"),
    )?;
    std::fs::write(
        dir.join("bad/Dockerfile"),
        format!("FROM {image}\nRUN false\n"),
    )?;
    let script = format!(
        "set -e\n\
         DOCKER_BUILDKIT=0 docker build -q -t {mark}-built {ok} >/dev/null\n\
         if DOCKER_BUILDKIT=0 docker build -q {bad} >/dev/null 2>&1; then echo bad-built; fi\n\
         docker create --name {mark}-c {image} true >/dev/null\n\
         docker commit {mark}-c {mark}-committed >/dev/null\n\
         docker export {mark}-c | docker import - {mark}-imported >/dev/null\n\
         docker image inspect -f 'imported={{{{index .Config.Labels \"cleantest.session\"}}}}' {mark}-imported\n\
         docker image inspect -f 'label={{{{index .Config.Labels \"cleantest.session\"}}}}' {mark}-built\n",
        ok = dir.join("ok").display(),
        bad = dir.join("bad").display(),
    );
    let out = run(exec_in_session(&mark, &dir)
        .env("DOCKER_HOST", &host)
        .args(["--", "sh", "-c", &script]));
    let d = |args: &[&str]| {
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    };
    let containers = d(&["ps", "-aq"]);
    let images = d(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let text = stdout(&out);
    check_success(&out)?;
    check(
        text.contains("label=") && !text.contains("label=\n"),
        || format!("the built image was not labelled:\n{text}"),
    )?;
    check(!text.contains("bad-built"), || {
        "the failing build succeeded".into()
    })?;
    check(
        text.lines()
            .any(|l| l.starts_with("imported=") && l.len() > "imported=".len()),
        || format!("the imported image was not labelled:\n{text}"),
    )?;
    check(containers.is_empty(), || {
        format!("containers left on the engine: {containers}")
    })?;
    let others: Vec<&str> = images.lines().filter(|i| *i != image).collect();
    check(others.is_empty(), || {
        format!("images left: {others:?}\n{}", stderr(&out))
    })?;
    engine.check_host_untouched()
}

/// `setsid -f env -i sh -c 'sh -c "sleep 300"'`: three processes, none carrying the session's
/// environment, out of the run's process group. Each kill re-parents the next link to the runner after
/// the one snapshot the cleanup used to take, so the last ones survived while the run said they were
/// killed. The end of the run must kill to a fixpoint: the sleep is gone when the run returns.
fn env_cleared_chain() -> Result<(), Failed> {
    let mark = unique_mark("chain");
    let dir = temp_dir("chain");
    let pidfile = dir.join("sleep.pid");
    // Three links, each a shell that waits for the next (`; true` keeps it from exec'ing it).
    let inner = dir.join("a.sh");
    std::fs::write(&inner, format!("sh {}; true\n", dir.join("b.sh").display()))?;
    std::fs::write(
        dir.join("b.sh"),
        format!("sh {}; true\n", dir.join("c.sh").display()),
    )?;
    std::fs::write(
        dir.join("c.sh"),
        format!("echo $$ > {}; exec sleep 300\n", pidfile.display()),
    )?;
    // The run ends once the chain's last link has written its pid (a condition, not a delay).
    let script = format!(
        "setsid -f env -i sh {inner} </dev/null >/dev/null 2>&1\n\
         n=0; while [ ! -s {pid} ] && [ $n -lt 100000 ]; do n=$((n+1)); done\n",
        inner = inner.display(),
        pid = pidfile.display()
    );
    let out = run(exec_in_session(&mark, &dir).args(["--", "sh", "-c", &script]));
    died_with_the_run(&pidfile, &out, "the chain's sleep")
}

/// The process whose pid the run wrote to `pidfile` started and did not survive the run (killed here
/// if it did: the test started it, through the run), and the run succeeded.
fn died_with_the_run(pidfile: &Path, out: &std::process::Output, what: &str) -> Result<(), Failed> {
    let pid = std::fs::read_to_string(pidfile).unwrap_or_default();
    let pid = pid.trim().to_string();
    let survived = !pid.is_empty() && !is_gone(&pid);
    if survived && let Ok(n) = pid.parse::<i32>() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(n),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    check(!pid.is_empty(), || {
        format!("{what} never started: {}", stderr(out))
    })?;
    check(!survived, || {
        format!("{what} {pid} survived the run: {}", stderr(out))
    })?;
    check_success(out)
}

/// A helper of the command (still in its group) starts a server that calls `setsid` and clears its
/// environment, then the command exits. The helper dies with the group and the server is re-parented
/// away from it. With `CLEANTEST_SUBREAPER=off` (the macOS way) only the process-tree snapshots can
/// still tell it came from the run: the environment scan cannot see it. Either way it must die with
/// the run.
fn setsid_server_without_subreaper(off: bool) -> Result<(), Failed> {
    let mark = unique_mark("lineage");
    let dir = temp_dir("lineage");
    let pidfile = dir.join("server.pid");
    let script = format!(
        "sh -c 'setsid env -i sh -c \"echo \\$\\$ > {pid}; exec sleep 300\" </dev/null >/dev/null 2>&1 & wait' &\n\
         n=0; while [ ! -s {pid} ] && [ $n -lt 100000 ]; do n=$((n+1)); done\n",
        pid = pidfile.display()
    );
    let mut command = exec_in_session(&mark, &dir);
    if off {
        command.env("CLEANTEST_SUBREAPER", "off");
    } else {
        command.env_remove("CLEANTEST_SUBREAPER");
    }
    let out = run(command.args(["--", "sh", "-c", &script]));
    died_with_the_run(&pidfile, &out, "the server")
}

/// The zombie children of process `pid` (in any of its threads).
fn zombie_children(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.starts_with(" Z")))
        })
        .count()
}

/// A command that abandons 500 processes which exit at once: each is re-parented to the runner (a
/// subreaper). They used to stay zombies until the command ended (3,000 under one `exec` in the review,
/// with pid_max 32,768); they must be reaped while the command still runs.
fn zombies_are_reaped() -> Result<(), Failed> {
    let mark = unique_mark("zombies");
    let state = temp_dir("zombies");
    let (done, go) = (state.join("done"), state.join("go"));
    let script = format!(
        "i=0; while [ $i -lt 500 ]; do sh -c 'true &'; i=$((i+1)); done; : > {done}; \
         while [ ! -e {go} ]; do sleep 0.05; done",
        done = done.display(),
        go = go.display()
    );
    let mut runner = exec_in_session(&mark, &state)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .spawn()?;
    wait_for_file(&done, Duration::from_secs(120));
    // Reaping follows SIGCHLD: give it a moment, bounded, then count what is left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while zombie_children(runner.id()) > 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = zombie_children(runner.id());
    std::fs::write(&go, "")?;
    let status = runner.wait()?;
    check(left <= 5, || {
        format!("{left} zombies were left unreaped while the command ran")
    })?;
    check(status.success(), || format!("{status:?}"))?;
    assert_no_survivors(&mark);
    Ok(())
}

/// A slow link in front of the real engine: every chunk a client sends that holds a container create is
/// held for `delay` before it goes on (the engine then completes it whether or not the client is still
/// there, as it does for a create it has received). Writes `connected` when a client connects, `seen`
/// when it holds a create, and `answered` when the engine's first bytes after it come back.
struct SlowLink {
    dir: PathBuf,
}

impl SlowLink {
    fn start(delay: Duration) -> std::io::Result<SlowLink> {
        let dir = PathBuf::from(format!("/tmp/ct-{}", unique_mark("slow")));
        std::fs::create_dir_all(&dir)?;
        let listener = UnixListener::bind(dir.join("s.sock"))?;
        let marks = dir.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let marks = marks.clone();
                std::thread::spawn(move || relay(client, &marks, delay));
            }
        });
        Ok(SlowLink { dir })
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("s.sock").display())
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn relay(mut client: UnixStream, marks: &Path, delay: Duration) {
    let _ = std::fs::write(marks.join("connected"), "");
    let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock") else {
        return;
    };
    let (Ok(mut to_client), Ok(mut from_engine)) = (client.try_clone(), engine.try_clone()) else {
        return;
    };
    let answered = marks.join("answered");
    let create_sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = create_sent.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = from_engine.read(&mut buf) {
            if n == 0 {
                break;
            }
            if sent.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = std::fs::write(&answered, "");
            }
            // The client may be gone: the engine's answer is read to its end all the same.
            let _ = to_client.write_all(&buf[..n]);
        }
    });
    let mut buf = [0u8; 65536];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if chunk.windows(18).any(|w| w == b"/containers/create") {
            let _ = std::fs::write(marks.join("seen"), "");
            std::thread::sleep(delay);
            create_sent.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if engine.write_all(chunk).is_err() {
            break;
        }
    }
}

/// A create the proxy forwarded just before the run was stopped completes after the sweep listed: the
/// container stayed, labelled, and the record was deleted, so no later sweep looked for it. The end now
/// waits for the answers to forwarded creates before it lists. With the runner SIGKILLed (`killed`),
/// its reaper sees that a create was in flight and watches for it.
fn create_in_flight(killed: bool) -> Result<(), Failed> {
    let mark = unique_mark("in-flight");
    let state = temp_dir("in-flight");
    let link = SlowLink::start(Duration::from_secs(3))?;
    let script = format!(
        "docker create --label ct-it.mark={mark} {} true; sleep 1000",
        image::IMAGE
    );
    let mut runner = exec_in_session(&mark, &state)
        .env("DOCKER_HOST", link.host())
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for_file(&link.dir.join("seen"), Duration::from_secs(60));
    let reaper = reaper_of(runner.id());
    let signal = if killed {
        nix::sys::signal::Signal::SIGKILL
    } else {
        nix::sys::signal::Signal::SIGTERM
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(runner.id() as i32), signal)?;
    let status = runner.wait()?;
    // Judged once the engine has answered the create, wherever that answer went, and once the reaper
    // (when the runner was killed) is done.
    wait_for_file(&link.dir.join("answered"), Duration::from_secs(60));
    if killed {
        let deadline = Instant::now() + Duration::from_secs(60);
        while reaper.is_some_and(|pid| !is_gone(&pid.to_string())) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let left = marked(&mark);
    for id in &left {
        let _ = docker(&["rm", "-f", id]);
    }
    check(left.is_empty(), || {
        format!("the create in flight at the end was left: {left:?}")
    })?;
    let expected = if killed { None } else { Some(143) };
    check(status.code() == expected, || format!("{status:?}"))?;
    assert_no_survivors(&mark);
    Ok(())
}

/// `docker context use X` with no `DOCKER_HOST` points the CLI at X; inside a session the tests used to
/// be sent to the default socket instead. The proxy must forward to X (here a link to the real engine
/// that says when it is used), and the session's sweep must find what was created there.
fn docker_context_is_followed() -> Result<(), Failed> {
    let mark = unique_mark("context");
    let state = temp_dir("context");
    let config = state.join("docker-config");
    let link = SlowLink::start(Duration::ZERO)?;
    for args in [
        vec![
            "context".to_string(),
            "create".into(),
            "ct-context".into(),
            "--docker".into(),
            format!("host={}", link.host()),
        ],
        vec!["context".into(), "use".into(), "ct-context".into()],
    ] {
        let out = std::process::Command::new("docker")
            .env("DOCKER_CONFIG", &config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .args(&args)
            .output()?;
        check_success(&out)?;
    }
    let label = format!("ct-it.mark={mark}");
    let out = run(exec_in_session(&mark, &state)
        .env("DOCKER_CONFIG", &config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .args([
            "--",
            "docker",
            "create",
            "--label",
            &label,
            image::IMAGE,
            "true",
        ]));
    let left = marked(&mark);
    for id in &left {
        let _ = docker(&["rm", "-f", id]);
    }
    check(out.status.success(), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })?;
    check(link.dir.join("connected").exists(), || {
        "the session's proxy did not forward to the selected context's engine".into()
    })?;
    check(left.is_empty(), || format!("left {left:?}"))
}

/// Volumes the engine creates on its own for a container: named ones from `-v name:/path` and
/// `--mount type=volume` (created unlabelled), and an anonymous one (`-v /path`) left behind when the
/// test removes its container without `-v`. All three used to outlive the session.
fn implicit_volumes_are_swept() -> Result<(), Failed> {
    let mark = unique_mark("implicit-volumes");
    let state = temp_dir("implicit-volumes");
    let id = mark.replace('-', "");
    let (bind, mount) = (format!("{id}-bind"), format!("{id}-mount"));
    let anonymous_file = state.join("anonymous");
    let script = format!(
        "set -e
         docker run -d --label ct-it.mark={mark} -v {bind}:/b --mount type=volume,source={mount},target=/m {image} sleep 1000
         c=$(docker create -v /anon {image} true)
         docker inspect -f '{{{{range .Mounts}}}}{{{{.Name}}}}{{{{end}}}}' $c > {anon}
         docker rm $c",
        image = image::IMAGE,
        anon = anonymous_file.display()
    );
    let out = run(exec_in_session(&mark, &state).args(["--", "sh", "-c", &script]));
    let anonymous = std::fs::read_to_string(&anonymous_file).unwrap_or_default();
    let volumes = [bind.as_str(), mount.as_str(), anonymous.trim()];
    let left: Vec<&str> = volumes
        .iter()
        .copied()
        .filter(|v| {
            !v.is_empty()
                && std::process::Command::new("docker")
                    .args(["volume", "inspect", v])
                    .output()
                    .is_ok_and(|o| o.status.success())
        })
        .collect();
    let leftovers = marked(&mark);
    for c in &leftovers {
        let _ = docker(&["rm", "-f", c]);
    }
    for v in &left {
        let _ = docker(&["volume", "rm", v]);
    }
    check(out.status.success() && !anonymous.trim().is_empty(), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })?;
    check(left.is_empty() && leftovers.is_empty(), || {
        format!("left volumes {left:?} and {leftovers:?}")
    })
}

/// Whether any thread of process `pid` still runs (not a zombie, not dead): a process whose main
/// thread exited shows `Z` for itself while its other threads run on.
fn any_thread_runs(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", pid.trim())) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.starts_with(" Z") && !r.starts_with(" X"))
        })
    })
}

/// A "zombie leader": a process carrying the session whose main thread has exited while another
/// thread runs, out of the run's process group. Its `/proc/PID/environ` reads nothing, so the
/// environment scan missed it; its threads' environ still carries the session. The runner is then
/// SIGKILLed: the host reaper must kill it.
fn zombie_leader() -> Result<(), Failed> {
    let mark = unique_mark("zombie-leader");
    let dir = temp_dir("zombie-leader");
    let pidfile = dir.join("leader.pid");
    // Written whole under another name, then renamed: the file must never be seen empty (once it
    // was, and the test read no pid at all).
    let program = format!(
        "import ctypes, os, threading, time\n\
         threading.Thread(target=time.sleep, args=(300,)).start()\n\
         with open({tmp:?}, 'w') as f: f.write(str(os.getpid()))\n\
         os.rename({tmp:?}, {pid:?})\n\
         ctypes.CDLL(None).pthread_exit(None)\n",
        tmp = dir.join("leader.pid.tmp").display().to_string(),
        pid = pidfile.display().to_string()
    );
    std::fs::write(dir.join("leader.py"), program)?;
    let script = format!(
        "setsid -f python3 {} </dev/null >/dev/null 2>&1\nexec sleep 1000\n",
        dir.join("leader.py").display()
    );
    let mut runner = exec_in_session(&mark, &dir)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for_file(&pidfile, Duration::from_secs(60));
    let pid = std::fs::read_to_string(&pidfile)?.trim().to_string();
    // The main thread has exited (its own stat says Z) while the other thread runs: a condition.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(is_gone(&pid) && any_thread_runs(&pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let zombie_leader = is_gone(&pid) && any_thread_runs(&pid);
    let reaper = reaper_of(runner.id());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = runner.wait();
    // The reaper cleans up and exits; then no thread of the process may run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while reaper.is_some_and(|r| !is_gone(&r.to_string())) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survived = any_thread_runs(&pid);
    if survived && let Ok(n) = pid.parse::<i32>() {
        // Ours: started by this test, through the run.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(n),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    check(zombie_leader, || {
        format!("process {pid} never became a zombie leader")
    })?;
    check(reaper.is_some(), || "the run started no reaper".into())?;
    check(!survived, || {
        format!("the zombie leader {pid} survived the reaper")
    })
}
