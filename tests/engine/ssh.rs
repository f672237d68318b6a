//! `DOCKER_HOST=ssh://…` against a real sshd (Debian's openssh-server) on loopback, in a network
//! namespace of the test's own, with keys the test makes. The system's `ssh` reaches it through a
//! `Host` alias of an ssh config (an `ssh` first on PATH adds `-F`, as a user's `~/.ssh/config` would
//! hold it), and `docker system dial-stdio` on the "remote" host talks to this machine's engine:
//!
//! - a session's containers, made with the docker CLI through the proxy, and a config service are
//!   created on that engine and swept;
//! - a killed ssh connection mid-run is reported, and the next run's stale sweep removes what was left.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub fn cells() -> Vec<Cell> {
    let cells = vec![
        trial(
            "containers_and_a_config_service_over_ssh_are_made_and_swept",
            made_and_swept,
        ),
        trial(
            "a_killed_ssh_connection_is_reported_and_the_next_run_sweeps_what_it_left",
            killed_connection,
        ),
        trial(
            "a_refused_ssh_connection_is_named_to_the_tests_docker_client",
            refused_named_to_the_client,
        ),
    ];
    let problem = ssh_problem();
    engine_cells(cells)
        .into_iter()
        .map(|mut cell| {
            cell.unavailable = cell.unavailable.or(problem.clone());
            cell
        })
        .collect()
}

fn ssh_problem() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("an sshd of the test's own needs root".into());
    }
    for (tool, package) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh", "openssh-client"),
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("no {tool} (Debian's {package})"));
        }
    }
    None
}

/// A session service that needs no network to be ready (the runner is in the sshd's namespace, the
/// engine publishes on the host's).
const CONFIG: &str = r#"
[services.queue]
image = "cleantest-fixture:latest"
command = ["sh", "-c", "echo listening; exec sleep 300"]
ready = { log = "listening" }
"#;

/// An sshd on port 22 of a fresh network namespace, its keys, and the ssh config that reaches it as
/// `ct-engine`.
struct Sshd {
    dir: TempDir,
    child: Child,
}

