//! The GPU supervisor: opens NVML, reads the inventory, samples every GPU on its own thread,
//! receives XIDs on another, keeps the history, evaluates health and tells listeners when a
//! GPU fails. Readers (the API, `/metrics`, placement) only read its latest state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::health::{Health, HealthState, Tracker};
use super::history::{History, Point, Resolution};
use super::host_services::{self, BusStatus, HostServices, ServiceState};
use super::metrics;
use super::nvml::Nvml;
use super::reading::{DriverInfo, GpuInventory, GpuSample, XidEvent};
use super::xid;
use crate::auth::audit::{self, AuditEvent, Outcome};
use crate::config::GpuConfig;
use crate::store::{Store, StoreError};

/// Whether NVML is in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "lowercase")]
pub enum NvmlStatus {
    /// `[gpu] enabled = false`.
    Disabled,
    /// No driver, no library or no permission: the daemon runs CPU-only; the text says why.
    Unavailable(String),
    /// NVML answers.
    Ok,
}

/// XIDs a GPU reported since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct XidCounts {
    /// Count per XID number.
    pub counts: BTreeMap<u64, u64>,
    /// The latest one.
    pub last: Option<XidEvent>,
}

/// One GPU as the supervisor sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GpuStatus {
    /// What it is.
    #[serde(flatten)]
    pub inventory: GpuInventory,
    /// Its health and why.
    pub health: HealthState,
    /// The latest sample.
    pub sample: Option<GpuSample>,
    /// XIDs since start.
    pub xids: XidCounts,
}

/// The host services the GPUs depend on.
#[derive(Debug, Clone, Serialize)]
pub struct HostServicesStatus {
    /// Whether the system bus can be read.
    pub bus: BusStatus,
    /// Each watched unit.
    pub units: Vec<ServiceState>,
}

/// Everything the supervisor knows, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Whether NVML is in use.
    pub nvml: NvmlStatus,
    /// The driver, when NVML answers.
    pub driver: Option<DriverInfo>,
    /// Milliseconds between samples.
    pub sample_interval_ms: u64,
    /// Every GPU, by index.
    pub gpus: Vec<GpuStatus>,
    /// The host services.
    pub host_services: HostServicesStatus,
}

/// Called with a GPU whose health changed, after the change is recorded.
pub type HealthListener = Box<dyn Fn(&GpuStatus, Health) + Send + Sync>;

struct GpuEntry {
    status: GpuStatus,
    tracker: Tracker,
    history: History,
}

#[derive(Default)]
struct State {
    driver: Option<DriverInfo>,
    gpus: Vec<GpuEntry>,
    host_reasons: Vec<String>,
}

/// The GPU supervisor (see the module documentation).
pub struct Gpus {
    nvml_status: NvmlStatus,
    interval: Duration,
    state: RwLock<State>,
    listeners: Mutex<Vec<HealthListener>>,
    host: Mutex<Option<HostServices>>,
    stop: Arc<AtomicBool>,
    store: Option<Store>,
    hostname: String,
    /// Sampling rounds done, and the sampler thread's CPU time they took (nanoseconds).
    rounds: AtomicU64,
    sampler_cpu_ns: AtomicU64,
    /// The GPU metrics in Prometheus text, rendered after each change (see `metrics`).
    metrics_text: RwLock<Arc<str>>,
}

/// The sampler's own cost, for `/metrics` and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerCost {
    /// Sampling rounds done (each reads every GPU once).
    pub rounds: u64,
    /// CPU time the sampler thread spent in them, nanoseconds.
    pub cpu_ns: u64,
}

/// How often the sampler re-reads the inventory, in samples: new or vanished GPUs are rare.
const INVENTORY_EVERY: u64 = 60;

