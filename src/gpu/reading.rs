//! What is read from NVML: the inventory of a GPU, one sample of its telemetry, an XID event.
//! Every telemetry field is optional because GPUs differ in what they support
//! (`NVML_ERROR_NOT_SUPPORTED` is not an error, the field is just absent).

use serde::Serialize;

/// The driver the GPUs run under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriverInfo {
    /// Driver version, e.g. `550.54.15`.
    pub driver_version: String,
    /// CUDA driver API version, e.g. `12.4`.
    pub cuda_driver_version: String,
    /// NVML library version, e.g. `12.550.54.15`.
    pub nvml_version: String,
}

/// What a GPU is: read at start and when the set of GPUs changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuInventory {
    /// NVML index (the `gpu` label of DCGM metrics).
    pub index: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// `GPU-…` UUID, stable across reboots.
    pub uuid: String,
    /// PCI bus id, e.g. `00000000:1B:00.0`.
    pub pci_bus_id: String,
    /// Board serial number.
    pub serial: Option<String>,
    /// Framebuffer memory in bytes.
    pub memory_total_bytes: u64,
    /// CUDA compute capability, e.g. `9.0`.
    pub compute_capability: Option<String>,
    /// Multi-instance GPU mode is enabled (current mode).
    pub mig_enabled: Option<bool>,
    /// Persistence mode is enabled.
    pub persistence_mode: Option<bool>,
    /// Enforced power limit in watts.
    pub power_limit_watts: Option<f64>,
}

/// One reading of a GPU's telemetry.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuSample {
    /// When it was read, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// GPU utilisation, percent of the sample period a kernel ran.
    pub gpu_util_pct: Option<u32>,
    /// Memory-copy utilisation, percent of the period memory was read or written.
    pub mem_copy_util_pct: Option<u32>,
    /// Framebuffer used, bytes.
    pub fb_used_bytes: Option<u64>,
    /// Framebuffer free, bytes.
    pub fb_free_bytes: Option<u64>,
    /// GPU temperature, °C.
    pub gpu_temp_c: Option<u32>,
    /// Memory (HBM) temperature, °C.
    pub memory_temp_c: Option<u32>,
    /// Power draw, watts.
    pub power_watts: Option<f64>,
    /// Energy used since the driver loaded, millijoules.
    pub energy_mj: Option<u64>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<u32>,
    /// Clock throttle reasons, NVML's bit mask (`nvmlClocksThrottleReasons*`).
    pub throttle_reasons: Option<u64>,
    /// Volatile (since boot) single-bit ECC errors, corrected.
    pub ecc_sbe_volatile: Option<u64>,
    /// Volatile double-bit ECC errors, uncorrected.
    pub ecc_dbe_volatile: Option<u64>,
    /// Aggregate (lifetime) single-bit ECC errors.
    pub ecc_sbe_aggregate: Option<u64>,
    /// Aggregate double-bit ECC errors.
    pub ecc_dbe_aggregate: Option<u64>,
    /// Pages retired for single-bit errors (pre-Ampere GPUs).
    pub retired_pages_sbe: Option<u64>,
    /// Pages retired for double-bit errors (pre-Ampere GPUs).
    pub retired_pages_dbe: Option<u64>,
    /// A page retirement waits for the next driver reload.
    pub retired_pages_pending: Option<bool>,
    /// Rows remapped for correctable errors (Ampere and later).
    pub remapped_rows_correctable: Option<u64>,
    /// Rows remapped for uncorrectable errors.
    pub remapped_rows_uncorrectable: Option<u64>,
    /// A row remapping waits for the next GPU reset.
    pub remap_pending: Option<bool>,
    /// A row remapping failed.
    pub remap_failed: Option<bool>,
    /// PCIe replay counter.
    pub pcie_replay_count: Option<u64>,
    /// Fields whose read failed with a real error (not "not supported"), as
    /// `field: NVML error`, e.g. `temperature: GPU is lost`.
    pub errors: Vec<String>,
    /// One of the errors says the GPU is gone (`NVML_ERROR_GPU_IS_LOST`).
    pub gpu_lost: bool,
}

/// An XID error NVML reported for a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XidEvent {
    /// NVML index of the GPU.
    pub index: u32,
    /// UUID of the GPU.
    pub uuid: String,
    /// The XID number.
    pub xid: u64,
    /// When it was received, milliseconds since the Unix epoch.
    pub at_ms: i64,
}
