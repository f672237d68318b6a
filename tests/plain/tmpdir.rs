//! Nothing left on disk (issue 39): every process of a run gets a `TMPDIR` of the session's (one per
//! binary in shared mode, one per test under `--isolate`), and what a test leaves there is removed
//! when its unit ends and said once in the summary; a planted symlink is removed, not followed;
//! `--keep-on-failure` keeps the failed test's directory; a SIGKILLed runner's directory goes with
//! its reaper, or with the next run's start when the reaper died too. Each run is given a `TMPDIR` of
//! its own (the system's temporary directory, as the runner sees it), so what is left there is seen.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::reaper_of;
use common::*;

const MODES: [(&str, &[&str]); 2] = [("shared", &[]), ("isolated", &["--isolate"])];

/// A run of one test of the fixture's `temp` target with the runner's `options`, and `tmp` as the
/// runner's own `TMPDIR`.
fn one_test(mark: &str, tmp: &Path, options: &[&[&str]], test: &str) -> Command {
    let mut command = cleantest("tmpdir", mark);
    command.env("TMPDIR", tmp);
    for o in options {
        command.args(*o);
    }
    command.args(["--test", "temp", "--", "--exact", test]);
    command
}

/// `<tmp>/cleantest-<uid>`: where the sessions of a runner whose `TMPDIR` is `tmp` keep theirs.
fn sessions_root(tmp: &Path) -> PathBuf {
    tmp.join(format!("cleantest-{}", nix::unistd::geteuid().as_raw()))
}

/// The session directories still under `tmp`.
fn sessions_left(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(sessions_root(tmp))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `dir` (a unit's directory a test saw, or a kept one) is gone, and so is every session directory
/// under `tmp`.
fn assert_all_gone(tmp: &Path, dir: &str, what: &str) {
    assert!(!Path::new(dir).exists(), "{what}: {dir} is still there");
    assert_eq!(sessions_left(tmp), Vec::<PathBuf>::new(), "{what}");
}

#[test]
fn a_timed_out_tests_files_are_removed_and_said() {
    for (mode_name, mode) in MODES {
        let mark = unique_mark(&format!("tmp-timeout-{mode_name}"));
        let tmp = temp_dir("tmp-timeout");
        let ready = tmp.join("ready");
        let options = [mode, &["--timeout", "3s"]];
        let out = run(one_test(&mark, &tmp, &options, "leaves_a_file_and_hangs")
            .env("CT_TMPDIR_READY", &ready));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(101), "{mode_name}: {text}");
        assert!(text.contains("TIMEOUT"), "{mode_name}: {text}");
        let unit = match mode_name {
            "shared" => "ct-tmpdir::temp: ",
            _ => "ct-tmpdir::temp::leaves_a_file_and_hangs: ",
        };
        assert!(
            text.contains(&format!(
                "{unit}left 1 file(s) (1.0 MiB) in its temporary directory (removed)"
            )),
            "{mode_name}: the summary does not say what was left: {text}"
        );
        assert!(text.contains("mine/big"), "{mode_name}: {text}");
        let seen = std::fs::read_to_string(&ready).unwrap();
        assert!(
            seen.starts_with(&sessions_root(&tmp).display().to_string()),
            "{mode_name}: the test's temporary directory was {seen}"
        );
        assert_all_gone(&tmp, &seen, mode_name);
        assert_no_survivors(&mark);
    }
}

#[test]
fn a_planted_symlink_is_removed_and_its_target_untouched() {
    for (mode_name, mode) in MODES {
        let mark = unique_mark(&format!("tmp-link-{mode_name}"));
        let tmp = temp_dir("tmp-link");
        let outside = temp_dir("tmp-link-outside");
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::fs::write(outside.join("precious"), "keep me").unwrap();
        std::fs::write(outside.join("deep/more"), "me too").unwrap();
        let out = run(one_test(&mark, &tmp, &[mode], "plants_a_symlink")
            .env("CT_TMPDIR_OUTSIDE", outside.path()));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{mode_name}: {}", stderr(&out));
        assert!(
            text.contains("left 1 file(s)") && text.contains("        home"),
            "{mode_name}: the link is not reported: {text}"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("precious")).unwrap(),
            "keep me"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("deep/more")).unwrap(),
            "me too"
        );
        assert_eq!(sessions_left(&tmp), Vec::<PathBuf>::new(), "{mode_name}");
    }
}

