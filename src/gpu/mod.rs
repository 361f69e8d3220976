//! GPU supervision: inventory and telemetry through NVML, XID events, health per GPU, the
//! host services the GPUs depend on (over D-Bus), DCGM-named metrics and health-aware
//! placement of model instances.

pub mod host_services;
pub mod nvml;
pub mod reading;
