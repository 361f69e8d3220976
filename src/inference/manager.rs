//! Which models are loaded, in which versions, and in what state.
//!
//! Loading opens every selected version before the new set replaces the old one, so a reload
//! never leaves a gap; requests hold an `Arc` of the version they run on, so replacing or
//! unloading a version never drops a request in flight on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use ort::session::Session;
use serde::Serialize;

use super::batcher::{
    BatchPolicy, Coalescer, TensorRequest, run_merged, tensor_rows, tensors_compatible,
};
use super::cache::{self, ResponseCache};
use super::model_config::{DataType, InstanceGroup, ModelConfig};
use super::placement::{CpuOnly, Device, Placement};
use super::repository::{self, ModelSource, ModelTensor, RepositoryError};
use super::runtime::{Provider, Runtime, SessionSpec, TensorRtOptions};
use super::tensor::{NamedTensor, TensorData, protocol_name};
use super::text::{Task, TextTask, pool};
use crate::config::{Config, ControlMode, MemoryMode};
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

/// One loaded version of a model.
pub struct ServedModel {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// The effective configuration (completed from the model where `config.pbtxt` is silent).
    pub config: ModelConfig,
    /// The execution provider that serves it.
    pub provider: Provider,
    /// The model's declared inputs (full shapes).
    pub inputs: Vec<ModelTensor>,
    /// The model's declared outputs (full shapes).
    pub outputs: Vec<ModelTensor>,
    /// The sessions (instance_group count); a run takes one and gives it back.
    instances: Instances,
    /// The text task, when the configuration declares one.
    pub text: Option<TextTask>,
    metrics: ServingMetrics,
    /// The response cache, when the model opted in and the cache is on.
    cache: Option<Arc<ResponseCache>>,
    /// The dynamic batcher, when the configuration enables dynamic batching.
    batcher: Option<Coalescer<TensorRequest, Vec<NamedTensor>>>,
    /// The text batcher, for text models that batch dynamically.
    text_batcher: Option<Coalescer<TextRequest, Vec<(TextOutput, usize)>>>,
}

/// One text's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum TextOutput {
    /// An embedding.
    Vector(Vec<f32>),
    /// A classification.
    Class(Classified),
}

/// Texts waiting in the text batcher.
pub struct TextRequest {
    texts: Vec<String>,
    max_length: Option<usize>,
}

/// Turns `[rows, classes]` scores into labelled results.
fn classify_rows(
    scores: &NamedTensor,
    labels: &[String],
    rows: usize,
) -> Result<Vec<Classified>, ServingError> {
    let TensorData::F32(values) = &scores.data else {
        return Err(ServingError::Invalid(format!(
            "output {:?} is not FP32",
            scores.name
        )));
    };
    let classes = labels.len();
    if values.len() != rows * classes {
        return Err(ServingError::Invalid(format!(
            "output {:?} has {} scores for {rows} texts and {classes} labels",
            scores.name,
            values.len()
        )));
    }
    Ok(values
        .chunks(classes)
        .map(|row| {
            let (best, confidence) =
                row.iter().enumerate().fold(
                    (0, f32::MIN),
                    |acc, (j, s)| if *s > acc.1 { (j, *s) } else { acc },
                );
            Classified {
                label: labels[best].clone(),
                confidence,
                scores: labels.iter().cloned().zip(row.iter().copied()).collect(),
            }
        })
        .collect())
}

/// One text's classification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classified {
    /// The most likely label.
    pub label: String,
    /// Its score.
    pub confidence: f32,
    /// Every label's score, in label order.
    pub scores: Vec<(String, f32)>,
}

impl ServedModel {
    /// How many sessions (instances) serve this version.
    pub fn instance_count(&self) -> usize {
        self.instances.count
    }

    /// The text task, or a clear refusal for models without one.
    pub fn text_task(&self) -> Result<&TextTask, ServingError> {
        self.text.as_ref().ok_or_else(|| {
            ServingError::Invalid(format!(
                "model {:?} declares no text task (parameters task = \"embedding\" or \"classification\")",
                self.name
            ))
        })
    }

