//! One loaded version of a model: its configuration, its instances behind a scheduler, and the
//! requests it answers (tensors, or texts for models with a text task).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ort::session::Session;
use serde::Serialize;

use super::batcher::{TensorRequest, run_merged, tensor_rows, tensors_compatible};
use super::cache::{self, ResponseCache};
use super::manager::ServingError;
use super::model_config::ModelConfig;
use super::placement::Device;
use super::repository::ModelTensor;
use super::runtime::Provider;
use super::scheduler::{BatchRule, Priority, Replies, RunBatch, SchedulePolicy, Scheduler};
use super::tensor::{NamedTensor, TensorData, protocol_name};
use super::text::{Encoded, Task, TextTask, pool};
use crate::telemetry::metrics::ServingMetrics;

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
    /// The device of each instance.
    pub devices: Vec<Device>,
    runner: Arc<Runner>,
    /// The response cache, when the model opted in and the cache is on.
    cache: Option<Arc<ResponseCache>>,
    scheduler: Scheduler<Work, Answer>,
    /// A session of its own for high-priority requests, when the version has one.
    lane: Option<Lane>,
}

/// Opens the session of a version's lane for high-priority requests.
pub type LaneOpener = Box<dyn Fn() -> Result<Session, String> + Send + Sync>;

/// The lane's session is opened on the first high-priority request, so that a daemon nobody
/// searches does not hold it (tens of MB); until it opens, or if it cannot, those requests
/// take the version's own sessions.
struct Lane {
    open: Arc<LaneOpener>,
    policy: SchedulePolicy,
    rule: Arc<WorkRule>,
    run: Arc<RunBatch<Session, Work, Answer>>,
    scheduler: tokio::sync::OnceCell<Option<Scheduler<Work, Answer>>>,
}

