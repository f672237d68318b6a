//! The subcommands besides the test run: `exec` (any command inside a session), `sweep` (removing
//! the resources of sessions that are over), `services` (what a profile's services would export), and
//! `completions`/`man` (generated from the clap definitions), and the hidden `__host` (the session
//! host the `cleantest` crate starts under other runners). Thin: each parses its arguments, then
//! calls `session` and `docker`; the policy lives there.

pub(crate) mod completions;
pub(crate) mod exec;
pub(crate) mod host;
pub(crate) mod services;
pub(crate) mod sweep;
