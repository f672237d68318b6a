//! The resource guard (`max-containers`, `max-memory`, `default-memory`, `min-free-memory`): each limit
//! resolved from the command line over the profile, with where it was set, which the refusals name.

use crate::cli::{GuardOpts, Memory};
use crate::contract::CONFIG_PATH;
pub(crate) use crate::docker::proxy::{Guard, Limit};

/// The guard's keys as a profile writes them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GuardConfig {
    pub max_containers: Option<u64>,
    pub max_memory: Option<Memory>,
    pub default_memory: Option<Memory>,
    pub min_free_memory: Option<Memory>,
}

/// The guard: the command line's flags over the profile's keys.
pub(crate) fn resolve(flags: &GuardOpts, profile: GuardConfig) -> Guard {
    let limit = |flag: Option<u64>, key: Option<u64>, name: &str| match (flag, key) {
        (Some(value), _) => Some(Limit {
            value,
            source: format!("--{name}"),
        }),
        (None, Some(value)) => Some(Limit {
            value,
            source: format!("{name} in {CONFIG_PATH}"),
        }),
        (None, None) => None,
    };
    let bytes = |m: Option<Memory>| m.map(|m| m.0);
    Guard {
        max_containers: limit(
            flags.max_containers,
            profile.max_containers,
            "max-containers",
        ),
        max_memory: limit(
            bytes(flags.max_memory),
            bytes(profile.max_memory),
            "max-memory",
        ),
        default_memory: bytes(flags.default_memory.or(profile.default_memory)),
        min_free_memory: limit(
            bytes(flags.min_free_memory),
            bytes(profile.min_free_memory),
            "min-free-memory",
        ),
        require_free_memory: flags.require_free_memory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_name_themselves() {
        let flags = GuardOpts {
            max_containers: Some(3),
            ..Default::default()
        };
        let profile = GuardConfig {
            max_containers: Some(20),
            max_memory: Some(Memory(4 << 30)),
            ..Default::default()
        };
        let guard = resolve(&flags, profile);
        assert_eq!(guard.max_containers.as_ref().unwrap().value, 3);
        assert_eq!(guard.max_containers.unwrap().source, "--max-containers");
        let memory = guard.max_memory.unwrap();
        assert_eq!(memory.value, 4 << 30);
        assert_eq!(memory.source, "max-memory in .config/cleantest.toml");
        assert!(guard.default_memory.is_none());
    }
}