impl Gpus {
    /// Opens NVML and reads the inventory; starts nothing. A missing driver or library gives
    /// a CPU-only supervisor that says why. `store` receives health transitions as audit rows.
    pub fn open(config: &GpuConfig, store: Option<Store>) -> Arc<Gpus> {
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut gpus = Gpus {
            nvml_status: NvmlStatus::Disabled,
            interval: Duration::from_millis(config.sample_interval_ms),
            state: RwLock::new(State::default()),
            listeners: Mutex::new(Vec::new()),
            host: Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            store,
            hostname,
            rounds: AtomicU64::new(0),
            sampler_cpu_ns: AtomicU64::new(0),
            metrics_text: RwLock::new(Arc::from("")),
        };
        if !config.enabled {
            return Arc::new(gpus);
        }
        let library = (!config.nvml_library.is_empty()).then(|| Path::new(&config.nvml_library));
        let nvml = match Nvml::open(library) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!("no usable GPU, running CPU-only: {e}");
                gpus.nvml_status = NvmlStatus::Unavailable(e.to_string());
                return Arc::new(gpus);
            }
        };
        let inventory = match nvml.inventory() {
            Ok(i) => i,
            Err(e) => {
                let why = format!("NVML loaded but the GPUs cannot be listed: {e}");
                tracing::warn!("running CPU-only: {why}");
                gpus.nvml_status = NvmlStatus::Unavailable(why);
                return Arc::new(gpus);
            }
        };
        let driver = nvml.driver();
        tracing::info!(
            gpus = inventory.len(),
            driver = %driver.driver_version,
            cuda = %driver.cuda_driver_version,
            "NVML ready"
        );
        let per_sample = u64::try_from(gpus.interval.as_millis())
            .unwrap_or(1000)
            .max(1);
        let recent = usize::try_from(config.history_seconds * 1000 / per_sample).unwrap_or(0);
        let minutes = usize::try_from(config.history_minutes).unwrap_or(0);
        {
            let state = gpus.state.get_mut().unwrap_or_else(|p| p.into_inner());
            state.driver = Some(driver);
            state.gpus = inventory
                .into_iter()
                .map(|inventory| GpuEntry::new(inventory, recent, minutes))
                .collect();
        }
        gpus.nvml_status = NvmlStatus::Ok;
        let gpus = Arc::new(gpus);
        gpus.clone().spawn_threads(Arc::new(nvml), recent, minutes);
        gpus
    }

    fn spawn_threads(self: Arc<Self>, nvml: Arc<Nvml>, recent: usize, minutes: usize) {
        let me = self.clone();
        let watched = nvml
            .clone()
            .watch_xids(self.stop.clone(), move |event| me.on_xid(event));
        if let Err(e) = watched {
            tracing::warn!("XID events cannot be received: {e}");
        }
        let sampler = self.clone();
        let spawned = std::thread::Builder::new()
            .name("gpu-sampler".into())
            .spawn(move || sampler.sample_loop(&nvml, recent, minutes));
        if let Err(e) = spawned {
            tracing::error!("the GPU sampler cannot start: {e}");
        }
    }

    /// Starts watching the host services over D-Bus; their failures degrade every GPU.
    pub async fn watch_host_services(self: &Arc<Self>, config: &GpuConfig) {
        let me = Arc::downgrade(self);
        let host = HostServices::start(config, move |states: &[ServiceState]| {
            if let Some(gpus) = me.upgrade() {
                gpus.on_host_services(states);
            }
        })
        .await;
        let (_, states) = host.snapshot();
        self.on_host_services(&states);
        if let Ok(mut slot) = self.host.lock() {
            *slot = Some(host);
        }
    }

    /// Registers a listener for health changes.
    pub fn on_health_change(&self, listener: HealthListener) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push(listener);
        }
    }

    /// Stops the sampler, the XID thread and the host-service watcher.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut host) = self.host.lock()
            && let Some(h) = host.take()
        {
            h.stop();
        }
    }

    /// Whether NVML is in use.
    pub fn nvml_status(&self) -> &NvmlStatus {
        &self.nvml_status
    }

    /// The host's name, for the `Hostname` label of GPU metrics.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The host services and the bus they are read from.
    pub fn host_services(&self) -> HostServicesStatus {
        let host = self.host.lock().unwrap_or_else(|p| p.into_inner());
        match host.as_ref().map(HostServices::snapshot) {
            Some((bus, units)) => HostServicesStatus { bus, units },
            None => HostServicesStatus {
                bus: BusStatus::Off,
                units: Vec::new(),
            },
        }
    }

    /// Everything known now.
    pub fn overview(&self) -> Overview {
        let host_services = self.host_services();
        let state = self.read();
        Overview {
            nvml: self.nvml_status.clone(),
            driver: state.driver.clone(),
            sample_interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            gpus: state.gpus.iter().map(|g| g.status.clone()).collect(),
            host_services,
        }
    }

    /// What sampling has cost so far.
    pub fn sampler_cost(&self) -> SamplerCost {
        SamplerCost {
            rounds: self.rounds.load(Ordering::Relaxed),
            cpu_ns: self.sampler_cpu_ns.load(Ordering::Relaxed),
        }
    }

    /// Why host services degrade the GPUs (empty when they are fine or not installed).
    pub fn host_reasons(&self) -> Vec<String> {
        self.read().host_reasons.clone()
    }

    /// The GPUs now (cheaper than [`Gpus::overview`]: no host services).
    pub fn statuses(&self) -> Vec<GpuStatus> {
        self.read().gpus.iter().map(|g| g.status.clone()).collect()
    }

    /// The history of the GPU with `uuid`, or `None` when there is no such GPU.
    pub fn history(&self, uuid: &str, resolution: Resolution, since_ms: i64) -> Option<Vec<Point>> {
        self.read()
            .gpus
            .iter()
            .find(|g| g.status.inventory.uuid == uuid)
            .map(|g| g.history.points(resolution, since_ms))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn sample_loop(&self, nvml: &Nvml, recent: usize, minutes: usize) {
        let mut next = Instant::now();
        let mut tick: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            if tick > 0 && tick.is_multiple_of(INVENTORY_EVERY) {
                self.refresh_inventory(nvml, recent, minutes);
            }
            let cpu_before = thread_cpu_ns();
            let indexes: Vec<u32> = self
                .read()
                .gpus
                .iter()
                .map(|g| g.status.inventory.index)
                .collect();
            // Read NVML without the lock: a slow driver call must not stall the readers.
            let samples: Vec<GpuSample> = indexes.iter().map(|&i| nvml.sample(i)).collect();
            let mut changes = Vec::new();
            {
                let mut state = self.write();
                let State {
                    gpus, host_reasons, ..
                } = &mut *state;
                for (entry, sample) in gpus.iter_mut().zip(samples) {
                    entry.history.push(&sample);
                    let health = entry.tracker.evaluate(&sample, host_reasons);
                    entry.status.sample = Some(sample);
                    if let Some(before) = entry.set_health(health) {
                        changes.push((entry.status.clone(), before));
                    }
                }
            }
            self.announce(changes);
            self.rounds.fetch_add(1, Ordering::Relaxed);
            self.refresh_metrics();
            self.sampler_cpu_ns.fetch_add(
                thread_cpu_ns().saturating_sub(cpu_before),
                Ordering::Relaxed,
            );
            tick += 1;
            next += self.interval;
            let now = Instant::now();
            if next < now {
                // Behind (a slow driver): skip the missed ticks rather than sample in a burst.
                next = now + self.interval;
            }
            while !self.stop.load(Ordering::Relaxed) {
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(200)));
            }
        }
    }

    fn refresh_inventory(&self, nvml: &Nvml, recent: usize, minutes: usize) {
        let Ok(now) = nvml.inventory() else {
            return;
        };
        let mut state = self.write();
        let same = now.len() == state.gpus.len()
            && now
                .iter()
                .zip(&state.gpus)
                .all(|(a, b)| a.uuid == b.status.inventory.uuid);
        if same {
            for (inv, entry) in now.into_iter().zip(state.gpus.iter_mut()) {
                entry.status.inventory = inv;
            }
            return;
        }
        tracing::warn!(
            before = state.gpus.len(),
            now = now.len(),
            "the set of GPUs changed"
        );
        let mut old: HashMap<String, GpuEntry> = state
            .gpus
            .drain(..)
            .map(|g| (g.status.inventory.uuid.clone(), g))
            .collect();
        state.gpus = now
            .into_iter()
            .map(|inv| match old.remove(&inv.uuid) {
                Some(mut kept) => {
                    kept.status.inventory = inv;
                    kept
                }
                None => GpuEntry::new(inv, recent, minutes),
            })
            .collect();
    }

    fn on_xid(&self, event: XidEvent) {
        let (meaning, _) = xid::describe(event.xid);
        tracing::error!(
            gpu = event.index,
            uuid = %event.uuid,
            xid = event.xid,
            "XID {}: {meaning}",
            event.xid
        );
        let mut changes = Vec::new();
        {
            let mut state = self.write();
            let State {
                gpus, host_reasons, ..
            } = &mut *state;
            if let Some(entry) = gpus
                .iter_mut()
                .find(|g| g.status.inventory.uuid == event.uuid)
            {
                entry.tracker.xid(event.xid, event.at_ms);
                *entry.status.xids.counts.entry(event.xid).or_default() += 1;
                entry.status.xids.last = Some(event.clone());
                // Judge at once: a GPU that fell off the bus must not wait for the next sample.
                let sample = entry.status.sample.clone().unwrap_or(GpuSample {
                    at_ms: event.at_ms,
                    ..GpuSample::default()
                });
                let health = entry.tracker.evaluate(&sample, host_reasons);
                if let Some(before) = entry.set_health(health) {
                    changes.push((entry.status.clone(), before));
                }
            }
        }
        self.announce(changes);
        self.refresh_metrics();
    }

    fn on_host_services(&self, states: &[ServiceState]) {
        let reasons = host_services::fold(states);
        let mut changes = Vec::new();
        {
            let mut state = self.write();
            if state.host_reasons == reasons {
                drop(state);
                // The units' states still show in the metrics.
                self.refresh_metrics();
                return;
            }
            state.host_reasons = reasons;
            let State {
                gpus, host_reasons, ..
            } = &mut *state;
            for entry in gpus.iter_mut() {
                if let Some(sample) = entry.status.sample.clone() {
                    let health = entry.tracker.evaluate(&sample, host_reasons);
                    if let Some(before) = entry.set_health(health) {
                        changes.push((entry.status.clone(), before));
                    }
                }
            }
        }
        self.announce(changes);
        self.refresh_metrics();
    }

    /// The GPU metrics in Prometheus text, as of the latest sample or change.
    pub fn metrics_text(&self) -> Arc<str> {
        self.metrics_text
            .read()
            .map_or_else(|p| p.into_inner().clone(), |t| t.clone())
    }

    fn refresh_metrics(&self) {
        let text = {
            let state = self.read();
            let statuses: Vec<GpuStatus> = state.gpus.iter().map(|g| g.status.clone()).collect();
            drop(state);
            metrics::render(
                &statuses,
                &self.host_services(),
                &self.hostname,
                self.sampler_cost(),
            )
        };
        let mut slot = self.metrics_text.write().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::from(text);
    }

    /// Logs, audits and tells listeners about health changes.
    fn announce(&self, changes: Vec<(GpuStatus, Health)>) {
        for (gpu, before) in changes {
            let now = gpu.health.health;
            let reasons = gpu.health.reasons.join("; ");
            let inv = &gpu.inventory;
            if now > before {
                tracing::warn!(gpu = inv.index, uuid = %inv.uuid, "GPU {} is {} (was {}): {reasons}", inv.index, now.as_str(), before.as_str());
            } else {
                tracing::info!(gpu = inv.index, uuid = %inv.uuid, "GPU {} is {} (was {})", inv.index, now.as_str(), before.as_str());
            }
            if let Some(store) = &self.store {
                let event = AuditEvent {
                    actor: Some("sparkbrain".into()),
                    action: "gpu.health",
                    target: Some(inv.uuid.clone()),
                    outcome: Outcome::Allowed,
                    source: None,
                    detail: Some(format!(
                        "GPU {} {} -> {}{}",
                        inv.index,
                        before.as_str(),
                        now.as_str(),
                        if reasons.is_empty() {
                            String::new()
                        } else {
                            format!(": {reasons}")
                        }
                    )),
                };
                if let Err(e) =
                    store.with_conn(|c| audit::record(c, &event).map_err(StoreError::from))
                {
                    tracing::warn!(error = %e, "cannot audit a GPU health change");
                }
            }
            if let Ok(listeners) = self.listeners.lock() {
                for listener in listeners.iter() {
                    listener(&gpu, before);
                }
            }
        }
    }
}

impl GpuEntry {
    fn new(inventory: GpuInventory, recent: usize, minutes: usize) -> GpuEntry {
        GpuEntry {
            status: GpuStatus {
                inventory,
                health: HealthState {
                    health: Health::Healthy,
                    reasons: Vec::new(),
                },
                sample: None,
                xids: XidCounts::default(),
            },
            tracker: Tracker::default(),
            history: History::new(recent, minutes),
        }
    }

    /// Records a health; the previous one when it changed.
    fn set_health(&mut self, health: HealthState) -> Option<Health> {
        let before = self.status.health.health;
        let changed = before != health.health;
        self.status.health = health;
        changed.then_some(before)
    }
}

/// CPU time of the calling thread, nanoseconds (0 when the clock cannot be read).
fn thread_cpu_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}
