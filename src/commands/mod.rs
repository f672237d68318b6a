//! The subcommands besides the test run: `exec` (any command inside a session) and `sweep` (removing
//! the resources of sessions that are over). Thin: each parses its arguments, then calls `session` and
//! `docker`; the policy lives there.

pub(crate) mod exec;
pub(crate) mod sweep;
