//! The session's Docker API proxy against the real engine: unmodified clients (the docker CLI, bollard,
//! docker-compose) get their containers, networks and volumes labelled with the session and swept, and
//! everything else behaves exactly as against the real socket.

use crate::common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use common::docker::*;
use common::*;
use libtest_mimic::Failed;

/// The role this process plays when `cargo cleantest exec` re-runs the test binary as the client under
/// test (see `bollard_creates_are_labelled`): it plays it and exits.
pub fn play_role() {
    match std::env::var("CT_PROXY_ROLE").as_deref() {
        Ok("bollard") => std::process::exit(bollard_client()),
        Ok("testcontainers") => std::process::exit(testcontainers_client()),
        _ => {}
    }
}

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    let compose_missing = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err();
    let mut compose = trial(
        "docker_compose_project_is_labelled_and_swept",
        compose_through_the_proxy,
    );
    compose.unavailable =
        compose_missing.then(|| "docker-compose is not installed (CI installs Debian's)".into());
    engine_cells(vec![
        trial(
            "docker_cli_behaves_as_against_the_real_socket_and_is_labelled",
            docker_cli_through_the_proxy,
        ),
        trial("bollard_creates_are_labelled", bollard_creates_are_labelled),
        trial(
            "testcontainers_generic_image_is_labelled_and_swept",
            testcontainers_through_the_proxy,
        ),
        compose,
        trial(
            "a_leaked_container_is_attributed_to_its_test_or_binary",
            leaked_container_is_attributed,
        ),
        trial(
            "no_proxy_leaves_docker_host_alone",
            no_proxy_leaves_docker_host_alone,
        ),
        trial(
            "attach_without_upgrade_headers_gets_the_raw_stream",
            raw_stream_attach,
        ),
        trial(
            "a_percent_encoded_create_path_is_labelled",
            encoded_create_path_is_labelled,
        ),
    ])
}

fn exec(mark: &str, extra: &[&str], script: &str) -> std::process::Output {
    run(exec_in_session(mark, &temp_dir("proxy-state"))
        .args(extra)
        .args(["--", "sh", "-c", script]))
}

/// Runs this harness again, under `cargo cleantest exec`, as the client `role` (see `main`).
fn as_client(role: &str, mark: &str) -> Result<std::process::Output, Failed> {
    Ok(run(exec_in_session(mark, &temp_dir("proxy-state"))
        .env("CT_PROXY_ROLE", role)
        .arg("--")
        .arg(std::env::current_exe()?)))
}

/// A client role's body on a runtime of its own; its error, if any, on stderr and as exit code 1.
fn client(role: &str, body: impl std::future::Future<Output = Result<(), String>>) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(body) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{role} client: {e}");
            1
        }
    }
}

/// Fails naming what is left of the resources named after `mark`.
fn nothing_named(mark: &str) -> Result<(), Failed> {
    let left = named(mark);
    check(left.is_empty(), || format!("left {left:?}"))
}

/// Containers, networks and volumes whose name starts with `prefix`.
fn named(prefix: &str) -> Vec<String> {
    matching(None, &format!("name={prefix}"))
}

fn docker_cli_through_the_proxy() -> Result<(), Failed> {
    let mark = unique_mark("pxcli");
    let script = format!(
        r#"set -e
        I={image}; p={mark}
        on() {{ [ "$(docker inspect --type $1 -f "$2" $3)" = "$CLEANTEST_SESSION" ] || {{ echo "unlabelled $1 $3"; exit 1; }}; }}
        CL='{{{{index .Config.Labels "cleantest.session"}}}}'; L='{{{{index .Labels "cleantest.session"}}}}'
        c=$(docker run -d --name $p-run $I sleep 1000); on container "$CL" $c
        docker network create $p-net >/dev/null; on network "$L" $p-net
        docker volume create $p-vol >/dev/null; on volume "$L" $p-vol
        docker create --name $p-created $I sleep 1000 >/dev/null; docker start $p-created >/dev/null; on container "$CL" $p-created
        docker run --rm $I echo out-hi
        echo out-piped | docker run -i --rm $I cat
        docker exec $c echo out-exec
        echo out-copied > /tmp/$p.in; docker cp /tmp/$p.in $c:/tmp/in; docker cp $c:/tmp/in /tmp/$p.out; cat /tmp/$p.out
        rm -f /tmp/$p.in /tmp/$p.out
        # A live event stream (with --since, so nothing between its start and its subscription is
        # lost), started before the container it watches; dockerd's replay buffer alone holds only
        # the last 256 events, which parallel tests overrun.
        docker events --since "$(date +%s)" --filter "label=ct-it.ev=$p" --format 'out-event-{{{{.Status}}}}' > /tmp/$p.ev &
        ev=$!
        l=$(docker run -d --label ct-it.ev=$p --name $p-logs $I sh -c 'for i in 1 2 3; do echo out-log$i; sleep 0.2; done')
        docker logs -f $l
        kill $ev; wait $ev 2>/dev/null || true
        head -1 /tmp/$p.ev; rm -f /tmp/$p.ev
        DOCKER_API_VERSION=1.99 docker version --format 'out-api-translated'"#,
        image = image::IMAGE
    );
    let out = exec(&mark, &[], &script);
    let text = stdout(&out);
    check(out.status.success(), || {
        format!("{:?}\n{text}\n{}", out.status, stderr(&out))
    })?;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("out-")).collect();
    let expected = [
        "out-hi",
        "out-piped",
        "out-exec",
        "out-copied",
        "out-log1",
        "out-log2",
        "out-log3",
        "out-event-create",
        // Needs the proxy's version translation: the engine itself refuses API 1.99.
        "out-api-translated",
    ];
    check(lines == expected, || {
        format!("output through the proxy: {lines:?}")
    })?;
    nothing_named(&mark)
}

