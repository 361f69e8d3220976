//! Which models are loaded, in which versions, and in what state.
//!
//! Loading opens every selected version before the new set replaces the old one, so a reload
//! never leaves a gap; requests hold an `Arc` of the version they run on, so replacing or
//! unloading a version never drops a request in flight on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;

use super::cache::ResponseCache;
use super::model_config::{DataType, DynamicBatching, InstanceGroup, ModelConfig, Parameter};
use super::placement::{CpuOnly, Device, Placement};
use super::repository::{self, ModelSource, ModelTensor, RepositoryError};
use super::runtime::{
    OpenedSession, Provider, Runtime, RuntimeError, SessionSpec, TensorRtOptions, check_model_files,
};
use super::scheduler::{Batching, SchedulePolicy};
use super::served::{LaneOpener, ServedModel, VersionParts};
use super::text::TextTask;
use crate::config::{Config, ControlMode, MemoryMode, ModelsConfig};
use crate::telemetry::metrics::ServingMetrics;

/// Serving errors, each with the status a client should see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServingError {
    /// No such model (or version) in the repository or loaded.
    #[error("{0}")]
    NotFound(String),
    /// The model exists but is not ready; the text says why.
    #[error("{0}")]
    Unavailable(String),
    /// The request cannot be honoured as asked.
    #[error("{0}")]
    Invalid(String),
    /// The model's queue is full; retry later.
    #[error("{0}")]
    Overloaded(String),
}

impl From<RepositoryError> for ServingError {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::UnknownModel(_) => ServingError::NotFound(e.to_string()),
            _ => ServingError::Invalid(e.to_string()),
        }
    }
}

/// The state of one version.
pub enum VersionState {
    /// Loaded and serving.
    Ready(Arc<ServedModel>),
    /// Selected by the version policy but not loadable; the reason.
    Unavailable(String),
}

/// A model's entry: its versions, or why none could be loaded.
#[derive(Default)]
struct ModelEntry {
    versions: BTreeMap<u64, VersionState>,
    error: Option<String>,
    /// What the model folder looked like when it was loaded (poll mode reloads on change).
    fingerprint: u64,
    /// The built-in embedding model, which is not in the repository.
    builtin: bool,
}

/// One row of the repository index (Triton's `POST /v2/repository/index`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version, when the row is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `READY`, `UNAVAILABLE`, or absent for a model that was never loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Why it is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The model manager.
pub struct ModelManager {
    runtime: Arc<Runtime>,
    root: PathBuf,
    mode: ControlMode,
    threads: usize,
    memory_mode: MemoryMode,
    chain: Vec<Provider>,
    engine_cache: PathBuf,
    models: RwLock<BTreeMap<String, ModelEntry>>,
    /// Serialises loads and unloads; reads never wait for it.
    changes: Mutex<()>,
    metrics: ServingMetrics,
    cache: Option<Arc<ResponseCache>>,
    placement: RwLock<Arc<dyn Placement>>,
}

impl ModelManager {
    /// A manager over the configured repository. Loads nothing yet.
    pub fn new(runtime: Arc<Runtime>, config: &Config, metrics: ServingMetrics) -> ModelManager {
        ModelManager {
            runtime,
            root: config.repository(),
            mode: config.serving.control_mode,
            threads: config.runtime.intra_op_threads,
            memory_mode: config.serving.memory_mode,
            chain: config.serving.execution_providers.clone(),
            engine_cache: config.data_dir.join("cache").join("tensorrt"),
            models: RwLock::new(BTreeMap::new()),
            changes: Mutex::new(()),
            metrics,
            placement: RwLock::new(Arc::new(CpuOnly)),
            cache: (config.serving.cache_bytes > 0).then(|| {
                Arc::new(ResponseCache::new(
                    usize::try_from(config.serving.cache_bytes).unwrap_or(usize::MAX),
                    Duration::from_secs(config.serving.cache_ttl_seconds),
                ))
            }),
        }
    }

    /// Places instances with `placement` from now on (the GPU supervisor's, when NVML answers).
    pub fn set_placement(&self, placement: Arc<dyn Placement>) {
        if let Ok(mut p) = self.placement.write() {
            *p = placement;
        }
    }

