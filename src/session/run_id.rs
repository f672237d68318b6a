//! The run id: one name for the sessions of one CI run, across its shards and machines
//! (`CLEANTEST_RUN_ID`, else the CI's own run: GitHub Actions, GitLab CI, Buildkite). It is labelled
//! `cleantest.run` on every resource of the session, beside the owner labels, so that one
//! `cargo cleantest sweep --run ID` after the matrix finds what every shard left. Sessions, their
//! records and their sweeps stay per shard.

use crate::contract::{ENV_RUN_ID, RUN_ID_SOURCES, RUN_LABEL};
use crate::errors::Error;

/// The longest run id accepted: CI run ids are far shorter.
const MAX_LEN: usize = 128;

/// The run id of this process, if any, from the environment.
pub(crate) fn from_env() -> Result<Option<String>, Error> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(id) = var(ENV_RUN_ID) {
        return check(id.trim()).map(Some);
    }
    for (names, _ci) in RUN_ID_SOURCES {
        let parts: Option<Vec<String>> = names.iter().map(|n| var(n)).collect();
        if let Some(parts) = parts {
            // A CI's own ids are numbers or UUIDs; one that is not is left alone rather than refused.
            return Ok(check(&parts.join("-")).ok());
        }
    }
    Ok(None)
}

/// A run id as given: `[A-Za-z0-9_.-]`, at most 128 characters, so that it is a label value and a
/// filter argument without quoting.
pub(crate) fn check(id: &str) -> Result<String, Error> {
    let ok = !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(id.to_string())
    } else {
        Err(Error::Usage(format!(
            "use the run id {id:?}: write 1 to {MAX_LEN} characters of letters, digits, `_`, `.` and `-` \
             (set {ENV_RUN_ID}, or unset it to use the CI's own run id)"
        )))
    }
}

/// The label of the run, when there is one.
pub(crate) fn label(run: Option<&str>) -> Option<(String, String)> {
    run.map(|id| (RUN_LABEL.to_string(), id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_label_safe() {
        assert_eq!(check("123-2").unwrap(), "123-2");
        assert_eq!(check("build.7_a").unwrap(), "build.7_a");
        for bad in ["", "a b", "x=y", "a,b", &"x".repeat(129)] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
