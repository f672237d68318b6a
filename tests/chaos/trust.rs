//! The trust cells (issue 12): each reproduces a defect an adversarial review found against the real
//! engine, and fails if it comes back. Never touch what isn't ours; let nothing escape.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    let mut on_record_engine = trial(
        "a_stale_record_is_swept_on_the_engine_it_names",
        record_engine,
    );
    on_record_engine.unavailable = private_engine_problem();
    vec![
        on_record_engine,
        trial(
            "a_live_session_is_never_swept_from_another_state_dir",
            live_session_from_another_state_dir,
        ),
        trial(
            "the_proxy_labels_or_refuses_every_create_body",
            proxy_fails_closed,
        ),
        trial(
            "a_nested_session_sweeps_its_own_containers",
            nested_sessions,
        ),
        trial(
            "a_corrupt_record_is_swept_by_its_directory_name",
            corrupt_record,
        ),
        trial(
            "a_process_that_keeps_forking_dies_with_the_run",
            forker_dies_with_the_run,
        ),
        trial(
            "a_dead_sessions_processes_are_killed_by_the_stale_sweep",
            dead_sessions_processes,
        ),
        trial(
            "a_session_volume_a_foreign_container_uses_is_named_at_once",
            volume_in_foreign_use,
        ),
        trial(
            "a_dead_sessions_processes_are_killed_by_a_sweep_from_another_state_dir",
            || dead_session_without_a_record(&["sweep", "--all", "--yes"]),
        ),
        trial(
            "a_dead_sessions_processes_are_killed_by_a_run_start_in_another_state_dir",
            || dead_session_without_a_record(&["exec", "--no-lock", "--", "true"]),
        ),
    ]
}

/// The engine the dead sessions of these cells were recorded on: the default one.
const ENGINE: &str = "unix:///var/run/docker.sock";

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_cargo-cleantest")
}

/// `cargo cleantest sweep ARGS` with its own state directory.
fn sweep(state: &Path, args: &[&str]) -> std::process::Output {
    run(Command::new(exe())
        .env("CLEANTEST_STATE_DIR", state)
        .arg("sweep")
        .args(args))
}

/// Session A holds a container while sweeps run from state directory B, as another user, sudo or a CI
/// job with its own HOME would: none of them may remove it.
fn live_session_from_another_state_dir() -> Result<(), Failed> {
    let mark = unique_mark("trust-live");
    let (state_a, state_b) = (temp_dir("trust-a"), temp_dir("trust-b"));
    let gate = state_a.join("gate");
    let script = format!(
        r#"set -e
        docker run -d --label ct-it.mark=$CT_IT_MARK {image} sleep 1000 >/dev/null
        echo "session=$CLEANTEST_SESSION"
        read line < {gate}"#,
        image = image::IMAGE,
        gate = gate.display()
    );
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::S_IRWXU)?;
    let mut a = exec_in_session(&mark, &state_a)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    let session = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.strip_prefix("session=").map(str::to_string))
        .unwrap_or_default();
    let result = (|| {
        check(!session.is_empty(), || "session A did not start".into())?;
        let held = marked(&mark);
        check(held.len() == 1, || format!("session A holds {held:?}"))?;
        let all = sweep(&state_b, &["--all", "--dry-run"]);
        check(!stdout(&all).contains(&session), || {
            format!("--all would sweep live session A:\n{}", stdout(&all))
        })?;
        let older = sweep(
            &state_b,
            &["--older-than", "0s", "--dry-run", "--other-hosts"],
        );
        check(!stdout(&older).contains(&session), || {
            format!(
                "--older-than would sweep live session A:\n{}",
                stdout(&older)
            )
        })?;
        let named = sweep(&state_b, &["--session", &session]);
        check(named.status.code() == Some(2), || {
            format!("--session of a live session: {:?}", named.status)
        })?;
        check(marked(&mark) == held, || {
            "session A's container was removed while A ran".into()
        })
    })();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gate)?
        .write_all(b"go\n")?;
    let status = a.wait()?;
    result?;
    check(status.success(), || format!("session A: {status:?}"))?;
    nothing_left(&mark)
}

