//! The cells of "every reference pinned" (issue 35, A): a hostile suite names foreign objects where the
//! proxy once did not look (a name retargeted before the body arrives, the names a call writes, the
//! namespaces, volumes and networks a create joins). Each cell makes its foreign objects outside any
//! session (labelled `ct-it.foreign=<mark>`, removed by that label or by their own names), lets a
//! session try, and checks on the engine that every foreign object is unchanged.

use std::path::Path;
use std::process::Command;

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    vec![
        trial(
            "a_name_retargeted_before_the_body_arrives_never_reaches_the_foreign_container",
            retargeted_before_the_body,
        ),
        trial(
            "names_a_session_writes_never_take_a_foreign_images_name",
            foreign_names_kept,
        ),
        trial(
            "a_create_cannot_join_a_foreign_containers_namespaces_volumes_or_networks",
            joins_refused,
        ),
        trial(
            "refuse_host_access_refuses_privileged_host_namespaces_and_host_binds",
            host_access_refused,
        ),
    ]
}

fn session(mark: &str, state: &Path, script: &str) -> std::process::Output {
    run(exec_in_session(mark, state).args(["--", "sh", "-c", script]))
}

/// The session id a script printed as `session=ID`.
fn session_id(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("session="))
        .unwrap_or_default()
        .to_string()
}

/// Nothing carrying the session's label is left: containers, networks, volumes, images.
fn session_gone(session: &str) -> Result<(), Failed> {
    check(!session.is_empty(), || {
        "the script printed no session id".into()
    })?;
    let filter = format!("label=cleantest.session={session}");
    let mut left = matching(None, &filter);
    left.extend(
        docker(&["images", "-q", "--filter", &filter])
            .lines()
            .map(str::to_string),
    );
    check(left.is_empty(), || format!("the session left {left:?}"))
}

/// Removes what a cell made outside any session: containers and networks by its label.
fn remove_foreign(mark: &str) {
    let filter = format!("label=ct-it.foreign={mark}");
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker ps -aq --filter {filter} | xargs -r docker rm -f; \
             docker network ls -q --filter {filter} | xargs -r docker network rm"
        ))
        .output();
}

/// A raw request to the session's proxy whose headers go first, `between` runs (another client call,
/// to completion), then the body: `status=CODE` on stdout.
const RAW_CLIENT: &str = r#"
import os, socket, subprocess, sys
path, body, between = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["DOCKER_HOST"][len("unix://"):])
s.sendall(("POST %s HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\n\r\n" % (path, len(body))).encode())
subprocess.run(["sh", "-c", between], check=True)
s.sendall(body.encode())
answer = b""
while b"\r\n" not in answer:
    chunk = s.recv(4096)
    if not chunk:
        break
    answer += chunk
print("status=" + answer.split(b" ")[1].decode())
"#;

/// The session names its own container after a 63-character prefix of a stopped foreign container's
/// id, sends the headers of an update (and of a start) on that name, renames its container away, then
/// sends the body. The engine would now resolve the name to the foreign container: it must not be
/// updated or started. The proxy refuses to write such a name itself, so the session's containers are
/// made as a careless test could make them: on the engine's own socket, with the session's label.
fn retargeted_before_the_body() -> Result<(), Failed> {
    let mark = unique_mark("pin-body");
    let state = temp_dir("pin-body");
    let label = format!("ct-it.foreign={mark}");
    let victim = docker(&["create", "--label", &label, image::IMAGE, "sleep", "1000"]);
    let prefix = &victim[..63];
    let script = format!(
        "set -e\necho session=$CLEANTEST_SESSION\n\
         own() {{ DOCKER_HOST=unix:///var/run/docker.sock docker create \
           --label cleantest.session=$CLEANTEST_SESSION --name {prefix} {image} sleep 1000 >/dev/null; }}\n\
         if docker create --name {prefix} {image} true >/dev/null 2>&1; then echo 'allowed: the name'; docker rm {prefix} >/dev/null; fi\n\
         own\n\
         python3 -c '{RAW_CLIENT}' /containers/{prefix}/update '{{\"RestartPolicy\":{{\"Name\":\"always\"}}}}' \
           'docker rename {prefix} {mark}-moved-1'\n\
         own\n\
         python3 -c '{RAW_CLIENT}' /containers/{prefix}/start '{{}}' 'docker rename {prefix} {mark}-moved-2'\n",
        image = image::IMAGE,
    );
    let out = session(&mark, &state, &script);
    let text = stdout(&out);
    let restart = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}}",
        &victim,
    ]);
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &victim]);
    remove_foreign(&mark);
    check_success(&out)?;
    check(restart != "always" && running == "false", || {
        format!("the foreign container was changed (restart {restart}, running {running}):\n{text}")
    })?;
    // The body is read before anything is resolved: the name then names another's container.
    check(
        text.matches("status=403").count() == 2 && !text.contains("allowed:"),
        || format!("not refused:\n{text}\n{}", stderr(&out)),
    )?;
    session_gone(&session_id(&text))
}

