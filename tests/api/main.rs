//! Black-box tests: api.

#[path = "../common/mod.rs"]
mod common;