    /// The device of every instance of every ready version, as (model, version, devices).
    pub fn placements(&self) -> Vec<(String, u64, Vec<Device>)> {
        let Ok(models) = self.models.read() else {
            return Vec::new();
        };
        models
            .iter()
            .flat_map(|(name, entry)| {
                entry
                    .versions
                    .iter()
                    .filter_map(move |(v, state)| match state {
                        VersionState::Ready(m) => Some((name.clone(), *v, m.devices.clone())),
                        VersionState::Unavailable(_) => None,
                    })
            })
            .collect()
    }

    /// Moves the instances off a GPU that failed: every version with an instance on `gpu` is
    /// taken out of service at once (its queued requests get 503 rather than wait on a dead
    /// device), then its model is reloaded with the placement, which no longer offers that
    /// GPU. A model that cannot be placed elsewhere stays unavailable with the reason.
    pub fn evacuate(&self, gpu: u32, why: &str) {
        let affected: Vec<String> = {
            let Ok(models) = self.models.read() else {
                return;
            };
            let mut affected = Vec::new();
            for (name, entry) in models.iter() {
                let mut hit = false;
                for state in entry.versions.values() {
                    if let VersionState::Ready(m) = state
                        && m.devices.contains(&Device::Gpu(gpu))
                    {
                        m.retire(format!(
                            "model {name:?} version {} is moving off GPU {gpu} ({why}); retry shortly",
                            m.version
                        ));
                        hit = true;
                    }
                }
                if hit {
                    affected.push(name.clone());
                }
            }
            affected
        };
        for name in affected {
            tracing::warn!(model = %name, gpu, "moving the model's instances off a failed GPU");
            match self.load_model(&name, None) {
                Ok(()) => tracing::info!(model = %name, "model moved off GPU {gpu}"),
                Err(e) => {
                    tracing::error!(model = %name, error = %e, "the model cannot be moved off GPU {gpu}");
                    if let Ok(mut models) = self.models.write()
                        && let Some(entry) = models.get_mut(&name)
                    {
                        for state in entry.versions.values_mut() {
                            let why_not = match state {
                                VersionState::Unavailable(r) => r.clone(),
                                VersionState::Ready(m) if m.devices.contains(&Device::Gpu(gpu)) => {
                                    e.to_string()
                                }
                                VersionState::Ready(_) => continue,
                            };
                            *state = VersionState::Unavailable(format!(
                                "GPU {gpu} failed ({why}) and the model cannot move: {why_not}"
                            ));
                        }
                    }
                }
            }
        }
    }

    /// The control mode.
    pub fn mode(&self) -> ControlMode {
        self.mode
    }