impl Sshd {
    fn start(dir: TempDir) -> Result<Sshd, Failed> {
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            if !d.join(key).exists() {
                let out = run(Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(d.join(key)));
                check_success(&out)?;
            }
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort 22\nHostKey {0}/host_key\nAuthorizedKeysFile {0}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             StrictModes no\nUsePAM no\nPidFile none\n",
            d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let client = format!(
            "Host ct-engine\n  HostName 127.0.0.1\n  Port 22\n  User root\n  IdentityFile {}/client_key\n  \
             IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
            d.display()
        );
        std::fs::write(d.join("ssh_config"), client).unwrap();
        std::fs::create_dir_all(d.join("bin")).unwrap();
        // sshd's privilege separation directory, which its service would make.
        let _ = std::fs::create_dir_all("/run/sshd");
        let wrapper = d.join("bin/ssh");
        write_executable(
            &wrapper,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F '{}' \"$@\"\n",
                d.join("ssh_config").display()
            ),
        );
        let child = Sshd::launch(d);
        let mut sshd = Sshd { dir, child };
        sshd.wait_up()?;
        Ok(sshd)
    }

    /// sshd on port 22 of a fresh network namespace (its loopback brought up first).
    fn launch(d: &Path) -> Child {
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        Command::new("unshare")
            .args([
                "--net",
                "sh",
                "-c",
                "ip link set lo up && exec \"$@\"",
                "sh",
            ])
            .arg("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("unshare starts")
    }

    /// Waits until `ssh ct-engine true` gets through.
    fn wait_up(&mut self) -> Result<(), Failed> {
        let up = wait_for(Duration::from_secs(20), || {
            self.in_namespace("ssh")
                .args(["ct-engine", "true"])
                .env("PATH", self.path())
                .output()
                .is_ok_and(|o| o.status.success())
        });
        check(up, || {
            format!(
                "sshd did not answer: {}",
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            )
        })
    }

    /// A new sshd, with the same keys, in a new namespace.
    fn restart(&mut self) -> Result<(), Failed> {
        self.kill();
        self.child = Sshd::launch(self.dir.path());
        self.wait_up()
    }

    /// PATH with the wrapper `ssh` first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `program` in the sshd's network namespace.
    fn in_namespace(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/proc/{}/ns/net", self.child.id()))
            .arg("--")
            .arg(program);
        command
    }

    /// `cargo-cleantest exec` in the namespace, with `DOCKER_HOST=ssh://ct-engine`.
    fn exec(&self, ws: &Path, state: &Path, mark: &str) -> Command {
        let mut command = self.in_namespace(env!("CARGO_BIN_EXE_cargo-cleantest"));
        command
            .current_dir(ws)
            .env("PATH", self.path())
            .env("DOCKER_HOST", "ssh://ct-engine")
            .env("CLEANTEST_STATE_DIR", state)
            .env("CT_IT_MARK", mark)
            .args(["exec", "--no-lock"]);
        command
    }

    /// The sshd (the process this test started) and every connection it serves (its descendants),
    /// killed: the engine is out of reach.
    fn kill(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let listener = self.child.id();
        // Every process under it (each connection's sshd and its `docker system dial-stdio`), then it.
        let mut tree = vec![listener];
        let mut i = 0;
        while i < tree.len() {
            tree.extend(children_of(tree[i]));
            i += 1;
        }
        for pid in tree.iter().skip(1) {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(listener as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// Whether `condition` holds within `limit` (checked every 100 ms).
fn wait_for(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A workspace whose config declares the service, outside this repository (whose root would be found
/// first from under its target directory), in the binary's temporary directory (`TMPDIR`), removed with it.
fn workspace(label: &str) -> std::path::PathBuf {
    let ws = std::env::temp_dir().join(unique_mark(label));
    std::fs::create_dir_all(ws.join(".config")).unwrap();
    std::fs::write(ws.join(".config/cleantest.toml"), CONFIG).unwrap();
    ws
}

/// Containers carrying `label=value`, on the engine (this machine's).
fn labelled(label: &str) -> Vec<String> {
    docker(&["ps", "-aq", "--filter", &format!("label={label}")])
        .lines()
        .map(str::to_string)
        .collect()
}

fn made_and_swept() -> Result<(), Failed> {
    let sshd = Sshd::start(temp_dir("ssh-engine"))?;
    let ws = workspace("ssh-ws");
    let state = ws.join("state");
    let mark = unique_mark("ssh-made");
    // Through the proxy and over ssh: a container made by the docker CLI, then the session's own
    // containers counted: it, and the config service.
    let script = "docker run -d --label ct.ssh=\"$CT_IT_MARK\" cleantest-fixture:latest sleep 300 >/dev/null && \
                  docker ps -q --filter label=ct.ssh=\"$CT_IT_MARK\" --filter label=cleantest.session | wc -l && \
                  docker ps -q --filter label=cleantest.service=queue \
                    --filter label=cleantest.session=\"$CLEANTEST_SESSION\" | wc -l";
    let mut command = sshd.exec(&ws, &state, &mark);
    command.args(["--", "sh", "-c", script]);
    let (pid, out) = run_owned(command)?;
    check_success(&out)?;
    let text = stdout(&out);
    let counts: Vec<&str> = text.split_whitespace().collect();
    check(counts == ["1", "1"], || {
        format!(
            "the container or the service is not the session's: {}{}",
            stdout(&out),
            stderr(&out)
        )
    })?;
    check(!stderr(&out).contains("escaped"), || {
        format!(
            "the runner's own ssh connections were taken for escapees: {}",
            stderr(&out)
        )
    })?;
    check(labelled(&format!("ct.ssh={mark}")).is_empty(), || {
        "the container made over ssh outlived its session".into()
    })?;
    check_nothing_owned(pid)
}

fn killed_connection() -> Result<(), Failed> {
    let mut sshd = Sshd::start(temp_dir("ssh-engine-killed"))?;
    let ws = workspace("ssh-ws-killed");
    let state = ws.join("state");
    let mark = unique_mark("ssh-killed");
    let ready = ws.join("ready");
    let release = ws.join("release");
    let script = format!(
        "docker run -d --label ct.ssh=\"$CT_IT_MARK\" cleantest-fixture:latest sleep 300 >/dev/null && \
         touch '{}' && while [ ! -e '{}' ]; do sleep 0.05; done",
        ready.display(),
        release.display()
    );
    let child = sshd
        .exec(&ws, &state, &mark)
        .args(["--engine-reaper", "off", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runner starts");
    let started = wait_for(Duration::from_secs(60), || ready.exists());
    sshd.kill();
    std::fs::write(&release, "").unwrap();
    let out = child.wait_with_output().unwrap();
    check(started, || {
        format!("the container was not made: {}", stderr(&out))
    })?;
    let err = stderr(&out);
    check(out.status.code() == Some(3) && err.contains("ssh"), || {
        format!("the lost engine is not reported ({:?}): {err}", out.status)
    })?;
    let left = labelled(&format!("ct.ssh={mark}"));
    check(!left.is_empty(), || {
        "nothing was left to sweep: the cell proves nothing".into()
    })?;
    // The engine is back: the next run's stale sweep removes what the first left.
    sshd.restart()?;
    let out = run(sshd
        .exec(&ws, &state, &unique_mark("ssh-next"))
        .args(["--", "true"]));
    check_success(&out)?;
    check(labelled(&format!("ct.ssh={mark}")).is_empty(), || {
        format!("the next run's stale sweep left {left:?}: {}", stderr(&out))
    })
}

/// Nothing listens on port 9 of loopback: ssh is refused at once, and the docker CLI in the session
/// gets ssh's own words from the proxy, not a bare "connection error".
fn refused_named_to_the_client() -> Result<(), Failed> {
    let ws = workspace("ssh-refused");
    let state = ws.join("state");
    let out = run(exec_in_session(&unique_mark("ssh-refused"), &state)
        .current_dir(&ws)
        .env("DOCKER_HOST", "ssh://root@127.0.0.1:9")
        .args(["--no-services", "--", "docker", "ps"]));
    let err = stderr(&out);
    check(
        err.contains("engine unreachable: connection error: ssh: connect to host 127.0.0.1 port 9: Connection refused"),
        || format!("the client was not told why: {err}"),
    )
}