impl Lane {
    async fn scheduler(&self, name: &str) -> Option<&Scheduler<Work, Answer>> {
        self.scheduler
            .get_or_init(|| async {
                let open = self.open.clone();
                let opened = tokio::task::spawn_blocking(move || open())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                let started = opened.and_then(|session| {
                    Scheduler::start(
                        &format!("{name} (queries)"),
                        self.policy.clone(),
                        self.rule.clone(),
                        vec![session],
                        self.run.clone(),
                    )
                    .map_err(|e| e.to_string())
                });
                match started {
                    Ok(scheduler) => Some(scheduler),
                    Err(e) => {
                        tracing::error!(model = name, "queries take the batch sessions: {e}");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }
}

/// What a loaded version is made of (see [`ServedModel::start`]).
pub struct VersionParts {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// The effective configuration.
    pub config: ModelConfig,
    /// The provider of the first instance.
    pub provider: Provider,
    /// Declared inputs.
    pub inputs: Vec<ModelTensor>,
    /// Declared outputs.
    pub outputs: Vec<ModelTensor>,
    /// One session per instance.
    pub sessions: Vec<Session>,
    /// The device of each session.
    pub devices: Vec<Device>,
    /// A further session that serves only high-priority requests (a person's query), so they
    /// never wait behind a batch, opened on the first; it is not counted among the instances.
    pub lane: Option<LaneOpener>,
    /// The text task, when the configuration declares one.
    pub text: Option<TextTask>,
    /// The response cache, when the model uses it.
    pub cache: Option<Arc<ResponseCache>>,
    /// How requests queue and batch.
    pub policy: SchedulePolicy,
    /// Triton's metrics.
    pub metrics: ServingMetrics,
}

/// A request in the scheduler's queue.
enum Work {
    /// Checked input tensors and the outputs wanted.
    Tensors(TensorRequest),
    /// Tokenised texts.
    Texts(Vec<Encoded>),
}

/// The answer to a [`Work`].
enum Answer {
    Tensors(Vec<NamedTensor>),
    Texts(Vec<(TextOutput, usize)>),
}

/// Which work runs together: tensor requests with compatible tensor requests in one run; texts
/// with texts of similar length.
struct WorkRule {
    runner: Arc<Runner>,
}

impl BatchRule<Work> for WorkRule {
    fn rows(&self, work: &Work) -> usize {
        match work {
            Work::Tensors(r) => tensor_rows(r),
            Work::Texts(t) => t.len(),
        }
    }

    fn compatible(&self, seed: &Work, other: &Work) -> bool {
        match (seed, other) {
            (Work::Tensors(x), Work::Tensors(y)) => tensors_compatible(x, y),
            (Work::Texts(_), Work::Texts(_)) => true,
            _ => false,
        }
    }

    /// Texts run with texts of similar length ([`TextTask::select`]).
    fn select(&self, candidates: &[&Work]) -> Vec<usize> {
        let texts: Option<Vec<&[Encoded]>> = candidates
            .iter()
            .map(|w| match w {
                Work::Texts(t) => Some(t.as_slice()),
                Work::Tensors(_) => None,
            })
            .collect();
        match (&self.runner.text, texts) {
            (Some(text), Some(texts)) => text.select(&texts),
            _ => (0..candidates.len()).collect(),
        }
    }
}

/// One text's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum TextOutput {
    /// An embedding.
    Vector(Vec<f32>),
    /// A classification.
    Class(Classified),
}

impl TextOutput {
    /// The embedding, when this is one.
    fn vector(self) -> Option<Vec<f32>> {
        match self {
            TextOutput::Vector(v) => Some(v),
            TextOutput::Class(_) => None,
        }
    }
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
    /// Starts serving a version: one worker per session behind the scheduler.
    pub fn start(parts: VersionParts) -> Result<ServedModel, ServingError> {
        let runner = Arc::new(Runner {
            name: parts.name.clone(),
            version: parts.version.to_string(),
            config: parts.config.clone(),
            text: parts.text,
            metrics: parts.metrics,
            stats: VersionStats::default(),
            retired: OnceLock::new(),
        });
        let run: Arc<RunBatch<Session, Work, Answer>> = {
            let worker = runner.clone();
            Arc::new(
                move |session: &mut Session, jobs, replies: &mut Replies<Answer>| {
                    worker.run(session, jobs, replies);
                },
            )
        };
        let rule = Arc::new(WorkRule {
            runner: runner.clone(),
        });
        let lane = parts.lane.map(|open| Lane {
            open: Arc::new(open),
            policy: parts.policy.clone(),
            rule: rule.clone(),
            run: run.clone(),
            scheduler: tokio::sync::OnceCell::new(),
        });
        let scheduler = Scheduler::start(&parts.name, parts.policy, rule, parts.sessions, run)?;
        Ok(ServedModel {
            name: parts.name,
            version: parts.version,
            config: parts.config,
            provider: parts.provider,
            inputs: parts.inputs,
            outputs: parts.outputs,
            devices: parts.devices,
            runner,
            cache: parts.cache,
            scheduler,
            lane,
        })
    }

    /// Triton's statistics of this version.
    pub fn stats(&self) -> &VersionStats {
        &self.runner.stats
    }

    /// How many sessions (instances) serve this version.
    pub fn instance_count(&self) -> usize {
        self.devices.len()
    }

    /// Takes the version out of service: requests queued or arriving from now on are answered
    /// with `ServingError::Unavailable(why)` instead of running on a device that failed.
    pub fn retire(&self, why: String) {
        let _ = self.runner.retired.set(why);
    }

    /// The text task, or a clear refusal for models without one.
    pub fn text_task(&self) -> Result<&TextTask, ServingError> {
        self.runner.text.as_ref().ok_or_else(|| {
            ServingError::Invalid(format!(
                "model {:?} declares no text task (parameters task = \"embedding\" or \"classification\")",
                self.name
            ))
        })
    }

    /// Embeds texts; returns one vector per text (in request order) and the tokens used.
    /// `max_length` can keep fewer tokens per text than the model's setting.
    pub async fn embed(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<(Vec<Vec<f32>>, usize), ServingError> {
        if !matches!(self.text_task()?.task, Task::Embedding { .. }) {
            return Err(self.wrong_task("classifies text; it does not embed it"));
        }
        self.answer(texts, max_length, Priority::Normal, TextOutput::vector)
            .await
    }

    /// Embeds one query a person is waiting on: ahead of queued work (an ingestion's batches)
    /// and not held for the batching window.
    pub async fn embed_query(&self, text: &str) -> Result<Vec<f32>, ServingError> {
        if !matches!(self.text_task()?.task, Task::Embedding { .. }) {
            return Err(self.wrong_task("classifies text; it does not embed it"));
        }
        let texts = [text.to_string()];
        let (mut vectors, _) = self
            .answer(&texts, None, Priority::High, TextOutput::vector)
            .await?;
        vectors.pop().ok_or_else(mixed_answer)
    }

    /// Classifies texts; returns one result per text (in request order) and the tokens used.
    pub async fn classify(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<(Vec<Classified>, usize), ServingError> {
        if !matches!(self.text_task()?.task, Task::Classification { .. }) {
            return Err(self.wrong_task("embeds text; it does not classify it"));
        }
        self.answer(texts, max_length, Priority::Normal, |out| match out {
            TextOutput::Class(c) => Some(c),
            TextOutput::Vector(_) => None,
        })
        .await
    }

    fn wrong_task(&self, what: &str) -> ServingError {
        ServingError::Invalid(format!("model {:?} {what}", self.name))
    }

    /// Runs texts and takes the answer of the task already checked from each, with the tokens
    /// used.
    async fn answer<T>(
        &self,
        texts: &[String],
        max_length: Option<usize>,
        priority: Priority,
        pick: fn(TextOutput) -> Option<T>,
    ) -> Result<(Vec<T>, usize), ServingError> {
        let answers = self.run_texts(texts, max_length, priority).await?;
        let tokens = answers.iter().map(|(_, n)| n).sum();
        Ok((
            answers
                .into_iter()
                .filter_map(|(out, _)| pick(out))
                .collect(),
            tokens,
        ))
    }

    /// Tokenises texts and queues them: the instance's worker only runs the model. A few
    /// short texts (the common request) are tokenised in place, in well under a millisecond;
    /// more go to a blocking thread so the caller's async thread stays free.
    async fn run_texts(
        &self,
        texts: &[String],
        max_length: Option<usize>,
        priority: Priority,
    ) -> Result<Vec<(TextOutput, usize)>, ServingError> {
        let bytes: usize = texts.iter().map(String::len).sum();
        let encoded = if bytes <= INLINE_TOKENIZE_BYTES {
            self.text_task()?.tokenize(texts, max_length)
        } else {
            let runner = self.runner.clone();
            let texts = texts.to_vec();
            tokio::task::spawn_blocking(move || match &runner.text {
                Some(text) => text.tokenize(&texts, max_length),
                None => Err("the model has no text task".into()),
            })
            .await
            .map_err(|e| ServingError::Unavailable(format!("tokenising failed: {e}")))?
        }
        .map_err(ServingError::Invalid)?;
        let rows = encoded.len() as u64;
        match self
            .submit(Work::Texts(encoded), rows, None, priority)
            .await?
        {
            Answer::Texts(answers) => Ok(answers),
            Answer::Tensors(_) => Err(mixed_answer()),
        }
    }

    /// Checks the inputs against the configuration, runs the model, and returns the requested
    /// outputs (all configured outputs when `wanted` is empty). Every error names the tensor.
    /// `timeout` limits the wait in the queue when the queue policy lets requests set it.
    pub async fn infer(
        &self,
        inputs: Vec<NamedTensor>,
        wanted: &[String],
        timeout: Option<Duration>,
    ) -> Result<Vec<NamedTensor>, ServingError> {
        let labels = self.runner.labels();
        let m = &self.runner.metrics;
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
        let stats = &self.runner.stats;
        if let Some((cache, key)) = &cache_key {
            let looking = Instant::now();
            if let Some(outputs) = cache.get(key) {
                stats.cache_hit.add(looking.elapsed());
                stats.success.add(looking.elapsed());
                stats.answered(rows);
                m.cache_hits.with_label_values(&labels).inc();
                m.success.with_label_values(&labels).inc();
                m.count.with_label_values(&labels).inc_by(rows);
                return Ok(outputs);
            }
            stats.cache_miss.add(looking.elapsed());
            m.cache_misses.with_label_values(&labels).inc();
        }
        let outputs = match self.validate(&inputs, wanted) {
            Ok(outputs) => outputs,
            Err(e) => {
                m.failure.with_label_values(&labels).inc();
                stats.fail.add(Duration::ZERO);
                return Err(e);
            }
        };
        let answer = self
            .submit(
                Work::Tensors(TensorRequest { inputs, outputs }),
                rows,
                timeout,
                Priority::Normal,
            )
            .await?;
        let Answer::Tensors(outputs) = answer else {
            return Err(mixed_answer());
        };
        if let Some((cache, key)) = cache_key {
            cache.put(key, outputs.clone());
        }
        Ok(outputs)
    }

    /// Queues work of `rows` inferences and waits for its answer; counts it in Triton's
    /// metrics.
    async fn submit(
        &self,
        work: Work,
        rows: u64,
        timeout: Option<Duration>,
        priority: Priority,
    ) -> Result<Answer, ServingError> {
        if let Some(why) = self.runner.retired.get() {
            return Err(ServingError::Unavailable(why.clone()));
        }
        let labels = self.runner.labels();
        let m = &self.runner.metrics;
        let started = Instant::now();
        let result = {
            let _pending = Pending::new(m.pending.with_label_values(&labels));
            let lane = match (&self.lane, priority) {
                (Some(lane), Priority::High) => lane.scheduler(&self.name).await,
                _ => None,
            };
            let scheduler = lane.unwrap_or(&self.scheduler);
            scheduler.submit(work, timeout, priority).await
        };
        m.request_us
            .with_label_values(&labels)
            .inc_by(micros(started.elapsed()));
        let stats = &self.runner.stats;
        match result {
            Ok((answer, queued)) => {
                m.queue_us.with_label_values(&labels).inc_by(micros(queued));
                m.success.with_label_values(&labels).inc();
                m.count.with_label_values(&labels).inc_by(rows);
                stats.queue.add(queued);
                stats.success.add(started.elapsed());
                stats.answered(rows);
                Ok(answer)
            }
            Err(e) => {
                m.failure.with_label_values(&labels).inc();
                stats.fail.add(started.elapsed());
                Err(e)
            }
        }
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
}

/// Triton's statistics of one version (the statistics extension): request outcomes, time in
/// queue and in the model, cache use, all cumulative since load.
#[derive(Debug, Default)]
pub struct VersionStats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_infer: Tally,
    cache_hit: Tally,
    cache_miss: Tally,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
}

/// A count and the nanoseconds spent.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count.load(Ordering::Relaxed),
            "ns": self.ns.load(Ordering::Relaxed),
        })
    }
}

impl VersionStats {
    /// The statistics in Triton's `model_stats` entry shape.
    pub fn to_json(&self, name: &str, version: u64) -> serde_json::Value {
        let zero = Tally::default().json();
        serde_json::json!({
            "name": name,
            "version": version.to_string(),
            "last_inference": self.last_inference_ms.load(Ordering::Relaxed),
            "inference_count": self.inference_count.load(Ordering::Relaxed),
            "execution_count": self.execution_count.load(Ordering::Relaxed),
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                // Inputs and outputs are converted inside the timed run.
                "compute_input": zero,
                "compute_infer": self.compute_infer.json(),
                "compute_output": zero,
                "cache_hit": self.cache_hit.json(),
                "cache_miss": self.cache_miss.json(),
            },
            "batch_stats": [],
        })
    }

