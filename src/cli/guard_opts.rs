//! The resource guard's options (`--max-containers`, `--max-memory`, `--default-memory`,
//! `--min-free-memory`): limits on what one session may take of the engine and the host. Each is also a
//! profile key of the same name (`config::guard`).

use super::Memory;

/// The resource guard, as given on the command line.
#[derive(clap::Args, Debug, Default, Clone)]
#[command(next_help_heading = "Resource Guard")]
pub(crate) struct GuardOpts {
    /// Refuse a container create once the session has N containers
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_containers: Option<u64>,
    /// Refuse a container create that would take the memory limits of the session's running containers over SIZE
    #[arg(long, value_name = "SIZE", value_parser = Memory::parse)]
    pub max_memory: Option<Memory>,
    /// Memory limit given to containers created without one
    #[arg(long, value_name = "SIZE", value_parser = Memory::parse)]
    pub default_memory: Option<Memory>,
    /// Warn at start when the host has less memory available than SIZE
    #[arg(long, value_name = "SIZE", value_parser = Memory::parse)]
    pub min_free_memory: Option<Memory>,
    /// Refuse to start, instead of warning, when the host has less than --min-free-memory available
    #[arg(long)]
    pub require_free_memory: bool,
}
