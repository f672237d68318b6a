//! The state directory's safety cells. Those that need root (to hand a directory to another user) are
//! reported ignored with the reason when not root (failed under `CLEANTEST_REQUIRE_DOCKER=1`, as in CI,
//! which runs as root), never passed without checking.

use crate::common;

use common::docker::{Cell, check, plain_cells, trial};
use common::*;
use libtest_mimic::Failed;

/// The cells of this module.
pub fn cells() -> Vec<Cell> {
    plain_cells(vec![
        as_root(
            "a_state_dir_owned_by_another_user_is_refused",
            state_dir_owned_by_another_user,
        ),
        trial(
            "a_state_dir_that_is_a_symlink_is_refused_and_its_target_untouched",
            state_dir_symlink,
        ),
        as_root(
            "a_state_dir_below_another_users_directory_is_refused_untouched",
            state_dir_below_another_user,
        ),
        {
            let mut cell = as_root(
                "anonymous_volumes_are_swept_when_the_state_dir_is_full",
                full_state_dir,
            );
            if cell.unavailable.is_none() {
                cell.unavailable = common::docker::engine_problem();
            }
            cell
        },
    ])
}

/// A cell that runs only as root.
fn as_root(name: &str, f: fn() -> Result<(), Failed>) -> Cell {
    let mut cell = trial(name, f);
    cell.unavailable = (!nix::unistd::geteuid().is_root())
        .then(|| "needs root, to hand a directory to another user".into());
    cell
}

/// A state directory owned by another user is refused, and nothing in it is touched: its records decide
/// what is swept and killed.
fn state_dir_owned_by_another_user() -> Result<(), Failed> {
    let state = temp_dir("foreign-owner");
    let record = state.join("sessions/abc123/record.json");
    std::fs::create_dir_all(record.parent().unwrap())?;
    std::fs::write(&record, "{}")?;
    let chown = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&*state)
        .status()?;
    check(chown.success(), || {
        "root could not chown the directory".into()
    })?;
    for args in [
        &["sweep", "--stale"][..],
        &["exec", "--no-lock", "--", "true"],
    ] {
        let out = run(
            std::process::Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
                .env("CLEANTEST_STATE_DIR", &*state)
                .args(args),
        );
        let err = stderr(&out);
        check(out.status.code() == Some(101), || {
            format!("{args:?}: {err}")
        })?;
        check(err.contains("uid 65534"), || format!("{args:?}: {err}"))?;
        check(!err.contains("panicked"), || err.clone())?;
        check(record.exists(), || {
            format!("{args:?} touched the foreign state dir")
        })?;
    }
    Ok(())
}

/// Runs `sweep --stale` and `exec -- true` with `state` as the state directory: both must be refused
/// (101) with `expect` in the message, without a panic.
fn refused_both(state: &std::path::Path, expect: &str) -> Result<(), Failed> {
    for args in [
        &["sweep", "--stale"][..],
        &["exec", "--no-lock", "--", "true"],
    ] {
        let out = run(
            std::process::Command::new(env!("CARGO_BIN_EXE_cargo-cleantest"))
                .env("CLEANTEST_STATE_DIR", state)
                .args(args),
        );
        let err = stderr(&out);
        check(out.status.code() == Some(101), || {
            format!("{args:?}: {:?} {err}", out.status)
        })?;
        check(err.contains(expect), || format!("{args:?}: {err}"))?;
        check(!err.contains("panicked"), || err.clone())?;
    }
    Ok(())
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o7777)
}

/// A state directory path that is a symlink (as an unprivileged user could place one for root): the
/// directory it points to keeps its mode and gets no `sessions/` or `locks/`.
fn state_dir_symlink() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let base = temp_dir("state-symlink");
    let victim = base.join("victim");
    std::fs::create_dir_all(&victim)?;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755))?;
    let link = base.join("state");
    std::os::unix::fs::symlink(&victim, &link)?;
    refused_both(&link, "symbolic link")?;
    check(mode_of(&victim) == 0o755, || {
        format!("the target's mode changed to {:o}", mode_of(&victim))
    })?;
    let entries: Vec<_> = std::fs::read_dir(&victim)?.flatten().collect();
    check(entries.is_empty(), || {
        format!("the target was filled: {entries:?}")
    })
}

/// A state directory inside a directory another user owns: refused, and nothing is created there.
fn state_dir_below_another_user() -> Result<(), Failed> {
    let base = temp_dir("state-below");
    let theirs = base.join("theirs");
    std::fs::create_dir_all(&theirs)?;
    let chown = std::process::Command::new("chown")
        .arg("65534:65534")
        .arg(&theirs)
        .status()?;
    check(chown.success(), || {
        "root could not chown the directory".into()
    })?;
    let state = theirs.join("cleantest");
    refused_both(&state, "uid 65534")?;
    check(!state.exists(), || {
        "the state dir was created inside".into()
    })
}

/// The state directory on a 1 MiB tmpfs that a test fills up; then it creates a container with an
/// anonymous volume and removes the container without `-v`. The volume's name cannot be written to the
/// session's file: before, the record was deleted and the volume left for good. Now the session's own
/// sweep removes it from memory, says so, and keeps the record.
fn full_state_dir() -> Result<(), Failed> {
    let mark = unique_mark("full-disk");
    let state = std::path::PathBuf::from(format!("/tmp/ct-{mark}"));
    std::fs::create_dir_all(&state)?;
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&state)
        .status()?;
    check(mounted.success(), || "root could not mount a tmpfs".into())?;
    let image = common::docker::image::IMAGE;
    let script = format!(
        "dd if=/dev/zero of=$CLEANTEST_STATE_DIR/filler bs=4k 2>/dev/null\n\
         c=$(docker create -v /data {image} true)\n\
         docker inspect -f 'volume={{{{range .Mounts}}}}{{{{.Name}}}}{{{{end}}}}' $c\n\
         docker rm $c >/dev/null\n"
    );
    let out = run(common::docker::exec_in_session(&mark, &state).args(["--", "sh", "-c", &script]));
    let volume = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("volume="))
        .unwrap_or_default()
        .to_string();
    let left = !volume.is_empty()
        && std::process::Command::new("docker")
            .args(["volume", "inspect", &volume])
            .output()
            .is_ok_and(|o| o.status.success());
    if left {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", &volume])
            .output();
    }
    let kept = std::fs::read_dir(state.join("sessions")).map_or(0, |d| d.count());
    let _ = std::fs::remove_file(state.join("filler"));
    let _ = std::process::Command::new("umount").arg(&state).status();
    let _ = std::fs::remove_dir(&state);
    let err = stderr(&out);
    check(!volume.is_empty(), || {
        format!("no anonymous volume was made: {}{err}", stdout(&out))
    })?;
    check(!left, || {
        format!("the anonymous volume {volume} was left:\n{err}")
    })?;
    check(err.contains("could not be recorded"), || {
        format!("the run did not say so:\n{err}")
    })?;
    check(kept == 1, || {
        format!("{kept} session record(s) kept, want 1:\n{err}")
    })
}
