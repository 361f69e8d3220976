//! A thin reader over NVML (through `nvml-wrapper`): the driver, the inventory of the GPUs,
//! one telemetry sample of a GPU, and the XID events of all of them.
//!
//! NVML is loaded at run time from a path, so a host without an NVIDIA driver is a normal
//! state ([`Unavailable`]) rather than a crash, and tests can load a fake library that
//! answers from a scenario (`tests/fixtures/fake_nvml`).
//!
//! Nothing here panics on an NVML answer: a reading that fails becomes `None` (plus an entry
//! in [`GpuSample::errors`] when the failure is a real error rather than "not supported").

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::Device;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::nvml_try;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::NVML_FI_DEV_MEMORY_TEMP;

pub use nvml_wrapper::error::NvmlError;

use super::reading::{DriverInfo, GpuInventory, GpuSample, XidEvent};
use crate::store::now_ms;

/// The library name the NVIDIA driver installs; `dlopen` finds it on the loader path.
const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// How long one wait for XID events lasts, so the watcher notices `stop` promptly.
const XID_WAIT_MS: u32 = 500;

/// Pause after an unexpected NVML error while waiting for events, so a persistent error
/// (a lost GPU, say) cannot turn the watcher into a busy loop.
const XID_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Why NVML cannot be used on this host. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The library could not be loaded from the path (absent, unreadable, wrong
    /// architecture).
    #[error(
        "NVML library {path} could not be loaded ({reason}): install the NVIDIA driver, or set \
         [gpu] nvml_library to the path of libnvidia-ml.so.1"
    )]
    LibraryNotFound {
        /// The path or name that was tried.
        path: String,
        /// What the dynamic loader said.
        reason: String,
    },
    /// The library loaded but is not a usable NVML (its init function is missing).
    #[error(
        "{path} is not a usable NVML library ({reason}): point [gpu] nvml_library at the \
         driver's libnvidia-ml.so.1"
    )]
    NotNvml {
        /// The path or name that was loaded.
        path: String,
        /// What was missing.
        reason: String,
    },
    /// NVML is there but the NVIDIA kernel driver is not running (or there is no GPU).
    #[error(
        "the NVIDIA driver is not loaded: check that the GPUs are visible (lspci) and the \
         nvidia kernel module is loaded (nvidia-smi should work)"
    )]
    DriverNotLoaded,
    /// The process may not talk to the driver.
    #[error(
        "no permission to talk to the NVIDIA driver: run sparkbrain as a user that can open \
         /dev/nvidiactl and /dev/nvidia*"
    )]
    NoPermission,
    /// The user-space library and the kernel module come from different driver versions.
    #[error(
        "the NVML library and the NVIDIA kernel module are different driver versions: reboot, or \
         reload the nvidia kernel module after a driver upgrade"
    )]
    VersionMismatch,
    /// Any other failure of `nvmlInit`.
    #[error("NVML failed to initialise: {0}")]
    Init(#[source] NvmlError),
}

/// An initialised NVML. Cheap to share: NVML is thread-safe, so one instance in an `Arc`
/// serves the sampler and the XID watcher at once.
pub struct Nvml {
    /// The loaded library; shutting NVML down and unloading it happen on drop.
    inner: nvml_wrapper::Nvml,
}

// The supervisor keeps one `Nvml` in an `Arc` across threads; fail the build, not the
// daemon, if that stops being possible.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Nvml>();
};

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nvml")
    }
}