/// The client side of `bollard_creates_are_labelled`: creates a container, a network and a volume with
/// bollard through `DOCKER_HOST` (the proxy), without labels, and checks they came back labelled.
fn bollard_client() -> i32 {
    use bollard::models::{ContainerCreateBody, NetworkCreateRequest, VolumeCreateRequest};
    use bollard::query_parameters::CreateContainerOptionsBuilder;
    let prefix = std::env::var("CT_IT_MARK").unwrap_or_default();
    let session = std::env::var("CLEANTEST_SESSION").unwrap_or_default();
    client("bollard", async {
        let docker = bollard::Docker::connect_with_defaults().map_err(|e| e.to_string())?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| e.to_string())?;
        let body = ContainerCreateBody {
            image: Some(image::IMAGE.into()),
            cmd: Some(vec!["sleep".into(), "1000".into()]),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&format!("{prefix}-c"))
            .build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| e.to_string())?;
        let network = NetworkCreateRequest {
            name: format!("{prefix}-n"),
            ..Default::default()
        };
        docker
            .create_network(network)
            .await
            .map_err(|e| e.to_string())?;
        let volume = VolumeCreateRequest {
            name: Some(format!("{prefix}-v")),
            ..Default::default()
        };
        let v = docker
            .create_volume(volume)
            .await
            .map_err(|e| e.to_string())?;
        let c = docker
            .inspect_container(&created.id, None)
            .await
            .map_err(|e| e.to_string())?;
        let n = docker
            .inspect_network(&format!("{prefix}-n"), None)
            .await
            .map_err(|e| e.to_string())?;
        let labels: [Option<HashMap<String, String>>; 3] =
            [c.config.and_then(|c| c.labels), n.labels, Some(v.labels)];
        for l in labels {
            if l.unwrap_or_default().get("cleantest.session") != Some(&session) {
                return Err("a resource came back without the session label".into());
            }
        }
        Ok(())
    })
}

fn bollard_creates_are_labelled() -> Result<(), Failed> {
    let mark = unique_mark("pxbollard");
    let out = as_client("bollard", &mark)?;
    check_success(&out)?;
    check(
        stderr(&out).contains("swept 1 container, 1 network, 1 volume"),
        || stderr(&out),
    )?;
    nothing_named(&mark)
}

/// The client side of `testcontainers_through_the_proxy`: starts a `GenericImage` of the local fixture
/// image and leaves it running, as a container in a `static` does, after checking its label.
fn testcontainers_client() -> i32 {
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};
    let session = std::env::var("CLEANTEST_SESSION").unwrap_or_default();
    let prefix = std::env::var("CT_IT_MARK").unwrap_or_default();
    client("testcontainers", async {
        let (name, tag) = image::IMAGE.split_once(':').unwrap();
        let container = GenericImage::new(name, tag)
            .with_cmd(["sleep", "1000"])
            .with_container_name(format!("{prefix}-tc"))
            .start()
            .await
            .map_err(|e| e.to_string())?;
        let docker = bollard::Docker::connect_with_defaults().map_err(|e| e.to_string())?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| e.to_string())?;
        let inspect = docker
            .inspect_container(container.id(), None)
            .await
            .map_err(|e| e.to_string())?;
        let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
        if labels.get("cleantest.session") != Some(&session) {
            return Err(format!(
                "the testcontainers container has no session label: {labels:?}"
            ));
        }
        // Never dropped, as in a `static`: testcontainers would leave it running.
        std::mem::forget(container);
        Ok(())
    })
}

fn testcontainers_through_the_proxy() -> Result<(), Failed> {
    let mark = unique_mark("pxtc");
    let out = as_client("testcontainers", &mark)?;
    check_success(&out)?;
    check(stderr(&out).contains("swept 1 container"), || stderr(&out))?;
    nothing_named(&mark)
}

fn compose_through_the_proxy() -> Result<(), Failed> {
    let mark = unique_mark("pxcompose").replace('-', "");
    let dir = temp_dir("compose");
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: '2.4'\nservices:\n  app:\n    image: {}\n    command: sleep 1000\n    volumes: [data:/data]\nvolumes:\n  data: {{}}\n",
            image::IMAGE
        ),
    )?;
    let script = format!("cd {} && docker-compose -p {mark} up -d", dir.display());
    let out = exec(&mark, &[], &script);
    check_success(&out)?;
    let left = matching(None, &format!("label=com.docker.compose.project={mark}"));
    check(left.is_empty(), || {
        format!("the compose project left {left:?}\n{}", stderr(&out))
    })?;
    check(
        stderr(&out).contains("swept 1 container, 1 network, 1 volume"),
        || stderr(&out),
    )
}

