//! Black-box tests: daemon.

#[path = "../common/mod.rs"]
mod common;