/// Foreign image names (tags of the fixture image, made outside the session): the session can
/// neither tag, import, build nor commit onto them, and each still names the fixture image after the
/// run. Names nobody holds are written, and swept with the session.
fn foreign_names_kept() -> Result<(), Failed> {
    let mark = unique_mark("pin-names");
    let state = temp_dir("pin-names");
    let victims: Vec<String> = (1..=4).map(|n| format!("{mark}-victim:{n}")).collect();
    for victim in &victims {
        docker(&["tag", image::IMAGE, victim]);
    }
    let fixture_id = docker(&["inspect", "-f", "{{.Id}}", image::IMAGE]);
    let context = temp_dir("pin-names-context");
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {}\nRUN true\n", image::IMAGE),
    )?;
    let script = format!(
        "echo session=$CLEANTEST_SESSION\n\
         docker create --name {mark}-own {image} true >/dev/null\n\
         docker commit {mark}-own {mark}-mine:1 >/dev/null && echo commit-own-ok\n\
         docker tag {mark}-mine:1 {mark}-mine:2 && echo tag-own-ok\n\
         for try in 'tag {mark}-mine:1 {v1}' 'commit {mark}-own {v4}'; do\n\
           if docker $try >/dev/null 2>&1; then echo \"allowed: $try\"; fi\n\
         done\n\
         if tar -cf - -C {context} Dockerfile | docker import - {v2} >/dev/null 2>&1; then echo 'allowed: import'; fi\n\
         if DOCKER_BUILDKIT=0 docker build -q -t {v3} {context} >/dev/null 2>&1; then echo 'allowed: build'; fi\n\
         docker tag {mark}-mine:1 {v1} 2>&1 | grep -q 'proxy.allow-foreign' && echo names-the-key\n",
        image = image::IMAGE,
        context = context.display(),
        v1 = victims[0],
        v2 = victims[1],
        v3 = victims[2],
        v4 = victims[3],
    );
    let out = session(&mark, &state, &script);
    let text = stdout(&out);
    let moved: Vec<&String> = victims
        .iter()
        .filter(|v| {
            let id = Command::new("docker")
                .args(["inspect", "-f", "{{.Id}}", v])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
            id.ok().as_deref() != Some(fixture_id.as_str())
        })
        .collect();
    for victim in &victims {
        let _ = Command::new("docker").args(["rmi", victim]).output();
    }
    let _ = std::fs::remove_file(context.join("Dockerfile"));
    let _ = std::fs::remove_dir(&context);
    check_success(&out)?;
    check(moved.is_empty() && !text.contains("allowed:"), || {
        format!("a foreign image name was taken ({moved:?}):\n{text}")
    })?;
    for want in ["commit-own-ok", "tag-own-ok", "names-the-key"] {
        check(text.contains(want), || {
            format!("no {want}:\n{text}\n{}", stderr(&out))
        })?;
    }
    session_gone(&session_id(&text))
}

