//! A test that mounts something in its temporary directory (issue 39): the removal never crosses a
//! mount point. The runner runs in a mount namespace of its own (`unshare --mount`, as root), so the
//! tmpfs the test mounts is gone with it; inside that namespace, after the run, the file on the tmpfs
//! must still be there, and the summary must say the mount point was left alone.

use std::process::Command;

use super::common::docker::*;
use super::common::*;
use libtest_mimic::Failed;

pub(crate) fn cells() -> Vec<Cell> {
    let mut cell = trial(
        "a_mount_point_in_a_tests_temporary_directory_is_left_alone_and_said",
        mount_point,
    );
    cell.unavailable = mount_namespace_problem();
    vec![cell]
}

fn mount_point() -> Result<(), Failed> {
    let tmp = temp_dir("tmp-mount");
    let ready = tmp.join("ready");
    let runner = cleantest("tmpdir", &unique_mark("tmp-mount"));
    // Run in the namespace: the runner, then a look at the tmpfs it must not have touched.
    let program = runner.get_program().to_owned();
    let script = "\"$0\" \"$@\"; code=$?; cat \"$(cat \"$CT_TMPDIR_READY\")/inside\"; exit $code";
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(program)
        .args(runner.get_args())
        .args(["--test", "temp", "--", "--exact", "mounts_a_tmpfs"])
        .env("TMPDIR", tmp.path())
        .env("CT_TMPDIR_READY", &ready);
    if let Some(dir) = runner.get_current_dir() {
        command.current_dir(dir);
    }
    for (key, value) in runner.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let out = run(&mut command);
    let text = stdout(&out);
    check(out.status.code() == Some(0), || {
        format!("{:?}: {text}{}", out.status, stderr(&out))
    })?;
    check(text.contains("a mount point: left alone"), || {
        format!("the mount point is not reported: {text}")
    })?;
    check(text.contains("on the tmpfs"), || {
        format!("the file on the mounted tmpfs was removed: {text}")
    })
}
