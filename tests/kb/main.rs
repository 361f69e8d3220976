//! Black-box tests: the knowledge base.
//!
//! Every test starts the real `sparkbrain` binary on its own data directory, uploads real
//! documents from `../shared/data` over HTTP, and checks what a user would check: statuses,
//! permissions, search hits.

#[path = "../common/mod.rs"]
mod common;

mod answers;
mod cli;
mod collections;
mod crash;
mod disk_full;
mod documents;
mod extract;
mod generation;
mod search;
mod upstream;
mod util;
