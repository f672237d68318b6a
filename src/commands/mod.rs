//! The subcommands besides the test run: `exec` (any command inside a session), `sweep` (removing
//! the resources of sessions that are over), `services` (what a profile's services would export), and
//! `completions`/`man` (generated from the clap definitions). Thin: each parses its arguments, then
//! calls `session` and `docker`; the policy lives there.

pub(crate) mod completions;
pub(crate) mod exec;
pub(crate) mod services;
pub(crate) mod sweep;