/// No process carries the mark and no resource its label.
fn nothing_left(mark: &str) -> Result<(), Failed> {
    assert_no_survivors(mark);
    let left = marked(mark);
    check(left.is_empty(), || format!("left {left:?}"))
}

/// Create bodies that once got through unlabelled, or with another session's label: each is either
/// refused by the proxy or created with this session's label. Nothing named after the mark may be left.
fn proxy_fails_closed() -> Result<(), Failed> {
    let mark = unique_mark("trust-proxy");
    let state = temp_dir("trust-proxy");
    let big = state.join("big.json");
    // Over the proxy's 16 MiB bound: a JSON object whose one string fills it.
    {
        let mut f = std::fs::File::create(&big)?;
        f.write_all(b"{\"Image\":\"x\",\"Env\":[\"A=")?;
        f.write_all(&vec![b'a'; 17 << 20])?;
        f.write_all(b"\"]}")?;
    }
    let image = image::IMAGE;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let cases = [
        (
            "lower",
            format!(
                r#"{{"Image":"{image}","Cmd":["true"],"labels":{{"cleantest.session":"zzzother","ct-it.mark":"{mark}"}}}}"#
            ),
        ),
        (
            "trailing",
            format!(
                r#"{{"Image":"{image}","Cmd":["true"],"Labels":{{"ct-it.mark":"{mark}"}}}} {{"x":1}}"#
            ),
        ),
        (
            "surrogate",
            format!(
                r#"{{"Image":"{image}","Cmd":["true"],"Labels":{{"ct-it.mark":"{mark}"}},"Hostname":"\ud800"}}"#
            ),
        ),
        (
            "deep",
            format!(
                r#"{{"Image":"{image}","Cmd":["true"],"Labels":{{"ct-it.mark":"{mark}"}},"X":{deep}}}"#
            ),
        ),
    ];
    let mut script = String::from("set -e\nsock=${DOCKER_HOST#unix://}\n");
    for (name, body) in &cases {
        let file = state.join(format!("{name}.json"));
        std::fs::write(&file, body)?;
        script.push_str(&format!(
            "code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 30 --unix-socket \"$sock\" \
             -X POST -H 'Content-Type: application/json' --data-binary @{file} \
             'http://docker/containers/create?name={mark}-{name}')\n\
             label=$(docker inspect -f '{{{{index .Config.Labels \"cleantest.session\"}}}}' {mark}-{name} 2>/dev/null || true)\n\
             echo \"{name} $code $label\"\n",
            file = file.display()
        ));
    }
    script.push_str(&format!(
        "code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 60 --unix-socket \"$sock\" \
         -X POST -H 'Content-Type: application/json' --data-binary @{big} \
         'http://docker/volumes/create')\necho \"big $code\"\necho \"session=$CLEANTEST_SESSION\"\n",
        big = big.display()
    ));
    let out = run(exec_in_session(&mark, &state).args(["--", "sh", "-c", &script]));
    let text = stdout(&out);
    // Whatever happened, remove what an unlabelled create left, by its name, before judging.
    let leaked: Vec<String> = cases
        .iter()
        .map(|(name, _)| format!("{mark}-{name}"))
        .filter(|name| !matching(None, &format!("name={name}")).is_empty())
        .collect();
    for name in &leaked {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
    }
    check_success(&out)?;
    let session = text
        .lines()
        .find_map(|l| l.strip_prefix("session="))
        .unwrap_or_default();
    check(!session.is_empty(), || format!("no session:\n{text}"))?;
    for (name, _) in &cases {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ok = match fields.as_slice() {
            [_, "400"] => true,
            [_, "201", label] => *label == session,
            _ => false,
        };
        check(ok, || {
            format!("{name}: neither refused nor labelled with {session}: {line:?}\n{text}")
        })?;
    }
    check(text.contains("big 413"), || {
        format!("an oversized create body was not refused with 413:\n{text}")
    })?;
    check(leaked.is_empty(), || {
        format!("the session's sweep missed {leaked:?}")
    })?;
    let left = marked(&mark);
    check(left.is_empty(), || format!("left {left:?}"))
}