#[test]
fn a_run_whose_tests_tidy_up_says_nothing() {
    for (mode_name, mode) in MODES {
        let tmp = temp_dir("tmp-tidy");
        let out = run(&mut one_test(
            &unique_mark("tmp-tidy"),
            &tmp,
            &[mode],
            "tidies_up",
        ));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{mode_name}: {}", stderr(&out));
        assert!(!text.contains("left behind"), "{mode_name}: {text}");
        assert_eq!(sessions_left(&tmp), Vec::<PathBuf>::new(), "{mode_name}");
    }
}

#[test]
fn temp_dir_in_a_test_is_the_sessions_unless_turned_off() {
    for (mode_name, mode) in MODES {
        let tmp = temp_dir("tmp-where");
        let report = tmp.join("report");
        let out = run(
            one_test(&unique_mark("tmp-where"), &tmp, &[mode], "reports_where")
                .env("CT_TMPDIR_REPORT", &report),
        );
        assert_eq!(out.status.code(), Some(0), "{mode_name}: {}", stderr(&out));
        let text = std::fs::read_to_string(&report).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], lines[1], "{mode_name}: temp_dir() is not TMPDIR");
        let root = sessions_root(&tmp).display().to_string();
        assert!(lines[0].starts_with(&root), "{mode_name}: {}", lines[0]);
        assert!(!Path::new(lines[0]).exists(), "{mode_name}: {}", lines[0]);
        // Turned off, by flag or environment: the runner's own TMPDIR, left alone.
        for off in [Some("--no-tmpdir"), None] {
            let flag = [off.unwrap_or("--quiet")];
            let mut command = one_test(
                &unique_mark("tmp-off"),
                &tmp,
                &[mode, &flag],
                "reports_where",
            );
            command.env("CT_TMPDIR_REPORT", &report);
            if off.is_none() {
                command.env("CLEANTEST_NO_TMPDIR", "1");
            }
            let out = run(&mut command);
            assert_eq!(out.status.code(), Some(0), "{off:?}: {}", stderr(&out));
            let text = std::fs::read_to_string(&report).unwrap();
            assert_eq!(
                text.lines().next(),
                Some(tmp.path().to_str().unwrap()),
                "{mode_name} {off:?}"
            );
        }
    }
}

#[test]
fn keep_on_failure_keeps_the_failed_tests_directory_until_swept() {
    for (mode_name, mode) in MODES {
        let tmp = temp_dir("tmp-keep");
        let options = [mode, &["--keep-on-failure"]];
        let out = run(&mut one_test(
            &unique_mark("tmp-keep"),
            &tmp,
            &options,
            "fails_with_evidence",
        ));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(101), "{mode_name}: {text}");
        assert!(
            text.contains("kept the temporary directories of failed tests"),
            "{mode_name}: {text}"
        );
        let unit = match mode_name {
            "shared" => "    ct-tmpdir::temp: ",
            _ => "    ct-tmpdir::temp::fails_with_evidence: ",
        };
        let kept = text
            .lines()
            .find_map(|l| l.strip_prefix(unit))
            .unwrap_or_else(|| panic!("{mode_name}: no kept directory named: {text}"));
        assert_eq!(
            std::fs::read_to_string(Path::new(kept).join("evidence")).unwrap(),
            "what went wrong"
        );
        let session = text
            .lines()
            .find_map(|l| l.strip_prefix("  clean up: cargo cleantest sweep --session "))
            .unwrap_or_else(|| panic!("{mode_name}: no clean-up line: {text}"));
        let swept = run(cleantest("tmpdir", &unique_mark("tmp-keep-sweep"))
            .env("TMPDIR", &*tmp)
            .args(["sweep", "--session", session]));
        assert!(
            stdout(&swept).contains(&format!(
                "removed the temporary directory of session {session}"
            )),
            "{mode_name}: {}{}",
            stdout(&swept),
            stderr(&swept)
        );
        assert_all_gone(&tmp, kept, mode_name);
    }
}

