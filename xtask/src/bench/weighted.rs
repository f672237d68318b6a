//! The shard-balance rows of `cargo xtask bench`: a suite with skewed test times (three 4 s tests,
//! five of 1 s, 32 of 50 ms, in one binary; `BENCH_SPREAD_SCALE` shortens them for `--smoke`) run once with `--junit`
//! for its durations, then as three shards by `weighted:K/3 --durations` and by `hash:K/3`. Each
//! shard's test time is the sum of its JUnit cases; a row compares the slowest shard with the shards'
//! mean (target: 1.3x for `weighted`; `hash`, measured beside it).

use std::path::Path;

use super::{Opts, Row, Samples, generate_workspace, in_ws, push, row, timed};

/// The sleep of test `t`, in milliseconds, at full scale. Which tests are long decides how hash shards
/// fare: with `t000`, `t001` and `t003` long, hash puts two of them in one shard, as it does for 7 in 9
/// placements of three long tests; with `t000`–`t002` long, it happens to put one in each (1.06x).
fn pause_ms(t: usize) -> u64 {
    match t {
        0 | 1 | 3 => 4_000,
        2 | 4..=7 => 1_000,
        _ => 50,
    }
}

pub(super) fn rows(opts: &Opts, bin: &Path) -> Result<Vec<Row>, String> {
    // The smoke run checks the harness, not the numbers: a tenth of the time.
    let scale = if opts.smoke { 10 } else { 1 };
    let ws = generate_workspace(opts, "skewed", 1, 40, &|t| {
        format!(
            "std::thread::sleep(std::time::Duration::from_millis({}));",
            pause_ms(t) / scale
        )
    })?;
    let durations = ws.join("durations.xml");
    shard_run(bin, &ws, &durations, &[])?;
    let (mut weighted, mut weighted_mean) = (Samples::default(), Samples::default());
    let (mut hash, mut hash_mean) = (Samples::default(), Samples::default());
    for _ in 0..opts.runs.min(2) {
        let (slowest, mean) = shards(bin, &ws, "weighted", Some(&durations))?;
        push(&mut weighted, slowest);
        push(&mut weighted_mean, mean);
        let (slowest, mean) = shards(bin, &ws, "hash", None)?;
        push(&mut hash, slowest);
        push(&mut hash_mean, mean);
    }
    let mut by_hash = row(
        "3 shards by hash (`hash:K/3`), skewed test times: the slowest shard's test time vs the shards' mean",
        &hash,
        &hash_mean,
        "s",
        0.0,
        true,
    );
    by_hash.target = "(measured beside it)".into();
    by_hash.met = None;
    Ok(vec![
        row(
            "3 shards by an earlier run's durations (`weighted:K/3`), skewed test times: the slowest shard's test time vs the shards' mean",
            &weighted,
            &weighted_mean,
            "s",
            1.3,
            true,
        ),
        by_hash,
    ])
}

/// Runs the three shards of `kind`; the slowest shard's test time and the shards' mean, in seconds.
fn shards(
    bin: &Path,
    ws: &Path,
    kind: &str,
    durations: Option<&Path>,
) -> Result<(f64, f64), String> {
    let mut times = Vec::new();
    for shard in 1..=3 {
        let junit = ws.join(format!("{kind}-{shard}.xml"));
        let mut args = vec!["--partition".to_string(), format!("{kind}:{shard}/3")];
        if let Some(d) = durations {
            args.extend(["--durations".to_string(), d.display().to_string()]);
        }
        shard_run(bin, ws, &junit, &args)?;
        times.push(test_time(&junit)?);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    Ok((times.iter().copied().fold(0.0, f64::max), mean))
}

fn shard_run(bin: &Path, ws: &Path, junit: &Path, args: &[String]) -> Result<(), String> {
    let mut full = vec!["cleantest", "--quiet", "--no-lock", "--junit"];
    let junit = junit.display().to_string();
    full.push(&junit);
    full.extend(args.iter().map(String::as_str));
    timed(&mut in_ws(bin, ws, &full)).map(|_| ())
}

/// The sum of a JUnit report's `time="…"` attributes of its test cases.
fn test_time(junit: &Path) -> Result<f64, String> {
    let xml = std::fs::read_to_string(junit).map_err(|e| format!("{}: {e}", junit.display()))?;
    Ok(xml
        .split("<testcase ")
        .skip(1)
        .filter_map(|case| {
            let start = case.find("time=\"")? + 6;
            let len = case[start..].find('"')?;
            case[start..start + len].parse::<f64>().ok()
        })
        .sum())
}
