//! The integration tests that need only the runner, cargo and the fixtures: one binary, one module per
//! subject (`cargo test --test plain timeouts::`), sharing `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod archive;
mod bad_input;
mod ci;
mod docs;
mod drop_in;
mod first_hour;
mod harnesses;
mod libtest_order;
mod session;
mod signals;
mod start_up;
mod timeouts;
mod tmpdir;
mod truthful_output;