fn leaked_container_is_attributed() -> Result<(), Failed> {
    for mode in [None, Some("--isolate")] {
        let mark = unique_mark("pxleak");
        let dir = temp_dir("pxleak");
        let junit = dir.join("junit.xml");
        let out = run(cleantest("docker", &mark)
            .env("CLEANTEST_STATE_DIR", run_dir("proxy-state"))
            .args(mode)
            .args([
                "--no-lock",
                "--test",
                "proxied",
                "--leak",
                "fail",
                "--junit",
            ])
            .arg(&junit)
            .args(["--", "leaves_a_container_running", "cleans_up_after_itself"])
            .stdout(Stdio::piped()));
        check(out.status.code() == Some(101), || {
            format!("{mode:?}: {:?}\n{}", out.status, stdout(&out))
        })?;
        let xml = std::fs::read_to_string(&junit)?;
        // The container is attributed to the test that started it (isolated) or to its binary (shared).
        let unit = if mode.is_some() {
            "ct-docker::proxied::leaves_a_container_running"
        } else {
            "ct-docker::proxied"
        };
        check(
            xml.contains(&format!("testsuite name=\"{unit}\""))
                && xml.contains("container(s) running"),
            || format!("{mode:?}: not attributed to {unit}:\n{xml}"),
        )?;
        check(!xml.contains("cleans_up_after_itself\" tests"), || {
            format!("{mode:?}: wrong attribution:\n{xml}")
        })?;
        // Named as `docker ps` would show it: name, image and short id, not a random name alone.
        let said = format!("{}{}", stdout(&out), xml);
        let named = said.lines().any(|l| {
            l.contains("container(s) running") && l.contains(&format!("({}, ", image::IMAGE))
        });
        check(named, || {
            format!("{mode:?}: the container's image and id are not named:\n{said}")
        })?;
        assert_no_survivors(&mark);
    }
    Ok(())
}

fn no_proxy_leaves_docker_host_alone() -> Result<(), Failed> {
    let mark = unique_mark("pxoff");
    let out = exec(
        &mark,
        &["--no-proxy"],
        "echo \"host=${DOCKER_HOST:-unset}\"",
    );
    check(stdout(&out).contains("host=unset"), || stdout(&out))?;
    let out = exec(&mark, &[], "echo \"host=${DOCKER_HOST:-unset}\"");
    check(stdout(&out).contains("/docker.sock"), || stdout(&out))
}

/// A client that attaches without `Upgrade` headers gets what the engine gives it: a 200 response and
/// the container's raw output stream on the same connection until the container ends.
fn raw_stream_attach() -> Result<(), Failed> {
    let mark = unique_mark("pxraw");
    let script = format!(
        r#"set -e
        c=$(docker run -d --name {mark}-raw {image} sh -c 'sleep 1; echo raw-a; sleep 0.5; echo raw-b')
        curl -s -i --max-time 30 --unix-socket "${{DOCKER_HOST#unix://}}" -X POST \
          "http://docker/containers/$c/attach?stream=1&stdout=1&logs=1" | tr -c '[:print:]\n' '.'"#,
        image = image::IMAGE
    );
    let out = exec(&mark, &[], &script);
    let text = stdout(&out);
    check_success(&out)?;
    check(
        text.contains(" 200 OK") && text.contains("raw-stream"),
        || text.clone(),
    )?;
    check(text.contains("raw-a") && text.contains("raw-b"), || {
        format!("output did not come through:\n{text}")
    })?;
    nothing_named(&mark)
}

/// `POST /containers/%63reate` is a container create to the engine (it routes on the decoded path):
/// the proxy must label it like any other.
fn encoded_create_path_is_labelled() -> Result<(), Failed> {
    let mark = unique_mark("pxenc");
    let script = format!(
        r#"set -e
        curl -s --max-time 30 --unix-socket "${{DOCKER_HOST#unix://}}" -X POST \
          -H 'Content-Type: application/json' -d '{{"Image":"{image}","Cmd":["true"]}}' \
          "http://docker/containers/%63reate?name={mark}-enc" >/dev/null
        echo "label=$(docker inspect -f '{{{{index .Config.Labels "cleantest.session"}}}}' {mark}-enc)"
        echo "session=$CLEANTEST_SESSION""#,
        image = image::IMAGE
    );
    let out = exec(&mark, &[], &script);
    let text = stdout(&out);
    check_success(&out)?;
    let session = text
        .lines()
        .find_map(|l| l.strip_prefix("session="))
        .unwrap_or_default()
        .to_string();
    let labelled = !session.is_empty() && text.contains(&format!("label={session}"));
    if !labelled {
        // Unlabelled, the session's sweep misses it: remove the test's own container by its name.
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("{mark}-enc")])
            .output();
    }
    check(labelled, || {
        format!("the encoded create was not labelled:\n{text}")
    })?;
    nothing_named(&mark)
}