    /// Loads what the control mode loads at start: every model (none, poll) or the listed ones
    /// (explicit). A model that fails is marked unavailable; the others still load.
    pub fn load_startup(&self, startup_models: &[String]) {
        let names: Vec<String> = match self.mode {
            ControlMode::Explicit => startup_models.to_vec(),
            ControlMode::None | ControlMode::Poll => match repository::scan(&self.root) {
                Ok(sources) => sources.into_iter().map(|s| s.name).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "no models loaded");
                    return;
                }
            },
        };
        for name in names {
            if let Err(e) = self.load_model(&name, None) {
                tracing::warn!(model = %name, error = %e, "model not loaded");
            }
        }
    }

    /// Loads (or reloads) a model through the repository API; refused unless the control mode
    /// is explicit, as in Triton.
    pub fn load(
        &self,
        name: &str,
        config_override: Option<ModelConfig>,
    ) -> Result<(), ServingError> {
        if self.mode != ControlMode::Explicit {
            return Err(ServingError::Invalid(format!(
                "explicit model load and unload need serving.control_mode = \"explicit\" (it is {})",
                mode_name(self.mode)
            )));
        }
        self.load_model(name, config_override)
    }

    /// Unloads a model; requests already running on it finish. Explicit mode only.
    pub fn unload(&self, name: &str) -> Result<(), ServingError> {
        if self.mode != ControlMode::Explicit {
            return Err(ServingError::Invalid(format!(
                "explicit model load and unload need serving.control_mode = \"explicit\" (it is {})",
                mode_name(self.mode)
            )));
        }
        let _guard = self.changes.lock().map_err(|_| poisoned())?;
        let mut models = self.models.write().map_err(|_| poisoned())?;
        if models.get(name).is_some_and(|e| e.builtin) {
            return Err(ServingError::Invalid(format!(
                "model {name:?} is the built-in embedding model ([models] in the configuration); \
                 it is not in the repository and cannot be unloaded"
            )));
        }
        let removed = models.remove(name);
        match removed {
            Some(entry) => {
                publish_instances(&self.metrics, Some(&entry), None);
                tracing::info!(model = name, "unloaded");
                Ok(())
            }
            None => Err(ServingError::NotFound(format!(
                "model {name:?} is not loaded"
            ))),
        }
    }

    fn load_model(
        &self,
        name: &str,
        config_override: Option<ModelConfig>,
    ) -> Result<(), ServingError> {
        let _guard = self.changes.lock().map_err(|_| poisoned())?;
        let source = repository::find(&self.root, name)?;
        let fingerprint = fingerprint(&source);
        let loaded = self.open_versions(&source, config_override);
        let mut models = self.models.write().map_err(|_| poisoned())?;
        match loaded {
            Ok(versions) => {
                let failed: Vec<String> = versions
                    .iter()
                    .filter_map(|(v, s)| match s {
                        VersionState::Unavailable(reason) => Some(format!("version {v}: {reason}")),
                        VersionState::Ready(_) => None,
                    })
                    .collect();
                let entry = ModelEntry {
                    versions,
                    error: None,
                    fingerprint,
                    builtin: false,
                };
                publish_instances(&self.metrics, models.get(name), Some(&entry));
                models.insert(name.to_string(), entry);
                if failed.is_empty() {
                    tracing::info!(model = name, "loaded");
                    Ok(())
                } else {
                    Err(ServingError::Unavailable(format!(
                        "model {name:?}: {}",
                        failed.join("; ")
                    )))
                }
            }
            Err(e) => {
                // The old versions, if any, keep serving; the entry remembers the failure.
                let entry = models.entry(name.to_string()).or_default();
                entry.error = Some(e.to_string());
                entry.fingerprint = fingerprint;
                Err(e)
            }
        }
    }

    fn open_versions(
        &self,
        source: &ModelSource,
        config_override: Option<ModelConfig>,
    ) -> Result<BTreeMap<u64, VersionState>, ServingError> {
        let written = match config_override {
            Some(c) => Some(c),
            None => source.read_config()?,
        };
        let policy = written
            .as_ref()
            .and_then(|c| c.version_policy.clone())
            .unwrap_or_default();
        let base = written.clone().unwrap_or_default();
        let chosen = repository::select_versions(&source.name, &policy, &source.versions)?;
        let mut versions = BTreeMap::new();
        for version in chosen {
            let state = match self.open_version(source, &base, written.clone(), version) {
                Ok(model) => VersionState::Ready(Arc::new(model)),
                Err(e) => VersionState::Unavailable(e.to_string()),
            };
            versions.insert(version, state);
        }
        Ok(versions)
    }

    fn open_version(
        &self,
        source: &ModelSource,
        base: &ModelConfig,
        written: Option<ModelConfig>,
        version: u64,
    ) -> Result<ServedModel, ServingError> {
        let path = source.model_file(base, version);
        if !path.is_file() {
            return Err(ServingError::Invalid(format!(
                "{} does not exist",
                path.display()
            )));
        }
        // Instances come from the placement, one device per instance.
        let groups = if base.instance_group.is_empty() {
            vec![InstanceGroup::default()]
        } else {
            base.instance_group.clone()
        };
        let model_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        let placement = self.placement.read().map_err(|_| poisoned())?.clone();
        let mut devices = Vec::new();
        for group in &groups {
            let placed = placement.place(&source.name, group, model_bytes);
            if placed.is_empty() {
                return Err(ServingError::Invalid(format!(
                    "instance group {:?} ({:?}) cannot be placed: no healthy GPU with enough free memory (see GET /api/v1/gpus)",
                    group.name, group.kind
                )));
            }
            devices.extend(placed);
        }
        let trt = base
            .optimization
            .as_ref()
            .and_then(|o| o.execution_accelerators.as_ref())
            .and_then(|a| {
                a.gpu_execution_accelerator
                    .iter()
                    .find(|a| a.name == "tensorrt")
            });
        let fp16 = trt.is_some_and(|a| {
            a.parameters
                .get("precision_mode")
                .is_some_and(|p| p == "FP16")
        });
        // Instances share the cores: each gets its part of the configured threads.
        let count = devices.len();
        let cores = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let cpu = [Provider::Cpu];
        let mut sessions = Vec::with_capacity(count);
        let mut providers = Vec::with_capacity(count);
        for device in &devices {
            // A GPU instance tries the configured chain on its GPU; a CPU instance the CPU alone.
            let (chain, gpu) = match device {
                Device::Gpu(id) => (self.chain.as_slice(), Some(*id)),
                Device::Cpu => (cpu.as_slice(), None),
            };
            let opened = self
                .runtime
                .open(&SessionSpec {
                    path: &path,
                    threads: (cores / count).max(1),
                    memory_mode: self.memory_mode,
                    chain,
                    gpu,
                    tensorrt: TensorRtOptions {
                        fp16,
                        engine_cache: trt.map(|_| self.engine_cache.as_path()),
                    },
                })
                .map_err(|e| ServingError::Invalid(e.to_string()))?;
            for refused in &opened.refused {
                tracing::warn!(model = %source.name, version, "execution provider refused: {refused}");
            }
            providers.push(opened.provider);
            sessions.push(opened.session);
        }
        let describe = |outlets: &[ort::value::Outlet]| -> Vec<ModelTensor> {
            outlets.iter().map(model_tensor).collect()
        };
        let inputs = describe(sessions[0].inputs());
        let outputs = describe(sessions[0].outputs());
        let config = repository::complete(&source.name, written, &inputs, &outputs)?;
        let cache = self
            .cache
            .clone()
            .filter(|_| config.response_cache.as_ref().is_some_and(|c| c.enable));
        let text = TextTask::from_config(
            &source.dir,
            &[
                source.dir.join(version.to_string()).join("tokenizer.json"),
                source.dir.join("tokenizer.json"),
            ],
            &config,
        )
        .map_err(|e| ServingError::Invalid(format!("text task: {e}")))?;
        tracing::info!(
            model = %source.name,
            version,
            provider = providers[0].ort_name(),
            instances = count,
            "model version ready"
        );
        ServedModel::start(VersionParts {
            name: source.name.clone(),
            version,
            policy: schedule_policy(&config),
            config,
            provider: providers[0],
            inputs,
            outputs,
            sessions,
            devices,
            lane: None,
            text,
            cache,
            metrics: self.metrics.clone(),
        })
    }

    /// Poll mode: loads models that appeared or changed on disk and drops those that vanished.
    pub fn poll(&self) {
        let sources = match repository::scan(&self.root) {
            Ok(sources) => sources,
            Err(e) => {
                tracing::warn!(error = %e, "cannot rescan the model repository");
                return;
            }
        };
        let known: BTreeMap<String, u64> = match self.models.read() {
            Ok(models) => models
                .iter()
                .filter(|(_, e)| !e.builtin)
                .map(|(n, e)| (n.clone(), e.fingerprint))
                .collect(),
            Err(_) => return,
        };
        for source in &sources {
            if known.get(&source.name) != Some(&fingerprint(source)) {
                tracing::info!(model = %source.name, "model changed on disk; loading");
                if let Err(e) = self.load_model(&source.name, None) {
                    tracing::warn!(model = %source.name, error = %e, "model not loaded");
                }
            }
        }
        for name in known.keys() {
            if !sources.iter().any(|s| &s.name == name)
                && let (Ok(_guard), Ok(mut models)) = (self.changes.lock(), self.models.write())
            {
                publish_instances(&self.metrics, models.get(name), None);
                models.remove(name);
                tracing::info!(model = %name, "model removed from the repository; unloaded");
            }
        }
    }

    /// Serves the built-in embedding model (`[models]`) as version 1 of `name`, on
    /// `embedding_instances` CPU instances with `memory_mode` (the idle daemon's footprint), batching like a repository
    /// text model. A repository model of the same name, loaded first, keeps its place.
    pub fn load_builtin(
        &self,
        name: &str,
        models: &ModelsConfig,
        memory_mode: MemoryMode,
    ) -> Result<(), ServingError> {
        let unavailable = |e: RuntimeError| ServingError::Unavailable(e.to_string());
        check_model_files(models).map_err(unavailable)?;
        let count = models.embedding_instances.max(1);
        let cores = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut sessions = Vec::with_capacity(count);
        let mut provider = Provider::Cpu;
        for _ in 0..count {
            let opened = open_cpu(
                &self.runtime,
                &models.embedding_model,
                (cores / count).max(1),
                memory_mode,
            )
            .map_err(unavailable)?;
            provider = opened.provider;
            sessions.push(opened.session);
        }
        let Some(first) = sessions.first() else {
            return Err(ServingError::Invalid("no session was opened".into()));
        };
        let inputs: Vec<ModelTensor> = first.inputs().iter().map(model_tensor).collect();
        let outputs: Vec<ModelTensor> = first.outputs().iter().map(model_tensor).collect();
        // Sessions that share the cores embed batches well but one query slowly, and a query
        // model embeds it faster still: queries get a session of their own on every core.
        let query_model = &models.embedding_query_model;
        let lane_model = if !query_model.as_os_str().is_empty() {
            Some(query_model)
        } else {
            (count > 1).then_some(&models.embedding_model)
        };
        let lane = lane_model.map(|path| {
            lane_opener(
                self.runtime.clone(),
                path.clone(),
                cores,
                memory_mode,
                (inputs.clone(), outputs.clone()),
            )
        });
        let written = ModelConfig {
            name: name.to_string(),
            max_batch_size: BUILTIN_MAX_BATCH,
            instance_group: vec![InstanceGroup {
                kind: super::model_config::InstanceKind::Cpu,
                count: i32::try_from(count).unwrap_or(i32::MAX),
                ..InstanceGroup::default()
            }],
            dynamic_batching: Some(DynamicBatching {
                max_queue_delay_microseconds: BUILTIN_QUEUE_DELAY_US,
                ..DynamicBatching::default()
            }),
            parameters: BTreeMap::from([(
                "task".to_string(),
                Parameter {
                    string_value: "embedding".into(),
                },
            )]),
            ..ModelConfig::default()
        };
        let config = repository::complete(name, Some(written), &inputs, &outputs)?;
        let folder = models
            .embedding_model
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let text = TextTask::from_config(
            &folder,
            std::slice::from_ref(&models.embedding_tokenizer),
            &config,
        )
        .map_err(|e| ServingError::Invalid(format!("text task: {e}")))?;
        let model = ServedModel::start(VersionParts {
            name: name.to_string(),
            version: 1,
            policy: schedule_policy(&config),
            config,
            provider,
            inputs,
            outputs,
            devices: vec![Device::Cpu; sessions.len()],
            sessions,
            lane,
            text,
            cache: None,
            metrics: self.metrics.clone(),
        })?;
        let _guard = self.changes.lock().map_err(|_| poisoned())?;
        let mut table = self.models.write().map_err(|_| poisoned())?;
        if table.contains_key(name) {
            tracing::warn!(
                model = name,
                "the repository has a model of the built-in embedding model's name; it serves instead"
            );
            return Ok(());
        }
        let entry = ModelEntry {
            versions: BTreeMap::from([(1, VersionState::Ready(Arc::new(model)))]),
            builtin: true,
            ..ModelEntry::default()
        };
        publish_instances(&self.metrics, None, Some(&entry));
        table.insert(name.to_string(), entry);
        tracing::info!(model = name, path = %models.embedding_model.display(), "built-in embedding model ready");
        Ok(())
    }

    /// A ready version: the given one, or the newest ready one.
    pub fn get(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedModel>, ServingError> {
        let models = self.models.read().map_err(|_| poisoned())?;
        let entry = models
            .get(name)
            .ok_or_else(|| ServingError::NotFound(format!("model {name:?} is not loaded")))?;
        let pick = match version {
            Some(v) => entry.versions.get(&v).ok_or_else(|| {
                ServingError::NotFound(format!("model {name:?} has no version {v} loaded"))
            })?,
            None => entry
                .versions
                .values()
                .rev()
                .find(|s| matches!(s, VersionState::Ready(_)))
                .or_else(|| entry.versions.values().next_back())
                .ok_or_else(|| {
                    ServingError::Unavailable(format!(
                        "model {name:?} is not ready: {}",
                        entry.error.as_deref().unwrap_or("no version loaded")
                    ))
                })?,
        };
        match pick {
            VersionState::Ready(model) => Ok(model.clone()),
            VersionState::Unavailable(reason) => Err(ServingError::Unavailable(format!(
                "model {name:?} is not ready: {reason}"
            ))),
        }
    }

    /// The repository index: every model folder, with the state of each loaded version.
    pub fn index(&self, ready_only: bool) -> Result<Vec<IndexEntry>, ServingError> {
        let sources = repository::scan(&self.root)?;
        let models = self.models.read().map_err(|_| poisoned())?;
        let mut rows = Vec::new();
        for source in sources {
            match models.get(&source.name) {
                None => rows.push(IndexEntry {
                    name: source.name,
                    version: None,
                    state: None,
                    reason: None,
                }),
                Some(entry) if entry.versions.is_empty() => rows.push(IndexEntry {
                    name: source.name,
                    version: None,
                    state: Some("UNAVAILABLE"),
                    reason: entry.error.clone(),
                }),
                Some(entry) => {
                    for (version, state) in &entry.versions {
                        let (state, reason) = match state {
                            VersionState::Ready(_) => ("READY", None),
                            VersionState::Unavailable(r) => ("UNAVAILABLE", Some(r.clone())),
                        };
                        rows.push(IndexEntry {
                            name: source.name.clone(),
                            version: Some(version.to_string()),
                            state: Some(state),
                            reason,
                        });
                    }
                }
            }
        }
        if ready_only {
            rows.retain(|r| r.state == Some("READY"));
        }
        Ok(rows)
    }

    /// The models with a ready version, the built-in embedding model included, by name.
    pub fn served_names(&self) -> Result<Vec<String>, ServingError> {
        let models = self.models.read().map_err(|_| poisoned())?;
        Ok(models
            .iter()
            .filter(|(_, e)| {
                e.versions
                    .values()
                    .any(|v| matches!(v, VersionState::Ready(_)))
            })
            .map(|(name, _)| name.clone())
            .collect())
    }

    /// The versions loaded for a model and their readiness, ascending.
    pub fn versions(&self, name: &str) -> Result<Vec<(u64, bool)>, ServingError> {
        let models = self.models.read().map_err(|_| poisoned())?;
        let entry = models
            .get(name)
            .ok_or_else(|| ServingError::NotFound(format!("model {name:?} is not loaded")))?;
        Ok(entry
            .versions
            .iter()
            .map(|(v, s)| (*v, matches!(s, VersionState::Ready(_))))
            .collect())
    }
}