/// `exec` inside `exec`: the inner run's sweep removes the container it created, although the outer
/// proxy labels it with the outer session; and the outer run leaves nothing either.
fn nested_sessions() -> Result<(), Failed> {
    let mark = unique_mark("trust-nested");
    let state = temp_dir("trust-nested");
    let script = format!(
        r#"set -e
        {exe} exec --no-lock -- sh -c 'docker run -d --label ct-it.mark=$CT_IT_MARK {image} sleep 1000 >/dev/null'
        echo "after inner: $(docker ps -aq --filter label=ct-it.mark=$CT_IT_MARK | wc -l)""#,
        exe = exe(),
        image = image::IMAGE
    );
    let out = run(exec_in_session(&mark, &state).args(["--", "sh", "-c", &script]));
    let text = stdout(&out);
    check_success(&out)?;
    check(text.contains("after inner: 0"), || {
        format!("the inner session's sweep missed its container:\n{text}")
    })?;
    nothing_left(&mark)
}

/// A record that is not JSON, and one whose `id` was edited to name another session: each stands for the
/// session its directory names. `sweep --stale` sweeps that session's resources, and nothing of the
/// session the edited id names, then removes both records.
fn corrupt_record() -> Result<(), Failed> {
    let mark = unique_mark("trust-corrupt");
    let state = temp_dir("trust-corrupt");
    let ids: Vec<String> = ["a", "b", "victim"]
        .iter()
        .map(|s| format!("{}{s}", mark.replace('-', "")))
        .collect();
    for id in &ids {
        session_volume(None, id, &mark);
    }
    let dir = |id: &str| state.join("sessions").join(id);
    std::fs::create_dir_all(dir(&ids[0]))?;
    std::fs::write(dir(&ids[0]).join("record.json"), "{ not json")?;
    write_record(&state, &ids[1], &ids[2], ENGINE)?;
    let out = sweep(&state, &["--stale"]);
    let left = matching(None, &format!("label=ct-it.mark={mark}"));
    // The victim's volume must stay; remove it (by its own label) whatever happened.
    let _ = Command::new("docker")
        .args(["volume", "rm", &format!("{}-vol", ids[2])])
        .output();
    for id in &ids[..2] {
        let _ = Command::new("docker")
            .args(["volume", "rm", &format!("{id}-vol")])
            .output();
    }
    check(out.status.success(), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })?;
    check(left == vec![format!("{}-vol", ids[2])], || {
        format!("after sweep --stale: {left:?}\n{}", stdout(&out))
    })?;
    check(!dir(&ids[0]).exists() && !dir(&ids[1]).exists(), || {
        "the corrupt records were not removed".into()
    })
}

/// Kills (by pid, as found by our own mark) whatever a failing cell left running, then fails with `what`.
fn no_survivors(mark: &str, what: &str) -> Result<(), Failed> {
    let left = processes_with_mark(mark);
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    check(left.is_empty(), || {
        format!("{what}: {} process(es) survived", left.len())
    })
}

/// `setsid sh -c 'while :; do sleep 1000 & done'` once left 17-53 survivors of a run that exited 0.
fn forker_dies_with_the_run() -> Result<(), Failed> {
    let mark = unique_mark("trust-fork");
    let state = temp_dir("trust-fork");
    let flag = state.join("forking");
    // The forker says when it has forked 50 children; the command then ends at once, so the end of the
    // run races with a process forking as fast as it can.
    let script = format!(
        r#"setsid sh -c 'n=0; while :; do sleep 1000 & n=$((n+1)); [ $n = 50 ] && : > {flag}; done' &
        while [ ! -e {flag} ]; do :; done
        exit 0"#,
        flag = flag.display()
    );
    let out = run(exec_in_session(&mark, &state).args(["--", "sh", "-c", &script]));
    // Killed processes take a moment to be torn down: wait for that, bounded, before judging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !processes_with_mark(&mark).is_empty() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    no_survivors(&mark, "after the run")?;
    check(out.status.success(), || format!("{:?}", out.status))
}