impl Nvml {
    /// Loads NVML from `library` (default: the driver's `libnvidia-ml.so.1` on the loader
    /// path) and initialises it.
    pub fn open(library: Option<&Path>) -> Result<Nvml, Unavailable> {
        let path = library.map(Path::as_os_str);
        let shown = path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_LIBRARY.to_owned());
        let mut builder = nvml_wrapper::Nvml::builder();
        if let Some(p) = path {
            builder.lib_path(p);
        }
        match builder.init() {
            Ok(inner) => Ok(Nvml { inner }),
            Err(e) => Err(match e {
                NvmlError::LibloadingError(err) => Unavailable::LibraryNotFound {
                    path: shown,
                    reason: err.to_string(),
                },
                NvmlError::FailedToLoadSymbol(reason) => Unavailable::NotNvml {
                    path: shown,
                    reason,
                },
                NvmlError::DriverNotLoaded => Unavailable::DriverNotLoaded,
                NvmlError::NoPermission => Unavailable::NoPermission,
                NvmlError::LibRmVersionMismatch => Unavailable::VersionMismatch,
                other => Unavailable::Init(other),
            }),
        }
    }

    /// The driver, CUDA and NVML versions; a version NVML cannot tell is an empty string
    /// (they are shown to people, never parsed).
    pub fn driver(&self) -> DriverInfo {
        let cuda = self
            .inner
            .sys_cuda_driver_version()
            .map(|v| {
                format!(
                    "{}.{}",
                    nvml_wrapper::cuda_driver_version_major(v),
                    nvml_wrapper::cuda_driver_version_minor(v)
                )
            })
            .unwrap_or_default();
        DriverInfo {
            driver_version: self.inner.sys_driver_version().unwrap_or_default(),
            cuda_driver_version: cuda,
            nvml_version: self.inner.sys_nvml_version().unwrap_or_default(),
        }
    }

    /// Number of GPUs NVML sees.
    pub fn device_count(&self) -> Result<u32, NvmlError> {
        self.inner.device_count()
    }

    /// What each GPU is. A GPU's name, UUID, PCI bus id and memory size are required (an
    /// error there fails the inventory, since a GPU that cannot be identified cannot be
    /// supervised); the other fields are `None` when NVML cannot give them.
    pub fn inventory(&self) -> Result<Vec<GpuInventory>, NvmlError> {
        let count = self.inner.device_count()?;
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            let d = self.inner.device_by_index(index)?;
            gpus.push(GpuInventory {
                index,
                name: d.name()?,
                uuid: d.uuid()?,
                pci_bus_id: d.pci_info()?.bus_id,
                serial: optional(index, "serial", d.serial()),
                memory_total_bytes: d.memory_info()?.total,
                compute_capability: optional(
                    index,
                    "compute capability",
                    d.cuda_compute_capability(),
                )
                .map(|c| format!("{}.{}", c.major, c.minor)),
                mig_enabled: optional(index, "MIG mode", d.mig_mode()).map(|m| m.current == 1),
                persistence_mode: optional(index, "persistence mode", d.is_in_persistent_mode()),
                // NVML reports milliwatts.
                power_limit_watts: optional(index, "power limit", d.enforced_power_limit())
                    .map(|mw| f64::from(mw) / 1000.0),
            });
        }
        Ok(gpus)
    }

    /// One reading of every telemetry field of GPU `index`. Never fails as a whole: each
    /// field that cannot be read is `None`, and real errors are listed in `errors`.
    pub fn sample(&self, index: u32) -> GpuSample {
        let mut r = Reading {
            s: GpuSample {
                at_ms: now_ms(),
                ..GpuSample::default()
            },
        };
        let d = match self.inner.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                r.fail("device", e);
                return r.s;
            }
        };

        if let Some(u) = r.read("utilization", || d.utilization_rates()) {
            r.s.gpu_util_pct = Some(u.gpu);
            r.s.mem_copy_util_pct = Some(u.memory);
        }
        if let Some(m) = r.read("memory", || d.memory_info()) {
            r.s.fb_used_bytes = Some(m.used);
            r.s.fb_free_bytes = Some(m.free);
        }
        r.s.gpu_temp_c = r.read("temperature", || d.temperature(TemperatureSensor::Gpu));
        r.s.memory_temp_c = r.read("memory temperature", || memory_temperature(&d));
        // NVML reports milliwatts.
        r.s.power_watts = r
            .read("power", || d.power_usage())
            .map(|mw| f64::from(mw) / 1000.0);
        r.s.energy_mj = r.read("energy", || d.total_energy_consumption());
        r.s.sm_clock_mhz = r.read("SM clock", || d.clock_info(Clock::SM));
        r.s.mem_clock_mhz = r.read("memory clock", || d.clock_info(Clock::Memory));
        // The wrapper keeps the bits NVML documents; they are stored raw so the DCGM-named
        // metric carries NVML's own mask.
        r.s.throttle_reasons = r
            .read("throttle reasons", || d.current_throttle_reasons())
            .map(|t| t.bits());
        r.s.ecc_sbe_volatile = r.read("ECC corrected volatile", || {
            d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
        });
        r.s.ecc_dbe_volatile = r.read("ECC uncorrected volatile", || {
            d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
        });
        r.s.ecc_sbe_aggregate = r.read("ECC corrected aggregate", || {
            d.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)
        });
        r.s.ecc_dbe_aggregate = r.read("ECC uncorrected aggregate", || {
            d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)
        });
        r.s.retired_pages_sbe = r
            .read("retired pages (single-bit)", || {
                d.retired_pages(RetirementCause::MultipleSingleBitEccErrors)
            })
            .map(|p| p.len() as u64);
        r.s.retired_pages_dbe = r
            .read("retired pages (double-bit)", || {
                d.retired_pages(RetirementCause::DoubleBitEccError)
            })
            .map(|p| p.len() as u64);
        r.s.retired_pages_pending =
            r.read("retired pages pending", || d.are_pages_pending_retired());
        if let Some(rows) = r.read("remapped rows", || self.remapped_rows(&d)) {
            r.s.remapped_rows_correctable = Some(u64::from(rows.correctable));
            r.s.remapped_rows_uncorrectable = Some(u64::from(rows.uncorrectable));
            r.s.remap_pending = Some(rows.pending);
            r.s.remap_failed = Some(rows.failed);
        }
        r.s.pcie_replay_count = r
            .read("PCIe replay counter", || d.pcie_replay_counter())
            .map(u64::from);
        r.s
    }

    /// Row remapping (Ampere and later). `nvml-wrapper` 0.13 has no safe method for
    /// `nvmlDeviceGetRemappedRows`, so it is called through the loaded symbol.
    fn remapped_rows(&self, d: &Device<'_>) -> Result<RemappedRows, NvmlError> {
        // A driver too old to have the function cannot remap rows either.
        let Ok(f) = self.inner.lib().nvmlDeviceGetRemappedRows.as_ref() else {
            return Err(NvmlError::NotSupported);
        };
        let (mut corr, mut unc, mut pending, mut failed) = (0u32, 0u32, 0u32, 0u32);
        // SAFETY: `f` is NVML's `nvmlDeviceGetRemappedRows` from the library `self.inner`
        // keeps loaded; the handle comes from that same library and the four out-pointers are
        // to live locals of the C types (unsigned int) NVML writes.
        let code = unsafe { f(d.handle(), &mut corr, &mut unc, &mut pending, &mut failed) };
        nvml_try(code)?;
        Ok(RemappedRows {
            correctable: corr,
            uncorrectable: unc,
            pending: pending != 0,
            failed: failed != 0,
        })
    }

    /// Starts a thread (`gpu-xid`) that waits for critical XID events of every GPU that can
    /// report them and calls `on_event` for each, until `stop` is set (noticed within about
    /// half a second). Fails if the event set cannot be created or the GPUs cannot be
    /// listed; GPUs that do not support XID events are skipped.
    pub fn watch_xids(
        self: Arc<Self>,
        stop: Arc<AtomicBool>,
        on_event: impl FnMut(XidEvent) + Send + 'static,
    ) -> Result<JoinHandle<()>, NvmlError> {
        // The event set borrows the NVML instance, so it has to be made on the thread that
        // owns the `Arc`; the setup result comes back over this channel.
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), NvmlError>>(1);
        let spawned = std::thread::Builder::new()
            .name("gpu-xid".into())
            .spawn(move || self.xid_thread(&stop, on_event, ready_tx));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "could not start the GPU XID thread");
                return Err(NvmlError::Unknown);
            }
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => {
                // The thread has already returned; joining only reaps it.
                let _ = handle.join();
                Err(e)
            }
            // The thread ended without a word (it cannot panic by design, but be safe).
            Err(_) => {
                let _ = handle.join();
                Err(NvmlError::Unknown)
            }
        }
    }

    /// Body of the XID thread: register, report the setup result, then wait for events.
    fn xid_thread(
        &self,
        stop: &AtomicBool,
        mut on_event: impl FnMut(XidEvent),
        ready: std::sync::mpsc::SyncSender<Result<(), NvmlError>>,
    ) {
        let setup = self.register_xids();
        let (set, gpus) = match setup {
            Ok(v) => v,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let Some(set) = set else {
            tracing::info!("no GPU reports XID events; not watching for them");
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            match set.wait(XID_WAIT_MS) {
                Ok(data) => {
                    if !data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                        continue;
                    }
                    let xid = match data.event_data {
                        Some(XidError::Value(v)) => v,
                        // NVML's own "unknown XID" value.
                        Some(XidError::Unknown) => 999,
                        None => continue,
                    };
                    // SAFETY: the handle is only compared with the handles registered
                    // above, never dereferenced.
                    let handle = unsafe { data.device.handle() } as usize;
                    let (index, uuid) = match gpus.iter().find(|g| g.handle == handle) {
                        Some(g) => (g.index, g.uuid.clone()),
                        None => (
                            data.device.index().unwrap_or(u32::MAX),
                            data.device.uuid().unwrap_or_default(),
                        ),
                    };
                    on_event(XidEvent {
                        index,
                        uuid,
                        xid,
                        at_ms: now_ms(),
                    });
                }
                Err(NvmlError::Timeout) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for GPU XID events failed");
                    std::thread::sleep(XID_ERROR_PAUSE);
                }
            }
        }
    }

    /// Creates an event set with every GPU that supports critical XID events; `None` when
    /// no GPU does.
    #[allow(clippy::type_complexity)]
    fn register_xids(
        &self,
    ) -> Result<(Option<nvml_wrapper::EventSet<'_>>, Vec<Watched>), NvmlError> {
        let count = self.inner.device_count()?;
        let mut set = self.inner.create_event_set()?;
        let mut watched: Vec<Watched> = Vec::new();
        for index in 0..count {
            let d = match self.inner.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(gpu = index, error = %e, "cannot watch this GPU for XID events");
                    continue;
                }
            };
            match d.supported_event_types() {
                Ok(t) if t.contains(EventTypes::CRITICAL_XID_ERROR) => {}
                Ok(_) | Err(NvmlError::NotSupported) => {
                    tracing::debug!(gpu = index, "GPU does not report XID events");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(gpu = index, error = %e, "cannot watch this GPU for XID events");
                    continue;
                }
            }
            match d.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(s) => {
                    set = s;
                    watched.push(Watched {
                        // SAFETY: kept only to recognise this GPU in events, never used
                        // as a pointer.
                        handle: unsafe { d.handle() } as usize,
                        index,
                        uuid: d.uuid().unwrap_or_default(),
                    });
                }
                Err(e) => {
                    tracing::warn!(gpu = index, error = %e.error, "cannot watch this GPU for XID events");
                    // A failed registration frees the set; start a new one with the GPUs
                    // registered so far.
                    set = self.inner.create_event_set()?;
                    for w in &watched {
                        let d = self.inner.device_by_index(w.index)?;
                        set = d
                            .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                            .map_err(|e| e.error)?;
                    }
                }
            }
        }
        if watched.is_empty() {
            return Ok((None, watched));
        }
        Ok((Some(set), watched))
    }
}