/// Opens a session of a built-in model on the CPU.
fn open_cpu(
    runtime: &Runtime,
    path: &Path,
    threads: usize,
    memory_mode: MemoryMode,
) -> Result<OpenedSession, RuntimeError> {
    runtime.open(&SessionSpec {
        path,
        threads,
        memory_mode,
        chain: &[Provider::Cpu],
        gpu: None,
        tensorrt: TensorRtOptions::default(),
    })
}

/// Opens the lane's session, whose model must take and give the embedding model's tensors.
fn lane_opener(
    runtime: Arc<Runtime>,
    path: PathBuf,
    threads: usize,
    memory_mode: MemoryMode,
    tensors: (Vec<ModelTensor>, Vec<ModelTensor>),
) -> LaneOpener {
    Box::new(move || {
        let session = open_cpu(&runtime, &path, threads, memory_mode)
            .map_err(|e| e.to_string())?
            .session;
        let declared = |list: &[ort::value::Outlet]| -> Vec<ModelTensor> {
            list.iter().map(model_tensor).collect()
        };
        if (declared(session.inputs()), declared(session.outputs())) != tensors {
            return Err(format!(
                "models.embedding_query_model {} does not take and give the tensors models.embedding_model does: derive it from that model (scripts/derive-query-model.py)",
                path.display()
            ));
        }
        Ok(session)
    })
}

