//! Black-box tests: daemon.

#[path = "../common/mod.rs"]
mod common;

mod support;

mod config_errors;
mod health;
mod lifecycle;
mod metrics;
mod status;
mod store;
mod systemd;
mod tls;
