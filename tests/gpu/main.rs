//! GPU supervision tests. This machine has no GPU, so NVML is the fake library in
//! `tests/fixtures/fake_nvml`, loaded by path exactly as a real `libnvidia-ml.so.1` is, and
//! the host's systemd is a stand-in on a private D-Bus bus (`systemd_standin.rs`).

#[path = "../common/mod.rs"]
mod common;

mod daemon;
mod fake_nvml;
mod host_services;
mod nvml;
mod systemd_standin;
