//! The cells of "never touch what is not ours" (issue 24, A and B.6, B.10): each builds foreign
//! resources (labelled `ct-it.foreign=<mark>`, so a failing cell can remove them by label), lets a
//! session act on them through the proxy as a hostile suite would, and checks that they are all still
//! there and unchanged. Prunes run only against a private dockerd: were the scoping broken, a prune on
//! the shared engine would remove other people's resources.

use std::path::Path;
use std::process::Command;

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    let mut prunes = trial(
        "prunes_in_a_session_remove_only_the_sessions_own",
        prunes_are_scoped,
    );
    prunes.unavailable = private_engine_problem();
    vec![
        trial(
            "volumes_a_session_container_mounts_from_elsewhere_are_never_removed",
            foreign_volumes_kept,
        ),
        prunes,
        trial(
            "actions_on_foreign_objects_and_unlisted_calls_are_refused",
            foreign_actions_refused,
        ),
        trial(
            "host_config_spellings_top_level_binds_and_start_bodies_cannot_make_unlabelled_volumes",
            host_config_read_as_the_engine_reads_it,
        ),
        trial(
            "docker_update_cannot_lift_a_container_past_max_memory",
            update_is_guarded,
        ),
    ]
}

/// Removes what a cell made outside any session, by its label, on the engine at `host`.
fn remove_foreign(host: Option<&str>, mark: &str) {
    let filter = format!("label=ct-it.foreign={mark}");
    let prefix = host.map(|h| format!("-H {h} ")).unwrap_or_default();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker {prefix}ps -aq --filter {filter} | xargs -r docker {prefix}rm -f; \
             docker {prefix}volume ls -q --filter {filter} | xargs -r docker {prefix}volume rm; \
             docker {prefix}network ls -q --filter {filter} | xargs -r docker {prefix}network rm"
        ))
        .output();
}

/// The cell's foreign objects still there: `(kind, name)` pairs, checked with `docker KIND inspect`.
fn still_there(host: Option<&str>, objects: &[(&str, String)]) -> Result<(), Failed> {
    for (kind, name) in objects {
        let mut command = Command::new("docker");
        if let Some(h) = host {
            command.args(["-H", h]);
        }
        let ok = command
            .args([kind, "inspect", name])
            .output()
            .is_ok_and(|o| o.status.success());
        check(ok, || format!("the foreign {kind} {name} was removed"))?;
    }
    Ok(())
}

fn session(mark: &str, state: &Path, script: &str) -> std::process::Output {
    run(exec_in_session(mark, state).args(["--", "sh", "-c", script]))
}

