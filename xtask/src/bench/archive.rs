//! The archive rows of `cargo xtask bench`, on the 1,000-test workspace (10 binaries, built before):
//! `cargo cleantest archive` against `cargo nextest archive` (time, and the archive's size), and a
//! shard's start on a machine that has the archive against one that has to build (a fresh target
//! directory: what every shard of a matrix pays without an archive).

use std::path::Path;
use std::process::Command;

use super::{Opts, Row, Samples, configure, in_ws, nextest_available, push, row, timed};

pub(super) fn rows(opts: &Opts, bin: &Path, ws: &Path) -> Result<Vec<Row>, String> {
    let ours_file = ws.join("cleantest-archive.tar.zst");
    let theirs_file = ws.join("nextest-archive.tar.zst");
    let ours_arg = ours_file.display().to_string();
    let theirs_arg = theirs_file.display().to_string();
    let with_nextest = nextest_available();
    let (mut ours, mut nextest) = (Samples::default(), Samples::default());
    for _ in 0..opts.runs.min(3) {
        let args = [
            "cleantest",
            "archive",
            "--quiet",
            "--archive-file",
            &ours_arg,
        ];
        push(&mut ours, timed(&mut in_ws(bin, ws, &args))?.0);
        if with_nextest {
            let args = ["nextest", "archive", "--archive-file", &theirs_arg];
            push(&mut nextest, timed(&mut in_ws(bin, ws, &args))?.0);
        }
    }
    let size = |file: &Path| std::fs::metadata(file).map_or(f64::NAN, |m| m.len() as f64 / 1e6);
    let mut out = Vec::new();
    if with_nextest {
        out.push(row(
            "`cargo cleantest archive` vs `cargo nextest archive`, 1,000 tests in 10 binaries, built: time",
            &ours,
            &nextest,
            "s",
            1.5,
            true,
        ));
        out.push(row(
            "the same archives' size (MB)",
            &Samples(vec![size(&ours_file)]),
            &Samples(vec![size(&theirs_file)]),
            " MB",
            1.2,
            true,
        ));
    } else {
        eprintln!("bench: cargo-nextest is not installed: the archive rows are not measured");
    }
    out.push(shard_start(opts, bin, ws, &ours_arg)?);
    Ok(out)
}

/// Shard 1 of 3 from the archive (unpacked fresh by each run) against shard 1 of 3 built in a fresh
/// target directory.
fn shard_start(opts: &Opts, bin: &Path, ws: &Path, archive: &str) -> Result<Row, String> {
    let cold = ws.join("cold-target");
    let (mut from_archive, mut building) = (Samples::default(), Samples::default());
    for _ in 0..opts.runs.min(2) {
        let shard = ["--quiet", "--no-lock", "--partition", "hash:1/3"];
        let mut direct = configure(Command::new(bin.join("cargo-cleantest")), bin, ws, &[]);
        direct
            .args(["cleantest", "--archive-file", archive])
            .args(shard);
        push(&mut from_archive, timed(&mut direct)?.0);
        let _ = std::fs::remove_dir_all(&cold);
        let mut args = vec!["cleantest"];
        args.extend(shard);
        let mut build = in_ws(bin, ws, &args);
        build.env("CARGO_TARGET_DIR", &cold);
        push(&mut building, timed(&mut build)?.0);
    }
    let _ = std::fs::remove_dir_all(&cold);
    Ok(row(
        "a shard (`hash:1/3` of 1,000 tests) from the archive vs the same shard on a machine that builds (fresh target directory)",
        &from_archive,
        &building,
        "s",
        0.5,
        true,
    ))
}