    /// Embeds texts; returns one vector per text (in request order) and the tokens used.
    /// `max_length` can keep fewer tokens per text than the model's setting.
    pub fn embed(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<(Vec<Vec<f32>>, usize), ServingError> {
        if !matches!(self.text_task()?.task, Task::Embedding { .. }) {
            return Err(ServingError::Invalid(format!(
                "model {:?} classifies text; it does not embed it",
                self.name
            )));
        }
        let answers = self.run_texts(texts, max_length)?;
        let tokens = answers.iter().map(|(_, n)| n).sum();
        let vectors = answers
            .into_iter()
            .filter_map(|(out, _)| match out {
                TextOutput::Vector(v) => Some(v),
                TextOutput::Class(_) => None,
            })
            .collect();
        Ok((vectors, tokens))
    }

    /// Classifies texts; returns one result per text (in request order) and the tokens used.
    pub fn classify(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<(Vec<Classified>, usize), ServingError> {
        if !matches!(self.text_task()?.task, Task::Classification { .. }) {
            return Err(ServingError::Invalid(format!(
                "model {:?} embeds text; it does not classify it",
                self.name
            )));
        }
        let answers = self.run_texts(texts, max_length)?;
        let tokens = answers.iter().map(|(_, n)| n).sum();
        let classes = answers
            .into_iter()
            .filter_map(|(out, _)| match out {
                TextOutput::Class(c) => Some(c),
                TextOutput::Vector(_) => None,
            })
            .collect();
        Ok((classes, tokens))
    }

    /// Answers texts through the text batcher when the model batches dynamically (requests
    /// that arrive together are tokenised, sorted by length and run together), else directly.
    fn run_texts(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<Vec<(TextOutput, usize)>, ServingError> {
        let Some(batcher) = &self.text_batcher else {
            return self.answer_texts(texts, max_length);
        };
        let request = TextRequest {
            texts: texts.to_vec(),
            max_length,
        };
        batcher
            .submit(request, &|requests| {
                let counts: Vec<usize> = requests.iter().map(|r| r.texts.len()).collect();
                let all: Vec<String> = requests
                    .iter()
                    .flat_map(|r| r.texts.iter().cloned())
                    .collect();
                let mut answers = self.answer_texts(&all, requests[0].max_length)?.into_iter();
                Ok(counts
                    .iter()
                    .map(|n| answers.by_ref().take(*n).collect())
                    .collect())
            })
            .map(|(answers, _)| answers)
    }

    /// Tokenises, runs in length-sorted batches, and pools or classifies; one answer and token
    /// count per text, in order.
    fn answer_texts(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<Vec<(TextOutput, usize)>, ServingError> {
        let text = self.text_task()?;
        let output = match &text.task {
            Task::Embedding { output, .. } | Task::Classification { output, .. } => output,
        };
        let mut answers: Vec<Option<(TextOutput, usize)>> = vec![None; texts.len()];
        for batch in text
            .encode(texts, max_length)
            .map_err(ServingError::Invalid)?
        {
            let out = self.infer_inner(batch.inputs, std::slice::from_ref(output), false)?;
            let rows: Vec<TextOutput> = match &text.task {
                Task::Embedding {
                    pooling, normalize, ..
                } => pool(&out[0], &batch.lengths, *pooling, *normalize)
                    .map_err(ServingError::Invalid)?
                    .into_iter()
                    .map(TextOutput::Vector)
                    .collect(),
                Task::Classification { labels, .. } => {
                    classify_rows(&out[0], labels, batch.rows.len())?
                        .into_iter()
                        .map(TextOutput::Class)
                        .collect()
                }
            };
            for ((row, length), answer) in batch.rows.iter().zip(&batch.lengths).zip(rows) {
                answers[*row] = Some((answer, *length));
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Checks the inputs against the configuration, runs the model, and returns the requested
    /// outputs (all configured outputs when `wanted` is empty). Every error names the tensor.
    /// Counted in Triton's metrics.
    pub fn infer(
        &self,
        inputs: Vec<NamedTensor>,
        wanted: &[String],
    ) -> Result<Vec<NamedTensor>, ServingError> {
        self.infer_inner(inputs, wanted, true)
    }

    /// As [`ServedModel::infer`]; `batch` false bypasses the tensor batcher (for batches the
    /// text batcher already formed).
    fn infer_inner(
        &self,
        inputs: Vec<NamedTensor>,
        wanted: &[String],
        batch: bool,
    ) -> Result<Vec<NamedTensor>, ServingError> {
        let version = self.version.to_string();
        let labels = [self.name.as_str(), version.as_str()];
        let m = &self.metrics;
        m.pending.with_label_values(&labels).inc();
        let started = Instant::now();
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let rows = if self.config.max_batch_size > 0 {
            inputs
                .first()
                .and_then(|t| t.shape.first())
                .map_or(1, |b| (*b).max(0) as u64)
        } else {
            1
        };
        let cache_key = self
            .cache
            .as_ref()
            .map(|c| (c, cache::key(&self.name, self.version, &inputs, wanted)));
        if let Some((cache, key)) = &cache_key {
            if let Some(outputs) = cache.get(key) {
                m.pending.with_label_values(&labels).dec();
                m.cache_hits.with_label_values(&labels).inc();
                m.success.with_label_values(&labels).inc();
                m.count.with_label_values(&labels).inc_by(rows);
                return Ok(outputs);
            }
            m.cache_misses.with_label_values(&labels).inc();
        }
        let result = self.validate(&inputs, wanted).and_then(|outputs| {
            match self.batcher.as_ref().filter(|_| batch) {
                Some(batcher) => batcher
                    .submit(TensorRequest { inputs, outputs }, &|requests| {
                        run_merged(requests, &|batch, outs| self.execute(batch, outs))
                    })
                    .map(|(outputs, queued)| {
                        m.queue_us.with_label_values(&labels).inc_by(micros(queued));
                        outputs
                    }),
                None => self.execute(&inputs, &outputs),
            }
        });
        if let (Some((cache, key)), Ok(outputs)) = (cache_key, &result) {
            cache.put(key, outputs.clone());
        }
        m.pending.with_label_values(&labels).dec();
        m.request_us
            .with_label_values(&labels)
            .inc_by(micros(started.elapsed()));
        if result.is_ok() {
            m.success.with_label_values(&labels).inc();
            m.count.with_label_values(&labels).inc_by(rows);
        } else {
            m.failure.with_label_values(&labels).inc();
        }
        result
    }

    /// Checks a request against the configuration; returns the outputs to produce.
    fn validate(
        &self,
        inputs: &[NamedTensor],
        wanted: &[String],
    ) -> Result<Vec<String>, ServingError> {
        let invalid = |m: String| ServingError::Invalid(m);
        let config = &self.config;
        let batched = config.max_batch_size > 0;
        let mut batch: Option<i64> = None;
        for (i, tensor) in inputs.iter().enumerate() {
            if inputs[..i].iter().any(|t| t.name == tensor.name) {
                return Err(invalid(format!(
                    "input {:?} is given more than once",
                    tensor.name
                )));
            }
            let spec = config
                .input
                .iter()
                .find(|s| s.name == tensor.name)
                .ok_or_else(|| {
                    let names: Vec<&str> = config.input.iter().map(|s| s.name.as_str()).collect();
                    invalid(format!(
                        "unknown input {:?}; model {:?} takes {}",
                        tensor.name,
                        self.name,
                        names.join(", ")
                    ))
                })?;
            if tensor.data.data_type() != spec.data_type {
                return Err(invalid(format!(
                    "input {:?}: datatype {}, but the model takes {}",
                    tensor.name,
                    protocol_name(tensor.data.data_type()),
                    protocol_name(spec.data_type)
                )));
            }
            let mut expected = spec.dims.clone();
            if batched {
                expected.insert(0, -1);
            }
            let fits = tensor.shape.len() == expected.len()
                && tensor.shape.iter().all(|d| *d >= 0)
                && tensor
                    .shape
                    .iter()
                    .zip(&expected)
                    .all(|(d, e)| *e == -1 || d == e);
            if !fits {
                return Err(invalid(format!(
                    "input {:?}: shape {:?} does not fit {:?} (-1: any size{})",
                    tensor.name,
                    tensor.shape,
                    expected,
                    if batched {
                        "; the first dimension is the batch"
                    } else {
                        ""
                    }
                )));
            }
            if batched {
                let b = tensor.shape[0];
                if b > i64::from(config.max_batch_size) {
                    return Err(invalid(format!(
                        "input {:?}: batch of {b} exceeds max_batch_size {}",
                        tensor.name, config.max_batch_size
                    )));
                }
                if *batch.get_or_insert(b) != b {
                    return Err(invalid(format!(
                        "input {:?}: batch of {b}, but another input has a batch of {}",
                        tensor.name,
                        batch.unwrap_or(b)
                    )));
                }
            }
            let elements: i64 = tensor.shape.iter().product();
            if usize::try_from(elements).ok() != Some(tensor.data.len()) {
                return Err(invalid(format!(
                    "input {:?}: shape {:?} holds {elements} elements, but {} were sent",
                    tensor.name,
                    tensor.shape,
                    tensor.data.len()
                )));
            }
        }
        if let Some(missing) = config
            .input
            .iter()
            .find(|s| !s.optional && !inputs.iter().any(|t| t.name == s.name))
        {
            return Err(invalid(format!("input {:?} is missing", missing.name)));
        }
        let outputs: Vec<String> = if wanted.is_empty() {
            config.output.iter().map(|o| o.name.clone()).collect()
        } else {
            for name in wanted {
                if !config.output.iter().any(|o| &o.name == name) {
                    return Err(invalid(format!("unknown output {name:?} requested")));
                }
            }
            wanted.to_vec()
        };
        Ok(outputs)
    }

    /// Runs checked inputs on a free instance; counts the execution in Triton's metrics.
    fn execute(
        &self,
        inputs: &[NamedTensor],
        outputs: &[String],
    ) -> Result<Vec<NamedTensor>, ServingError> {
        let invalid = |m: String| ServingError::Invalid(m);
        let batched = self.config.max_batch_size > 0;
        let mut values = Vec::with_capacity(inputs.len());
        for tensor in inputs {
            let spec_reshape = self
                .config
                .input
                .iter()
                .find(|s| s.name == tensor.name)
                .and_then(|s| s.reshape.as_ref());
            let value = match spec_reshape {
                // The model takes another shape than the protocol shows: same elements.
                Some(reshape) => {
                    let mut shape = reshape.shape.clone();
                    if batched {
                        shape.insert(0, tensor.shape[0]);
                    }
                    NamedTensor {
                        shape,
                        ..tensor.clone()
                    }
                    .to_ort()
                }
                None => tensor.to_ort(),
            }
            .map_err(invalid)?;
            values.push((tensor.name.clone(), value));
        }
        let version = self.version.to_string();
        let labels = [self.name.as_str(), version.as_str()];
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let waiting = Instant::now();
        let mut session = self.instances.checkout().ok_or_else(|| {
            ServingError::Unavailable(format!("model {:?} failed earlier; reload it", self.name))
        })?;
        self.metrics
            .queue_us
            .with_label_values(&labels)
            .inc_by(micros(waiting.elapsed()));
        let computing = Instant::now();
        let results = session
            .run(values)
            .map_err(|e| invalid(format!("model {:?} refused the inputs: {e}", self.name)))?;
        self.metrics
            .compute_us
            .with_label_values(&labels)
            .inc_by(micros(computing.elapsed()));
        self.metrics.exec_count.with_label_values(&labels).inc();
        outputs
            .iter()
            .map(|name| {
                let value = results.get(name).ok_or_else(|| {
                    ServingError::Invalid(format!("the model produced no output {name:?}"))
                })?;
                NamedTensor::from_ort(name, value).map_err(ServingError::Invalid)
            })
            .collect()
    }
}

/// The sessions of one version. A run takes a free one, waiting if all are busy.
struct Instances {
    free: Mutex<Vec<Session>>,
    returned: Condvar,
    count: usize,
}

impl Instances {
    fn new(sessions: Vec<Session>) -> Instances {
        Instances {
            count: sessions.len(),
            free: Mutex::new(sessions),
            returned: Condvar::new(),
        }
    }

    /// A free session, or `None` if the pool broke (a run panicked).
    fn checkout(&self) -> Option<Checkout<'_>> {
        let mut free = self.free.lock().ok()?;
        loop {
            if let Some(session) = free.pop() {
                return Some(Checkout {
                    pool: self,
                    session: Some(session),
                });
            }
            free = self.returned.wait(free).ok()?;
        }
    }
}

/// A session taken from [`Instances`]; given back when dropped.
struct Checkout<'a> {
    pool: &'a Instances,
    session: Option<Session>,
}

impl std::ops::Deref for Checkout<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for Checkout<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until drop")
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let (Some(session), Ok(mut free)) = (self.session.take(), self.pool.free.lock()) {
            free.push(session);
            self.pool.returned.notify_one();
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
    placement: Box<dyn Placement>,
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
            placement: Box::new(CpuOnly),
            cache: (config.serving.cache_bytes > 0).then(|| {
                Arc::new(ResponseCache::new(
                    usize::try_from(config.serving.cache_bytes).unwrap_or(usize::MAX),
                    Duration::from_secs(config.serving.cache_ttl_seconds),
                ))
            }),
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
        let removed = self.models.write().map_err(|_| poisoned())?.remove(name);
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
        let mut devices = Vec::new();
        for group in &groups {
            let placed = self.placement.place(&source.name, group, model_bytes);
            if placed.is_empty() {
                return Err(ServingError::Invalid(format!(
                    "instance group {:?} ({:?}) cannot be placed: no usable GPU on this box",
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
        let batcher =
            batch_policy(&config).map(|p| Coalescer::new(p, tensors_compatible, tensor_rows));
        let text_batcher = batch_policy(&config)
            .filter(|_| config.parameters.contains_key("task"))
            .map(|p| {
                Coalescer::new(
                    p,
                    |a: &TextRequest, b: &TextRequest| a.max_length == b.max_length,
                    |r| r.texts.len(),
                )
            });
        let cache = self
            .cache
            .clone()
            .filter(|_| config.response_cache.as_ref().is_some_and(|c| c.enable));
        let text =
            TextTask::from_config(&source.dir, &source.dir.join(version.to_string()), &config)
                .map_err(|e| ServingError::Invalid(format!("text task: {e}")))?;
        tracing::info!(
            model = %source.name,
            version,
            provider = providers[0].ort_name(),
            instances = count,
            "model version ready"
        );
        Ok(ServedModel {
            name: source.name.clone(),
            version,
            config,
            provider: providers[0],
            inputs,
            outputs,
            instances: Instances::new(sessions),
            cache,
            batcher,
            text_batcher,
            text,
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

/// Requests a batching model queues at most unless its queue policy says otherwise.
const DEFAULT_MAX_QUEUE: usize = 1024;

/// The batching policy of a configuration with `dynamic_batching` and a batch dimension.
fn batch_policy(config: &ModelConfig) -> Option<BatchPolicy> {
    let batching = config.dynamic_batching.as_ref()?;
    let max_batch = usize::try_from(config.max_batch_size)
        .ok()
        .filter(|b| *b > 0)?;
    let max_queue = batching
        .default_queue_policy
        .as_ref()
        .map(|q| q.max_queue_size as usize)
        .filter(|q| *q > 0)
        .unwrap_or(DEFAULT_MAX_QUEUE);
    Some(BatchPolicy {
        max_batch,
        preferred: batching
            .preferred_batch_size
            .iter()
            .filter_map(|p| usize::try_from(*p).ok())
            .collect(),
        max_delay: Duration::from_micros(batching.max_queue_delay_microseconds),
        max_queue,
    })
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