/// `--volumes-from` a foreign container and a top-level `Binds` of an existing volume: before, both
/// volumes were recorded as the session's anonymous ones and removed by its sweep or a stale sweep.
/// Joining a foreign container's volumes is refused unless the profile allows foreign objects, so it
/// runs under `proxy.allow-foreign = true`.
fn foreign_volumes_kept() -> Result<(), Failed> {
    let mark = unique_mark("foreign-vol");
    let state = temp_dir("foreign-vol");
    let label = format!("ct-it.foreign={mark}");
    let existing = format!("{mark}-existing");
    docker(&["volume", "create", "--label", &label, &existing]);
    // A foreign container with an anonymous volume (64 hex digits, as the session's own would be).
    let owner = docker(&[
        "create",
        "--label",
        &label,
        "--mount",
        &format!("type=volume,destination=/data,volume-label={label}"),
        image::IMAGE,
        "true",
    ]);
    let anonymous = docker(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", &owner]);
    let script = format!(
        "set -e\nsock=${{DOCKER_HOST#unix://}}\n\
         docker run --rm --volumes-from {owner} {image} true\n\
         curl -sf -o /dev/null --unix-socket \"$sock\" -X POST -H 'Content-Type: application/json' \
           -d '{{\"Image\":\"{image}\",\"Cmd\":[\"true\"],\"Binds\":[\"{existing}:/e\"]}}' \
           'http://docker/containers/create?name={mark}-top'\n",
        image = image::IMAGE,
    );
    let workspace = Workspace::with_profile(&mark, "proxy.allow-foreign = true");
    let out = run(exec_in_session(&mark, &state)
        .current_dir(&workspace.0)
        .args(["--", "sh", "-c", &script]));
    drop(workspace);
    // The foreign container goes first, as it would in real life: then only the record protects them.
    let _ = docker(&["rm", &owner]);
    let stale = run(Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
        .env("CLEANTEST_STATE_DIR", &*state)
        .args(["sweep", "--stale"]));
    let result = check_success(&out)
        .and_then(|_| {
            still_there(
                None,
                &[("volume", existing.clone()), ("volume", anonymous.clone())],
            )
        })
        .and_then(|_| {
            check(stale.status.success(), || {
                format!("stale sweep: {}", stderr(&stale))
            })
        })
        .and_then(|_| {
            let text = format!("{}{}", stdout(&out), stderr(&out));
            check(
                !text.contains(&anonymous) && !text.contains(&existing),
                || format!("the session's report names a foreign volume:\n{text}"),
            )
        });
    remove_foreign(None, &mark);
    result?;
    let left = marked(&mark);
    check(left.is_empty(), || format!("left {left:?}"))
}

/// `docker container|volume|network|image prune` inside a session, on a private engine holding a
/// stopped container, an unused volume, an unused network and a dangling image that are not the
/// session's: they all stay, and the session's own stopped container goes.
fn prunes_are_scoped() -> Result<(), Failed> {
    let engine = PrivateEngine::start()?;
    let host = engine.host();
    let mark = unique_mark("foreign-prune");
    let state = temp_dir("foreign-prune");
    let label = format!("ct-it.foreign={mark}");
    let d = |args: &[&str]| {
        let mut all = vec!["-H", &host];
        all.extend_from_slice(args);
        docker(&all)
    };
    let stopped = d(&["create", "--label", &label, image::IMAGE, "true"]);
    let volume = d(&["volume", "create", "--label", &label]);
    let network = d(&[
        "network",
        "create",
        "--label",
        &label,
        &format!("{mark}-net"),
    ]);
    // An image no container uses: `image prune -a` takes it unless kept to the session.
    let unused = format!("{mark}-img:1");
    d(&["tag", image::IMAGE, &unused]);
    let script = format!(
        "set -e\n\
         docker create --name {mark}-own {image} true >/dev/null\n\
         docker container prune -f >/dev/null\n\
         docker volume prune -f >/dev/null\n\
         docker network prune -f >/dev/null\n\
         docker image prune -af >/dev/null\n\
         if docker inspect {mark}-own >/dev/null 2>&1; then echo own-kept; fi\n",
        image = image::IMAGE,
    );
    let out = run(exec_in_session(&mark, &state)
        .env("DOCKER_HOST", &host)
        .args(["--", "sh", "-c", &script]));
    let result = check_success(&out)
        .and_then(|_| {
            still_there(
                Some(&host),
                &[
                    ("container", stopped.clone()),
                    ("volume", volume.clone()),
                    ("network", network.clone()),
                    ("image", unused.clone()),
                ],
            )
        })
        .and_then(|_| {
            check(!stdout(&out).contains("own-kept"), || {
                format!(
                    "the session's own stopped container was not pruned:\n{}",
                    stdout(&out)
                )
            })
        })
        .and_then(|_| engine.check_host_untouched());
    remove_foreign(Some(&host), &mark);
    result
}

/// A foreign running container: a session can read it (inspect, logs) but not kill, remove, update,
/// exec into, rename or connect it; and a call the table does not list (a plugin install) is refused.
/// With `proxy.allow-foreign = true` in the profile, the kill goes through.
fn foreign_actions_refused() -> Result<(), Failed> {
    let mark = unique_mark("foreign-act");
    let state = temp_dir("foreign-act");
    let foreign = Foreign::start(&mark);
    let victim = foreign.0.clone();
    let net = Foreign::network(&mark);
    let short = &victim[..12];
    let script = format!(
        "sock=${{DOCKER_HOST#unix://}}\n\
         docker inspect {short} >/dev/null && echo read-ok\n\
         for action in 'kill {short}' 'rm -f {short}' 'stop -t 0 {short}' 'pause {short}' \
           'update --cpu-shares 2 {short}' 'exec {short} true' 'rename {short} {mark}-renamed' \
           'network connect {mark}-net {short}' 'network rm {mark}-net'; do\n\
           if docker $action >/dev/null 2>&1; then echo \"allowed: $action\"; fi\n\
         done\n\
         code=$(curl -s -o /dev/null -w '%{{http_code}}' --unix-socket \"$sock\" -X POST \
           'http://docker/plugins/pull?remote=x')\n\
         echo \"plugin $code\"\n",
    );
    let out = session(&mark, &state, &script);
    let text = stdout(&out);
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &victim]) == "true";
    let result = check_success(&out)
        .and_then(|_| {
            check(text.contains("read-ok"), || {
                format!("a read was refused:\n{text}")
            })
        })
        .and_then(|_| {
            check(!text.contains("allowed:") && running, || {
                format!(
                    "an action on the foreign container went through (running: {running}):\n{text}"
                )
            })
        })
        .and_then(|_| still_there(None, &[("network", net.clone())]))
        .and_then(|_| {
            check(text.contains("plugin 403"), || {
                format!("unlisted call:\n{text}")
            })
        });
    if result.is_err() {
        remove_foreign(None, &mark);
        return result;
    }
    // Opened by the profile: the same kill goes through.
    let workspace = Workspace::with_profile(&mark, "proxy.allow-foreign = true");
    let out = run(exec_in_session(&mark, &state)
        .current_dir(&workspace.0)
        .args(["--", "docker", "kill", short]));
    let killed = docker(&["inspect", "-f", "{{.State.Running}}", &victim]) == "false";
    remove_foreign(None, &mark);
    drop(workspace);
    check(out.status.success() && killed, || {
        format!("allow-foreign did not allow the kill: {}", stderr(&out))
    })
}