fn model_tensor(outlet: &ort::value::Outlet) -> ModelTensor {
    use ort::value::{TensorElementType as T, ValueType};
    let (data_type, shape) = match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let data_type = match ty {
                T::Float32 => DataType::Fp32,
                T::Float64 => DataType::Fp64,
                T::Float16 => DataType::Fp16,
                T::Bfloat16 => DataType::Bf16,
                T::Int8 => DataType::Int8,
                T::Int16 => DataType::Int16,
                T::Int32 => DataType::Int32,
                T::Int64 => DataType::Int64,
                T::Uint8 => DataType::Uint8,
                T::Uint16 => DataType::Uint16,
                T::Uint32 => DataType::Uint32,
                T::Uint64 => DataType::Uint64,
                T::Bool => DataType::Bool,
                T::String => DataType::String,
                _ => DataType::Invalid,
            };
            (data_type, shape.to_vec())
        }
        _ => (DataType::Invalid, Vec::new()),
    };
    ModelTensor {
        name: outlet.name().to_string(),
        data_type,
        shape,
    }
}

/// A hash of the names, sizes and modification times of a model folder's configuration and
/// version folders' files.
fn fingerprint(source: &ModelSource) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut stamp = |path: &std::path::Path| {
        if let Ok(meta) = std::fs::metadata(path) {
            path.hash(&mut hasher);
            meta.len().hash(&mut hasher);
            meta.modified().ok().hash(&mut hasher);
        }
    };
    stamp(&source.config_path());
    for version in &source.versions {
        let dir = source.dir.join(version.to_string());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            stamp(&file);
        }
    }
    hasher.finish()
}

