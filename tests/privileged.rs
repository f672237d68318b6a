//! The state directory's safety cells. Those that need root (to hand a directory to another user) are
//! reported ignored with the reason when not root (failed under `CLEANTEST_REQUIRE_DOCKER=1`, as in CI,
//! which runs as root), never passed without checking.

mod common;

use common::docker::{Cell, check, run_plain_trials, trial};
use common::*;
use libtest_mimic::Failed;

fn main() {
    run_plain_trials(vec![
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
    ]);
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
        .arg(&state)
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
                .env("CLEANTEST_STATE_DIR", &state)
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