/// Starts the hanging test, waits until it has written its file, and returns the runner and the
/// directory the test saw.
fn start_hanging(
    mark: &str,
    tmp: &Path,
    mode: &[&str],
    state: &Path,
) -> (std::process::Child, String) {
    let ready = tmp.join("ready");
    let runner = one_test(mark, tmp, &[mode], "leaves_a_file_and_hangs")
        .env("CT_TMPDIR_READY", &ready)
        .env("CLEANTEST_STATE_DIR", state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready, Duration::from_secs(120));
    let seen = std::fs::read_to_string(&ready).unwrap();
    (runner, seen)
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Waits (bounded) until process `pid` has exited.
fn wait_gone(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !is_gone(&pid.to_string()) {
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_sigkilled_runners_directory_goes_with_its_reaper() {
    for (mode_name, mode) in MODES {
        let mark = unique_mark(&format!("tmp-sigkill-{mode_name}"));
        let tmp = temp_dir("tmp-sigkill");
        let state = temp_dir("tmp-sigkill-state");
        let (mut runner, seen) = start_hanging(&mark, &tmp, mode, &state);
        let reaper = reaper_of(runner.id()).expect("the run started no reaper");
        sigkill(runner.id());
        let _ = runner.wait();
        wait_gone(reaper, Duration::from_secs(60));
        assert_all_gone(&tmp, &seen, mode_name);
        assert_no_survivors(&mark);
    }
}

#[test]
fn a_directory_whose_runner_and_reaper_were_killed_goes_with_the_next_run() {
    let mark = unique_mark("tmp-both-killed");
    let tmp = temp_dir("tmp-both-killed");
    let state = temp_dir("tmp-both-killed-state");
    let (mut runner, seen) = start_hanging(&mark, &tmp, &[], &state);
    let reaper = reaper_of(runner.id()).expect("the run started no reaper");
    sigkill(reaper);
    wait_gone(reaper, Duration::from_secs(10));
    sigkill(runner.id());
    let _ = runner.wait();
    assert!(
        Path::new(&seen).exists(),
        "nothing was left to test the next run with"
    );
    // The hanging test outlived both (nothing was left to kill it): ours, ended by its pid.
    for pid in processes_with_mark(&mark) {
        sigkill(pid);
    }
    assert_no_survivors(&mark);
    let next = run(one_test(&unique_mark("tmp-next"), &tmp, &[], "tidies_up")
        .env("CLEANTEST_STATE_DIR", state.path()));
    assert_eq!(next.status.code(), Some(0), "{}", stderr(&next));
    assert!(!Path::new(&seen).exists(), "{seen} survived the next run");
    assert_eq!(sessions_left(&tmp), Vec::<PathBuf>::new());
}

/// A state directory too deep for a unix socket's path (as under a deep `HOME`): the session binds its
/// sockets in `/tmp/ct-<uid>/<session>/` instead. When the runner is SIGKILLed, its reaper removes that
/// directory too (it used to remove only the session's own directory, leaving the short one for good).
#[test]
fn a_sigkilled_runners_short_socket_directory_goes_with_its_reaper() {
    let mark = unique_mark("tmp-short-socket");
    let tmp = temp_dir("tmp-short-socket");
    let state = temp_dir(&format!("tmp-short-socket-state-{}", "s".repeat(60)));
    let (mut runner, _) = start_hanging(&mark, &tmp, &[], &state);
    let sessions: Vec<String> = std::fs::read_dir(state.join("sessions"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let short =
        PathBuf::from(format!("/tmp/ct-{}", nix::unistd::geteuid().as_raw())).join(&sessions[0]);
    assert!(
        short.is_dir(),
        "the sockets were not bound in {}",
        short.display()
    );
    let reaper = reaper_of(runner.id()).expect("the run started no reaper");
    sigkill(runner.id());
    let _ = runner.wait();
    wait_gone(reaper, Duration::from_secs(60));
    assert!(!short.exists(), "{} outlived the reaper", short.display());
    assert_no_survivors(&mark);
}
