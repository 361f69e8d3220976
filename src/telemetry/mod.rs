//! Logs, metrics and the systemd notification protocol.

pub mod logging;
pub mod metrics;
pub mod systemd;
