//! `-P NAME` / `--config-profile NAME` / `CLEANTEST_PROFILE`: which profile of `.config/cleantest.toml`
//! a command uses. One definition for the test run, `exec` and `services`, so they read it alike.

/// The profile option.
#[derive(clap::Args, Debug, Default, Clone)]
pub(crate) struct ProfileArg {
    /// Profile of .config/cleantest.toml to use [default: default]
    #[arg(
        short = 'P',
        long = "config-profile",
        value_name = "NAME",
        env = "CLEANTEST_PROFILE"
    )]
    pub config_profile: Option<String>,
}

impl ProfileArg {
    /// The profile `CLEANTEST_PROFILE` names, for a process that reads no command line (the session
    /// host): the same variable clap reads above.
    pub(crate) fn from_env() -> ProfileArg {
        ProfileArg {
            config_profile: std::env::var("CLEANTEST_PROFILE")
                .ok()
                .filter(|p| !p.is_empty()),
        }
    }
}