/// A GPU registered for XID events: its handle (as an address, to match events) and its
/// identity read once at registration, so an event on a GPU that is failing still names it.
struct Watched {
    handle: usize,
    index: u32,
    uuid: String,
}

/// What `nvmlDeviceGetRemappedRows` returns.
struct RemappedRows {
    correctable: u32,
    uncorrectable: u32,
    pending: bool,
    failed: bool,
}

/// A sample being filled in, with the error bookkeeping.
struct Reading {
    s: GpuSample,
}

impl Reading {
    /// Runs one NVML read unless the GPU is already known lost (every further call would only
    /// repeat that, and a lost GPU can make each call slow).
    fn read<T>(&mut self, field: &str, f: impl FnOnce() -> Result<T, NvmlError>) -> Option<T> {
        if self.s.gpu_lost {
            return None;
        }
        match f() {
            Ok(v) => Some(v),
            // The GPU lacks the feature: the field is simply absent.
            Err(NvmlError::NotSupported) => None,
            Err(e) => {
                self.fail(field, e);
                None
            }
        }
    }

    /// Records a real error on `field`.
    fn fail(&mut self, field: &str, e: NvmlError) {
        if matches!(e, NvmlError::GpuLost) {
            self.s.gpu_lost = true;
        }
        self.s.errors.push(format!("{field}: {e}"));
    }
}

/// HBM temperature, which NVML only gives as a field value.
fn memory_temperature(d: &Device<'_>) -> Result<u32, NvmlError> {
    let values = d.field_values_for(&[FieldId(NVML_FI_DEV_MEMORY_TEMP)])?;
    let Some(first) = values.into_iter().next() else {
        return Err(NvmlError::NotSupported);
    };
    Ok(match first?.value? {
        SampleValue::U32(v) => v,
        SampleValue::U64(v) => u32::try_from(v).unwrap_or(u32::MAX),
        SampleValue::I64(v) => u32::try_from(v).unwrap_or(0),
        SampleValue::F64(v) => v.round().clamp(0.0, f64::from(u32::MAX)) as u32,
    })
}

/// An optional inventory field: `None` when NVML cannot give it. Real errors are logged at
/// debug level only, since inventory is re-read and a missing serial is not actionable.
fn optional<T>(index: u32, what: &str, r: Result<T, NvmlError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(NvmlError::NotSupported) => None,
        Err(e) => {
            tracing::debug!(gpu = index, error = %e, "cannot read the GPU's {what}");
            None
        }
    }
}