/// Keeps `sparkbrain_model_instance_info` in step with the loaded versions of one model.
fn publish_instances(metrics: &ServingMetrics, old: Option<&ModelEntry>, new: Option<&ModelEntry>) {
    let each = |entry: Option<&ModelEntry>, f: &dyn Fn(&ServedModel)| {
        for state in entry.into_iter().flat_map(|e| e.versions.values()) {
            if let VersionState::Ready(model) = state {
                f(model);
            }
        }
    };
    each(old, &|m| {
        let version = m.version.to_string();
        let _ = metrics.instance.remove_label_values(&[
            m.name.as_str(),
            version.as_str(),
            m.provider.ort_name(),
        ]);
    });
    each(new, &|m| {
        let version = m.version.to_string();
        metrics
            .instance
            .with_label_values(&[m.name.as_str(), version.as_str(), m.provider.ort_name()])
            .set(1);
    });
}

/// The built-in embedding model's batch size and queue delay (those of `bench-serving`).
const BUILTIN_MAX_BATCH: i32 = 32;
const BUILTIN_QUEUE_DELAY_US: u64 = 2000;

/// Requests a model queues at most unless its queue policy says otherwise.
const DEFAULT_MAX_QUEUE: usize = 1024;

/// Batches' worth of queued texts a text model chooses its next run from.
const TEXT_WINDOW_BATCHES: usize = 4;