/// A running foreign container and a foreign network: a session's create can share neither the
/// container's pid, ipc, network or cgroup namespace, nor its volumes or a link to it, nor join the
/// network (by `--network`, by an `EndpointsConfig` key, or by the `NetworkID` of an endpoint on its
/// own network), nor connect to it that way. The same joins of its own objects work.
fn joins_refused() -> Result<(), Failed> {
    let mark = unique_mark("pin-joins");
    let state = temp_dir("pin-joins");
    let foreign = Foreign::start(&mark);
    let victim = foreign.0.clone();
    let net = Foreign::network(&mark);
    let image = image::IMAGE;
    let create = |body: &str| {
        format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --unix-socket \"$sock\" -X POST \
             -H 'Content-Type: application/json' -d '{body}' 'http://docker/containers/create'"
        )
    };
    let bodies = [
        (
            "cgroup",
            format!(r#"{{"Image":"{image}","HostConfig":{{"Cgroup":"container:{victim}"}}}}"#),
        ),
        (
            "endpoints",
            format!(
                r#"{{"Image":"{image}","NetworkingConfig":{{"EndpointsConfig":{{"{mark}-net":{{}}}}}}}}"#
            ),
        ),
        (
            "network-id",
            format!(
                r#"{{"Image":"{image}","HostConfig":{{"NetworkMode":"{mark}-own-net"}},"NetworkingConfig":{{"EndpointsConfig":{{"{mark}-own-net":{{"NetworkID":"{net}"}}}}}}}}"#
            ),
        ),
    ];
    let mut script = format!(
        "sock=${{DOCKER_HOST#unix://}}\necho session=$CLEANTEST_SESSION\n\
         docker network create {mark}-own-net >/dev/null\n\
         docker run -d --name {mark}-own {image} sleep 1000 >/dev/null\n\
         for flags in '--pid container:{victim}' '--ipc container:{victim}' '--network container:{victim}' \
           '--volumes-from {victim}' '--link {victim}:v' '--network {mark}-net'; do\n\
           if docker create $flags {image} true >/dev/null 2>&1; then echo \"allowed: $flags\"; fi\n\
         done\n\
         docker run --rm --pid container:{mark}-own --network container:{mark}-own {image} true && echo own-joins-ok\n"
    );
    for (name, body) in &bodies {
        script.push_str(&format!("echo \"{name} $({})\"\n", create(body)));
    }
    script.push_str(&format!(
        "code=$(curl -s -o /dev/null -w '%{{http_code}}' --unix-socket \"$sock\" -X POST \
           -H 'Content-Type: application/json' \
           -d '{{\"Container\":\"{mark}-own\",\"EndpointConfig\":{{\"NetworkID\":\"{net}\"}}}}' \
           'http://docker/networks/{mark}-own-net/connect')\necho \"connect $code\"\n"
    ));
    let out = session(&mark, &state, &script);
    let text = stdout(&out);
    let endpoints = docker(&["network", "inspect", "-f", "{{len .Containers}}", &net]);
    let running = foreign.running();
    drop(foreign);
    remove_foreign(&mark);
    check_success(&out)?;
    check(!text.contains("allowed:"), || {
        format!("a create joined a foreign object:\n{text}")
    })?;
    for (name, _) in &bodies {
        check(text.contains(&format!("{name} 403")), || {
            format!("the {name} body was not refused:\n{text}")
        })?;
    }
    check(text.contains("connect 403"), || {
        format!("the connect by NetworkID was not refused:\n{text}")
    })?;
    check(text.contains("own-joins-ok"), || {
        format!(
            "joining the session's own container was refused:\n{text}\n{}",
            stderr(&out)
        )
    })?;
    check(endpoints == "0" && running, || {
        format!("the foreign network has {endpoints} endpoints, the container running: {running}")
    })?;
    session_gone(&session_id(&text))
}

/// Under `proxy.refuse-host-access = true`, creates that would make a test root on the host are
/// refused (privileged, the host's pid namespace, a host bind, an added capability); an ordinary one
/// runs. Without the key, the host pid namespace works (off by default).
fn host_access_refused() -> Result<(), Failed> {
    let mark = unique_mark("pin-host");
    let state = temp_dir("pin-host");
    let image = image::IMAGE;
    let script = format!(
        "for flags in '--privileged' '--pid host' '-v /etc:/host-etc:ro' '--cap-add SYS_ADMIN'; do\n\
           if docker create $flags {image} true >/dev/null 2>&1; then echo \"allowed: $flags\"; fi\n\
         done\n\
         docker run --rm {image} true && echo plain-ok\n\
         docker run --rm --pid host {image} true 2>&1 | grep -q 'refuse-host-access' && echo names-the-key\n"
    );
    let workspace = Workspace::with_profile(&mark, "proxy.refuse-host-access = true");
    let out = run(exec_in_session(&mark, &state)
        .current_dir(&workspace.0)
        .args(["--", "sh", "-c", &script]));
    drop(workspace);
    let text = stdout(&out);
    check_success(&out)?;
    check(!text.contains("allowed:"), || {
        format!("host access went through:\n{text}")
    })?;
    for want in ["plain-ok", "names-the-key"] {
        check(text.contains(want), || {
            format!("no {want}:\n{text}\n{}", stderr(&out))
        })?;
    }
    let off = session(
        &mark,
        &state,
        &format!("docker run --rm --pid host {image} true && echo host-pid-ok"),
    );
    check(stdout(&off).contains("host-pid-ok"), || {
        format!("off by default, yet refused: {}", stderr(&off))
    })
}
