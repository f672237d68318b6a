//! The "never hang" cells (issue 12, C): no engine call may hold up scheduling, timeouts or signals.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    let mut hung = trial(
        "a_hung_engine_does_not_hold_up_timeouts",
        hung_engine_and_timeouts,
    );
    hung.unavailable = private_engine_problem();
    vec![
        hung,
        trial(
            "a_stopped_reaper_does_not_hang_the_end_of_the_run",
            stopped_reaper,
        ),
        trial(
            "a_wedged_engine_neither_holds_the_command_nor_the_end",
            wedged_engine,
        ),
    ]
}

/// A test SIGSTOPs the session's reaper (it ignores SIGTERM, but not that). Dismissing it used to wait
/// for it forever; now the wait is bounded, then the reaper is resumed and killed.
fn stopped_reaper() -> Result<(), Failed> {
    let mark = unique_mark("stopped-reaper");
    let script = "for c in $(cat /proc/$PPID/task/*/children); do \
                    if [ \"$(tr '\\0' '\\n' < /proc/$c/cmdline | sed -n 2p)\" = __reaper ]; then \
                      kill -STOP $c && echo \"stopped $c\"; fi; done";
    let mut child = exec_in_session(&mark, &run_dir("stopped-reaper"))
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
    }
    let reaper = text
        .lines()
        .find_map(|l| l.strip_prefix("stopped "))
        .unwrap_or_default()
        .to_string();
    check(!reaper.is_empty(), || {
        format!("the test found no reaper to stop: {text:?}")
    })?;
    check(status.is_some_and(|s| s.success()), || {
        format!("the run did not end within 60 s of its reaper being stopped: {status:?}")
    })?;
    check(is_gone(&reaper), || {
        format!("the stopped reaper {reaper} is still there")
    })?;
    assert_no_survivors(&mark);
    Ok(())
}

/// Whether the process whose pid a fixture wrote to `marks/<test>.started` is gone (or a zombie).
fn gone(marks: &Path, test: &str) -> bool {
    is_gone(&std::fs::read_to_string(marks.join(format!("{test}.started"))).unwrap_or_default())
}

/// One test leaves a container and ends while the engine is frozen; the other hangs past its 8 s
/// timeout. The timeout must stop it while the engine still answers nothing: the leak check of the
/// first test is asked off the scheduler's thread. Before, it was asked on it, and the timeout waited
/// for the engine (61 s in the review).
fn hung_engine_and_timeouts() -> Result<(), Failed> {
    let engine = PrivateEngine::start()?;
    let mark = unique_mark("hung-engine");
    let (mut child, marks) = spawn_until_started(
        cleantest("docker", &mark)
            .env("CLEANTEST_STATE_DIR", run_dir("hung-state"))
            .env("DOCKER_HOST", engine.host())
            .args(["--no-lock", "--isolate", "-j", "2", "--test", "proxied"])
            .args(limits("8s", "1s"))
            .args([
                "--",
                "--exact",
                "leaves_a_container_then_waits",
                "hangs_past_its_timeout",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        &["left", "hangs"],
    );
    engine.pause();
    std::fs::write(marks.join("go"), "")?;
    // The timeout is 8 s from the test's start; give it twice that, with the engine frozen throughout.
    let deadline = Instant::now() + Duration::from_secs(16);
    while !gone(&marks, "hangs") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped_in_time = gone(&marks, "hangs");
    engine.resume();
    let status = child.wait()?;
    check(stopped_in_time, || {
        "the timed-out test still ran 16 s after the engine froze: the scheduler waited for it"
            .into()
    })?;
    check(status.code() == Some(101), || format!("{status:?}"))?;
    let left = marked_at(Some(&engine.host()), &mark);
    check(left.is_empty(), || format!("left on the engine: {left:?}"))?;
    assert_no_survivors(&mark);
    engine.check_host_untouched()
}

/// A wedged dockerd answers `/_ping` and `/version` and hangs on every other call. No real engine
/// wedges on demand, so this one is a stand-in on a socket of the cell's: its answers are the real
/// ones' shape, and everything else is held unanswered until the client goes away.
struct Wedged {
    socket: std::path::PathBuf,
}

impl Wedged {
    fn start(dir: &Path) -> std::io::Result<Wedged> {
        let socket = dir.join("wedged.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)?;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || Wedged::serve(stream));
            }
        });
        Ok(Wedged { socket })
    }

    fn serve(stream: std::os::unix::net::UnixStream) {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut reader = BufReader::new(&stream);
        loop {
            let mut request = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
                if request.is_empty() {
                    request = line;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let path = request
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("");
            let answer = if path.ends_with("/_ping") {
                "OK".to_string()
            } else if path.ends_with("/version") {
                r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.24"}"#.to_string()
            } else {
                // Wedged: nothing, until the client closes.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            };
            let head = request.starts_with("HEAD");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: {}\r\n\r\n{}",
                answer.len(),
                if head { "" } else { &answer }
            );
            if (&stream).write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// Against a wedged engine, `exec` used to start its command after 90 s of silence and end after 150 s
/// (the start's `/info` and stale sweep, and the end's sweep, each waited out its bound). Now the
/// engine is found wedged within the start, said once, and asked nothing more until the end: the
/// command starts within 10 s and the run ends within 30 s (bounds of a hang check, far from both).
fn wedged_engine() -> Result<(), Failed> {
    let mark = unique_mark("wedged");
    let dir = temp_dir("wedged");
    let engine = Wedged::start(&dir)?;
    let started = dir.join("started");
    let begun = Instant::now();
    let mut child = exec_in_session(&mark, &dir.join("state"))
        .env("DOCKER_HOST", format!("unix://{}", engine.socket.display()))
        .args(["--", "sh", "-c"])
        .arg(format!(
            "touch {}; docker ps >/dev/null 2>&1 & sleep 1; kill $!",
            started.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = begun + Duration::from_secs(30);
    while !started.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let to_command = begun.elapsed();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    check(to_command < Duration::from_secs(10), || {
        format!("the command started {to_command:?} after the run:\n{text}")
    })?;
    check(status.is_some(), || {
        format!("the run had not ended 30 s after it began:\n{text}")
    })?;
    // The command reached the engine (its ping was answered), so what it made may be there: exit 3.
    check(status.and_then(|s| s.code()) == Some(3), || {
        format!("{status:?}, not 3:\n{text}")
    })?;
    check(text.matches("wedged engine").count() == 2, || {
        format!("the start and the end should each say it once:\n{text}")
    })?;
    check(text.contains("cargo cleantest sweep --session"), || {
        format!("the end does not say how to retry:\n{text}")
    })?;
    assert_no_survivors(&mark);
    Ok(())
}