/// How a configuration queues and batches: Triton's dynamic batching when the model has a batch
/// dimension and `dynamic_batching`, else one request per run; the queue policy either way.
fn schedule_policy(config: &ModelConfig) -> SchedulePolicy {
    let dynamic = config.dynamic_batching.as_ref();
    let queue = dynamic
        .and_then(|d| d.default_queue_policy.clone())
        .unwrap_or_default();
    let batching = dynamic.and_then(|d| {
        let max_batch = usize::try_from(config.max_batch_size)
            .ok()
            .filter(|b| *b > 0)?;
        Some(Batching {
            max_batch,
            // Texts are cut into runs by length: choosing among a few batches' worth of texts
            // lets runs of similar length form.
            window: if config.parameters.contains_key("task") {
                max_batch.saturating_mul(TEXT_WINDOW_BATCHES)
            } else {
                max_batch
            },
            preferred: d
                .preferred_batch_size
                .iter()
                .filter_map(|p| usize::try_from(*p).ok())
                .collect(),
            max_delay: Duration::from_micros(d.max_queue_delay_microseconds),
        })
    });
    SchedulePolicy {
        batching,
        max_queue: match queue.max_queue_size {
            0 => DEFAULT_MAX_QUEUE,
            n => n as usize,
        },
        timeout: (queue.default_timeout_microseconds > 0)
            .then(|| Duration::from_micros(queue.default_timeout_microseconds)),
        timeout_action: queue.timeout_action,
        allow_timeout_override: queue.allow_timeout_override,
    }
}

fn mode_name(mode: ControlMode) -> &'static str {
    match mode {
        ControlMode::None => "none",
        ControlMode::Explicit => "explicit",
        ControlMode::Poll => "poll",
    }
}

fn poisoned() -> ServingError {
    ServingError::Unavailable(
        "the model table is unusable after an internal fault; restart the daemon".into(),
    )
}