/// The runner and its reaper both SIGKILLed leave processes carrying the session: the stale sweep kills
/// them before it forgets the session.
fn dead_sessions_processes() -> Result<(), Failed> {
    let mark = unique_mark("trust-dead");
    let state = temp_dir("trust-dead");
    let id = mark.replace('-', "");
    let dir = write_record(&state, &id, &id, ENGINE)?;
    let mut survivor = Command::new("setsid")
        .args(["sleep", "1000"])
        .env("CLEANTEST_SESSION", &id)
        .env("CT_IT_MARK", &mark)
        .spawn()?;
    let out = sweep(&state, &["--stale"]);
    // Reap it if it was killed (it is our child); a survivor is killed by `no_survivors`.
    let status = survivor.try_wait()?;
    let killed = status.is_some() || processes_with_mark(&mark).is_empty();
    let result = no_survivors(&mark, "after sweep --stale");
    let _ = survivor.wait();
    result?;
    check(killed && out.status.success() && !dir.exists(), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })
}

/// This host's identity as the owner labels write it (`<boot id>/<pid namespace inode>`).
fn host_identity() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ns = ns
        .trim_start_matches("pid:[")
        .trim_end_matches(']')
        .to_string();
    format!("{}/{ns}", boot.trim())
}

/// A session whose record is in another state directory (or lost), proven dead on this host by the
/// owner labels of its volume, with a process still carrying it. Before, only the sweep holding its
/// record killed its processes; `sweep --all --yes` from here removed the volume and left the process,
/// and a run's start-of-run stale sweep never looked. `command` is either.
fn dead_session_without_a_record(command: &[&str]) -> Result<(), Failed> {
    let mark = unique_mark("trust-norecord");
    let state = temp_dir("trust-norecord");
    let id = mark.replace('-', "");
    // A runner that is gone: a pid that exited, with a start time no live process has.
    let mut gone = Command::new("true").spawn()?;
    let dead_pid = gone.id();
    gone.wait()?;
    docker(&[
        "volume",
        "create",
        "--label",
        &format!("cleantest.session={id}"),
        "--label",
        &format!("cleantest.host={}", host_identity()),
        "--label",
        &format!("cleantest.pid={dead_pid}"),
        "--label",
        "cleantest.pid-start=1",
        "--label",
        &format!("ct-it.mark={mark}"),
        &format!("{id}-vol"),
    ]);
    let mut survivor = Command::new("setsid")
        .args(["sleep", "1000"])
        .env("CLEANTEST_SESSION", &id)
        .env("CT_IT_MARK", &mark)
        .spawn()?;
    let out = run(Command::new(exe())
        .env("CLEANTEST_STATE_DIR", &*state)
        .args(command));
    let status = survivor.try_wait()?;
    let killed = status.is_some() || processes_with_mark(&mark).is_empty();
    let result = no_survivors(&mark, &format!("after {command:?} from another state dir"));
    let _ = survivor.wait();
    for v in marked(&mark) {
        let _ = docker(&["volume", "rm", &v]);
    }
    result?;
    check(killed && out.status.success(), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })?;
    nothing_left(&mark)
}