    fn answered(&self, rows: u64) {
        self.inference_count.fetch_add(rows, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now, Ordering::Relaxed);
    }
}

/// Counts a request as pending for as long as it lives, including when its caller gives up
/// and drops it mid-wait.
struct Pending(prometheus::IntGauge);

impl Pending {
    fn new(gauge: prometheus::IntGauge) -> Pending {
        gauge.inc();
        Pending(gauge)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Text bytes tokenised on the caller's thread rather than a blocking one.
const INLINE_TOKENIZE_BYTES: usize = 4096;

fn mixed_answer() -> ServingError {
    ServingError::Invalid("the model answered a request of another kind".into())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What an instance's worker needs to run batches.
struct Runner {
    name: String,
    version: String,
    config: ModelConfig,
    text: Option<TextTask>,
    metrics: ServingMetrics,
    stats: VersionStats,
    /// Why the version was taken out of service, once it is.
    retired: OnceLock<String>,
}

impl Runner {
    fn labels(&self) -> [&str; 2] {
        [self.name.as_str(), self.version.as_str()]
    }

    /// Runs one batch from the scheduler and answers each request.
    fn run(&self, session: &mut Session, jobs: Vec<Work>, replies: &mut Replies<Answer>) {
        if let Some(why) = self.retired.get() {
            replies.fail_rest(&ServingError::Unavailable(why.clone()));
            return;
        }
        let mut tensors = Vec::new();
        let mut texts = Vec::new();
        for job in jobs {
            match job {
                Work::Tensors(t) => tensors.push(t),
                Work::Texts(t) => texts.push(t),
            }
        }
        // The scheduler batches only compatible work: one of the two is empty.
        if !tensors.is_empty() {
            match run_merged(tensors, |inputs, outputs| {
                self.execute(session, inputs, outputs)
            }) {
                Ok(parts) => {
                    for (i, part) in parts.into_iter().enumerate() {
                        replies.send(i, Ok(Answer::Tensors(part)));
                    }
                }
                Err(e) => replies.fail_rest(&e),
            }
        } else {
            self.run_texts(session, texts, replies);
        }
    }

    /// Runs the texts of several requests together: sorted by length and cut into the runs
    /// the text task plans (padding costs real compute), each request answered as soon as its
    /// last text is done.
    fn run_texts(
        &self,
        session: &mut Session,
        jobs: Vec<Vec<Encoded>>,
        replies: &mut Replies<Answer>,
    ) {
        let Some(text) = &self.text else {
            replies.fail_rest(&ServingError::Invalid(format!(
                "model {:?} declares no text task",
                self.name
            )));
            return;
        };
        let output = match &text.task {
            Task::Embedding { output, .. } | Task::Classification { output, .. } => output,
        };
        // Every text as (request, position), shortest first.
        let mut order: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, texts)| (0..texts.len()).map(move |k| (j, k)))
            .collect();
        order.sort_by_key(|(j, k)| jobs[*j][*k].len());
        let lengths: Vec<usize> = order.iter().map(|(j, k)| jobs[*j][*k].len()).collect();
        let mut answers: Vec<Vec<Option<(TextOutput, usize)>>> =
            jobs.iter().map(|t| vec![None; t.len()]).collect();
        let mut left: Vec<usize> = jobs.iter().map(Vec::len).collect();
        for (j, n) in left.iter().enumerate() {
            if *n == 0 {
                replies.send(j, Ok(Answer::Texts(Vec::new())));
            }
        }
        for run in text.plan(&lengths) {
            let members = &order[run.clone()];
            let batch: Vec<&Encoded> = members.iter().map(|(j, k)| &jobs[*j][*k]).collect();
            let run_lengths = &lengths[run];
            let rows = self
                .execute(
                    session,
                    &text.assemble(&batch),
                    std::slice::from_ref(output),
                )
                .and_then(|out| match &text.task {
                    Task::Embedding {
                        pooling, normalize, ..
                    } => pool(&out[0], run_lengths, *pooling, *normalize)
                        .map_err(ServingError::Invalid)
                        .map(|v| v.into_iter().map(TextOutput::Vector).collect::<Vec<_>>()),
                    Task::Classification { labels, .. } => {
                        classify_rows(&out[0], labels, members.len())
                            .map(|v| v.into_iter().map(TextOutput::Class).collect())
                    }
                });
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    replies.fail_rest(&e);
                    return;
                }
            };
            for ((&(j, k), length), row) in members.iter().zip(run_lengths).zip(rows) {
                answers[j][k] = Some((row, *length));
                left[j] -= 1;
                if left[j] == 0 {
                    let done = std::mem::take(&mut answers[j])
                        .into_iter()
                        .flatten()
                        .collect();
                    replies.send(j, Ok(Answer::Texts(done)));
                }
            }
        }
    }

    /// Runs checked inputs on this worker's instance; counts the execution in Triton's
    /// metrics.
    fn execute(
        &self,
        session: &mut Session,
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
        let labels = self.labels();
        let computing = Instant::now();
        let results = session
            .run(values)
            .map_err(|e| invalid(format!("model {:?} refused the inputs: {e}", self.name)))?;
        self.metrics
            .compute_us
            .with_label_values(&labels)
            .inc_by(micros(computing.elapsed()));
        self.metrics.exec_count.with_label_values(&labels).inc();
        self.stats.compute_infer.add(computing.elapsed());
        self.stats.execution_count.fetch_add(1, Ordering::Relaxed);
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
