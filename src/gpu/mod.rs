//! GPU supervision: inventory and telemetry through NVML, XID events, health per GPU, the
//! host services the GPUs depend on (over D-Bus), DCGM-named metrics and health-aware
//! placement of model instances. No driver or no GPU is a normal state: the daemon runs
//! CPU-only and says why.

pub mod health;
pub mod history;
pub mod host_services;
pub mod metrics;
pub mod nvml;
pub mod placement;
pub mod reading;
mod supervisor;
pub mod xid;

pub use supervisor::{
    GpuStatus, Gpus, HealthListener, HostServicesStatus, NvmlStatus, Overview, SamplerCost,
    XidCounts,
};