/// A dead session's volume, used by a container that is not the session's: the sweep cannot remove it
/// and must not remove the container. It used to retry the 409 for its whole 60 s bound, on every
/// later run's stale sweep too, without naming the volume's user. Now it names it at once; once the
/// user is gone, the next sweep removes the volume and forgets the session.
fn volume_in_foreign_use() -> Result<(), Failed> {
    let mark = unique_mark("trust-inuse");
    let state = temp_dir("trust-inuse");
    let id = mark.replace('-', "");
    session_volume(None, &id, &mark);
    let dir = write_record(&state, &id, &id, ENGINE)?;
    let user = docker(&[
        "run",
        "-d",
        "--label",
        &format!("ct-it.foreign={mark}"),
        "-v",
        &format!("{id}-vol:/data"),
        image::IMAGE,
        "sleep",
        "1000",
    ]);
    let remove_user = || {
        let _ = Command::new("docker")
            .args(["rm", "-f", &user])
            .stdout(Stdio::null())
            .status();
    };
    for attempt in ["first", "second"] {
        let started = std::time::Instant::now();
        let out = sweep(&state, &["--stale"]);
        let took = started.elapsed();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        let named = text.contains(&user[..12]);
        let kept = docker(&["inspect", "-f", "{{.State.Running}}", &user]) == "true";
        if !(out.status.code() == Some(3) && named && kept && dir.exists())
            || took > std::time::Duration::from_secs(20)
        {
            remove_user();
            // A failing cell leaves nothing either: the volume is this cell's own, by its mark.
            for v in marked(&mark) {
                let _ = docker(&["volume", "rm", &v]);
            }
            return Err(format!(
                "{attempt} sweep: {:?} in {took:?}, user named: {named}, user running: {kept}, \
                 record kept: {}\n{text}",
                out.status,
                dir.exists()
            )
            .into());
        }
    }
    remove_user();
    let out = sweep(&state, &["--stale"]);
    nothing_left(&mark)?;
    check(out.status.success() && !dir.exists(), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })
}

/// Creates the volume `<id>-vol` of session `id`, carrying the mark, on the engine at `host`.
fn session_volume(host: Option<&str>, id: &str, mark: &str) {
    let mut args: Vec<String> = host
        .map(|h| vec!["-H".into(), h.into()])
        .unwrap_or_default();
    args.extend([
        "volume".into(),
        "create".into(),
        "--label".into(),
        format!("cleantest.session={id}"),
        "--label".into(),
        format!("ct-it.mark={mark}"),
        format!("{id}-vol"),
    ]);
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Writes `sessions/<dir>/record.json` for a dead session of this host whose record says `id`.
fn write_record(
    state: &Path,
    dir: &str,
    id: &str,
    endpoint: &str,
) -> std::io::Result<std::path::PathBuf> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let dir = state.join("sessions").join(dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("record.json"),
        format!(
            r#"{{"id":"{id}","pid":1,"host":"{}","started":0,"workspace":"/","command":"x","docker_endpoint":"{endpoint}","status":"running"}}"#,
            host.trim()
        ),
    )?;
    Ok(dir)
}

/// A dead session recorded on engine X, swept from a run on engine Y: it is swept on X. A record whose
/// engine does not answer is kept, and the sweep says so and exits 3.
fn record_engine() -> Result<(), Failed> {
    let engine = PrivateEngine::start()?;
    let mark = unique_mark("trust-engine");
    let state = temp_dir("trust-engine");
    let id = mark.replace('-', "");
    let lost = format!("{id}lost");
    session_volume(Some(&engine.host()), &id, &mark);
    let on_x = write_record(&state, &id, &id, &engine.host())?;
    let unreachable = write_record(&state, &lost, &lost, "unix:///nonexistent-cleantest/d.sock")?;
    let out = run(Command::new(exe())
        .env("CLEANTEST_STATE_DIR", &*state)
        .env_remove("DOCKER_HOST")
        .args(["sweep", "--stale"]));
    let left = marked_at(Some(&engine.host()), &mark);
    check(left.is_empty(), || {
        format!("left on the record's engine: {left:?}\n{}", stdout(&out))
    })?;
    check(!on_x.exists(), || "the swept record was kept".into())?;
    check(unreachable.exists(), || {
        "the record of an unreachable engine was deleted".into()
    })?;
    check(out.status.code() == Some(3), || {
        format!("{:?}\n{}{}", out.status, stdout(&out), stderr(&out))
    })?;
    engine.check_host_untouched()
}
