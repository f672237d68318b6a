//! Cells that need root: handing a directory to another user. Not root, they are reported ignored with
//! the reason (failed under `CLEANTEST_REQUIRE_DOCKER=1`, as in CI, which runs as root), never passed
//! without checking.

mod common;

use common::docker::{Cell, check, run_plain_trials, trial};
use common::*;
use libtest_mimic::Failed;

fn main() {
    run_plain_trials(vec![as_root(
        "a_state_dir_owned_by_another_user_is_refused",
        state_dir_owned_by_another_user,
    )]);
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