/// Volumes named only in places the engine reads besides `HostConfig.Binds`: top-level `Binds` with no
/// HostConfig, a second spelling of HostConfig, and a start body on API 1.23. Each is created labelled
/// (and swept) or refused; none is left.
fn host_config_read_as_the_engine_reads_it() -> Result<(), Failed> {
    let mark = unique_mark("foreign-hc");
    let state = temp_dir("foreign-hc");
    let image = image::IMAGE;
    let bodies = [
        (
            "top",
            format!(r#"{{"Image":"{image}","Cmd":["true"],"Binds":["{mark}-top:/t"]}}"#),
        ),
        (
            "two",
            format!(
                r#"{{"Image":"{image}","Cmd":["true"],"HostConfig":{{"Memory":0}},"hostconfig":{{"Binds":["{mark}-two:/t"]}}}}"#
            ),
        ),
    ];
    let mut script = String::from("sock=${DOCKER_HOST#unix://}\n");
    for (name, body) in &bodies {
        script.push_str(&format!(
            "curl -s -o /dev/null --unix-socket \"$sock\" -X POST -H 'Content-Type: application/json' \
             -d '{body}' 'http://docker/containers/create?name={mark}-{name}'\n"
        ));
    }
    script.push_str(&format!(
        "docker create --name {mark}-late {image} true >/dev/null\n\
         code=$(curl -s -o /dev/null -w '%{{http_code}}' --unix-socket \"$sock\" -X POST \
           -H 'Content-Type: application/json' -d '{{\"Binds\":[\"{mark}-start:/s\"]}}' \
           'http://docker/v1.23/containers/{mark}-late/start')\n\
         echo \"start $code\"\n\
         for v in {mark}-top {mark}-two {mark}-start; do\n\
           l=$(docker volume inspect -f '{{{{index .Labels \"cleantest.session\"}}}}' $v 2>/dev/null) \
             && echo \"$v label=$l\"\n\
         done\n\
         echo \"session=$CLEANTEST_SESSION\"\n"
    ));
    let out = session(&mark, &state, &script);
    let text = stdout(&out);
    let left: Vec<String> = ["top", "two", "start"]
        .iter()
        .map(|n| format!("{mark}-{n}"))
        .filter(|v| !matching(None, &format!("name={v}")).is_empty() || volume_exists(v))
        .collect();
    for v in &left {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", v])
            .output();
    }
    let session = text
        .lines()
        .find_map(|l| l.strip_prefix("session="))
        .unwrap_or_default()
        .to_string();
    check_success(&out)?;
    check(text.contains("start 400"), || {
        format!("a start body was not refused:\n{text}")
    })?;
    for name in ["top", "two"] {
        let want = format!("{mark}-{name} label={session}");
        check(!session.is_empty() && text.contains(&want), || {
            format!("{mark}-{name} was not created labelled:\n{text}")
        })?;
    }
    check(left.is_empty(), || format!("left behind: {left:?}\n{text}"))
}

fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Under `--max-memory 128m`, a container created with 64m cannot be updated to 4g.
fn update_is_guarded() -> Result<(), Failed> {
    let mark = unique_mark("foreign-update");
    let state = temp_dir("foreign-update");
    let script = format!(
        "set -e\n\
         docker run -d --name {mark}-c --memory 64m --memory-swap 64m {image} sleep 1000 >/dev/null\n\
         if docker update --memory 4g --memory-swap 4g {mark}-c >/dev/null 2>&1; then echo lifted; fi\n\
         docker inspect -f 'memory={{{{.HostConfig.Memory}}}}' {mark}-c\n\
         docker update --cpu-shares 512 {mark}-c >/dev/null && echo cpu-ok\n",
        image = image::IMAGE,
    );
    let out = run(exec_in_session(&mark, &state).args([
        "--max-memory",
        "128m",
        "--",
        "sh",
        "-c",
        &script,
    ]));
    let text = stdout(&out);
    check_success(&out)?;
    check(
        !text.contains("lifted") && text.contains(&format!("memory={}", 64 << 20)),
        || format!("the update went past max-memory:\n{text}"),
    )?;
    check(text.contains("cpu-ok"), || {
        format!(
            "an update within the limits was refused:\n{text}\n{}",
            stderr(&out)
        )
    })?;
    let left = marked(&mark);
    check(left.is_empty(), || format!("left {left:?}"))
}
