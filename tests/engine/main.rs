//! The integration cells that need more than the runner: a real Docker engine, docker-compose, postgres
//! or redis, or root. One libtest-mimic binary (so that a cell that cannot run here is reported ignored
//! with the reason, and fails under `CLEANTEST_REQUIRE_DOCKER=1`), one module per subject; a cell's
//! name is `MODULE::NAME`.

#[path = "../common/mod.rs"]
mod common;
#[path = "../../xtask/src/service_image.rs"]
mod service_image;

mod any_runner;
mod archive;
mod compose_conformance;
mod docker;
mod isolation;
mod library;
mod privileged;
mod proxy;
mod scale;
mod services;
mod ssh;

/// A module's cells.
type Cells = fn() -> Vec<common::docker::Cell>;

fn main() {
    // Re-run by `cargo cleantest exec` as a Docker client under test.
    proxy::play_role();
    let modules: [(&str, Cells); 11] = [
        ("ssh", ssh::cells),
        ("archive", archive::cells),
        ("docker", docker::cells),
        ("proxy", proxy::cells),
        ("services", services::cells),
        ("library", library::cells),
        ("any_runner", any_runner::cells),
        ("isolation", isolation::cells),
        ("scale", scale::cells),
        ("privileged", privileged::cells),
        ("compose_conformance", compose_conformance::cells),
    ];
    let mut cells = Vec::new();
    for (module, of) in modules {
        for mut cell in of() {
            cell.name = format!("{module}::{}", cell.name);
            cells.push(cell);
        }
    }
    common::docker::run_plain_trials(cells);
}
