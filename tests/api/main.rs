//! Black-box tests: api.
//!
//! Every test starts the real `sparkbrain` binary on its own temporary data directory and a free
//! loopback port, and checks what a user of the HTTP API or the command line would check.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod bad_input;
mod cli;
mod console;
mod users;
mod util;
