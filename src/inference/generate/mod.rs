//! Text generation with a decoder-only language model in ONNX Runtime.
//!
//! The model is an ONNX export in the layout Hugging Face's exporters write: inputs
//! `input_ids` `[b, s]`, `attention_mask` `[b, past + s]`, `position_ids` `[b, s]` (optional) and
//! `past_key_values.N.key` / `.value` `[b, kv_heads, past, head_dim]`; outputs `logits`
//! `[b, s, vocab]` and `present.N.key` / `.value`. The number of layers, the key/value heads and
//! the head size are read from the session, never assumed. The `tokenizer.json` and the settings
//! files exporters write beside the model (`generation_config.json`, `config.json`,
//! `tokenizer_config.json`) complete what the [`OnnxGeneratorSpec`] leaves out.
//!
//! One scheduler thread per generator owns the session. It prefills each new request's prompt in
//! one run, then decodes every active sequence together, one run per token, with the key/value
//! cache kept between steps (continuous batching: a request joins the batch after its prefill
//! and leaves it when done, while the others go on). Requests beyond `max_batch` wait in a
//! bounded queue; beyond that, [`GenerateError::Overloaded`]. Output streams as text deltas on a
//! channel; dropping the receiver cancels the request at the next step.

#![warn(missing_docs)]

mod model;
mod sampling;
mod scheduler;
mod settings;
mod template;
mod text;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::runtime::{Provider, Runtime, SessionSpec, TensorRtOptions};
use crate::config::MemoryMode;
use model::Model;
use sampling::Sampler;
use scheduler::Sequence;
use settings::Settings;
use template::ChatFormat;

/// Requests that may wait for a batch slot, per slot: enough to absorb a burst without letting a
/// backlog grow that would answer only after clients have given up.
const WAITING_PER_SLOT: usize = 4;

/// Models up to this size get a second session for lone sequences (see `model::Model`): their
/// steps are short enough for ONNX Runtime's per-run allocation to matter, and a second copy
/// of their weights is cheap.
const SMALL_MODEL_BYTES: u64 = 64 << 20;

/// Most stop sequences in one request: each is looked for after every token.
const MAX_STOP_SEQUENCES: usize = 16;

/// What to load and how to run it.
#[derive(Debug, Clone)]
pub struct OnnxGeneratorSpec {
    /// The ONNX file.
    pub model: PathBuf,
    /// Its `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Beginning-of-sequence token; from the files beside the model when `None`.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens; from the files beside the model when `None`.
    pub eos_token_ids: Option<Vec<u32>>,
    /// Positions the model can attend to; `config.json`'s `max_position_embeddings` when `None`.
    pub context_length: Option<usize>,
    /// A Jinja chat template; `tokenizer_config.json`'s when `None`.
    pub chat_template: Option<String>,
    /// Intra-op threads of the session; 0 means one per core.
    pub threads: usize,
    /// Most sequences decoded at once, across all sessions.
    pub max_batch: usize,
    /// Sessions decoding in parallel, each on its own thread with an even share of
    /// `max_batch` (and of the cores when `threads` is 0).
    pub sessions: usize,
    /// Memory against speed, as for the other sessions.
    pub memory_mode: MemoryMode,
}

/// What a loaded generator is, for listings and for checking requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratorInfo {
    /// Positions the model can attend to: prompt and completion together.
    pub context_length: usize,
    /// Size of the vocabulary (the logits' last dimension).
    pub vocab: usize,
    /// Beginning-of-sequence token, when the model has one.
    pub bos_token_id: Option<u32>,
    /// Tokens that end a completion.
    pub eos_token_ids: Vec<u32>,
    /// Chat prompts use the model's own template (otherwise the plain fallback of
    /// [`Prompt::Chat`]).
    pub has_chat_template: bool,
    /// The execution provider that runs the model.
    pub provider: Provider,
}

/// What to complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A raw completion prompt; the BOS token is put before it.
    Text(String),
    /// A conversation, rendered with the model's chat template and ending with the prompt for the
    /// assistant's turn. Without a template it becomes plain text, one line per message and a
    /// last line `Assistant:` (`System: …\nUser: …\nAssistant:`), after the BOS token.
    Chat(Vec<ChatMessage>),
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 picks the most likely token (greedy); above 0 samples from
    /// `softmax(logits / temperature)`.
    pub temperature: f32,
    /// Sample only among the `k` most likely tokens (`0` or `None`: no limit).
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to `p` (nucleus),
    /// `0 < p <= 1`.
    pub top_p: Option<f32>,
    /// Seed of the random generator: the same seed and request give the same text. Random when
    /// `None`.
    pub seed: Option<u64>,
}

impl Sampling {
    /// Always the most likely token.
    pub fn greedy() -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: None,
        }
    }
}

impl Default for Sampling {
    /// OpenAI's defaults: temperature 1, no top-k or top-p, random seed.
    fn default() -> Sampling {
        Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: None,
        }
    }
}

/// One completion to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// The prompt as [`OnnxGenerator::tokenize`] of the same generator returned it, when the
    /// caller has it already (to fit the prompt to the context): it is not tokenised again.
    /// Upstream servers tokenise `prompt` themselves and ignore it.
    pub prompt_ids: Option<Vec<u32>>,
    /// Most tokens to generate; `None`: until an end token or the context is full.
    pub max_tokens: Option<usize>,
    /// Token choice.
    pub sampling: Sampling,
    /// Texts that end the completion when it produces them; they are not part of the answer.
    pub stop: Vec<String>,
}

/// An accepted request: its prompt size and the stream of its output.
#[derive(Debug)]
pub struct Generation {
    /// Tokens of the prompt as the model sees it (BOS and template included).
    pub prompt_tokens: usize,
    /// Text deltas, then exactly one [`Event::Done`] or [`Event::Failed`]. Dropping the receiver
    /// cancels the generation.
    pub events: tokio::sync::mpsc::Receiver<Event>,
}

/// One step of a generation's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More text: always whole characters; all deltas together are the completion.
    Delta(String),
    /// The completion ended normally.
    Done(Finished),
    /// The completion could not go on.
    Failed(GenerateError),
}

/// How a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens generated, the end token not counted.
    pub completion_tokens: usize,
}

/// Why a completion ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end token or a stop sequence.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

/// Why a generation was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The prompt and the tokens asked for do not fit the model's context.
    #[error(
        "the prompt has {prompt_tokens} tokens and {max_tokens} more were asked for, beyond the model's context of {context_length} tokens"
    )]
    ContextTooLong {
        /// Tokens of the prompt.
        prompt_tokens: usize,
        /// Tokens asked for (at least one when the request set no `max_tokens`).
        max_tokens: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
    /// No generator of the name asked for.
    #[error("{0}")]
    NotFound(String),
    /// The waiting queue is full; retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The generator is not loaded or has stopped.
    #[error("{0}")]
    Unavailable(String),
    /// An upstream server failed.
    #[error("{0}")]
    Upstream(String),
    /// An upstream server did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// A fault on the daemon's side.
    #[error("{0}")]
    Internal(String),
}

/// What the caller's side and the scheduler thread both read.
struct Shared {
    tokenizer: Tokenizer,
    settings: Settings,
    chat: ChatFormat,
    info: GeneratorInfo,
    stats: Stats,
}

/// What the scheduler has done, for tests and diagnostics.
#[derive(Default)]
struct Stats {
    /// Sequences in the batch now.
    active: AtomicUsize,
    /// Prompts prefilled.
    prefills: AtomicUsize,
    /// Batched decoding steps run.
    steps: AtomicUsize,
}

/// A loaded decoder model with its scheduler thread. Share it as `Arc`; dropping the last
/// handle lets the thread finish the generations it has and stop.
pub struct OnnxGenerator {
    shared: Arc<Shared>,
    queue: crossbeam_channel::Sender<Sequence>,
}

impl OnnxGenerator {
    /// Loads the tokenizer and the model, resolves the generation settings and starts the
    /// scheduler thread. Missing files and a model ONNX Runtime refuses are `Unavailable`;
    /// settings that cannot work (no context length, a model not in the exporter layout, a
    /// template that does not compile) are `Invalid`, with the setting named.
    pub fn open(
        runtime: &Runtime,
        spec: &OnnxGeneratorSpec,
    ) -> Result<OnnxGenerator, GenerateError> {
        if spec.max_batch == 0 {
            return Err(GenerateError::Invalid(
                "max_batch must be at least 1".into(),
            ));
        }
        if !(1..=spec.max_batch).contains(&spec.sessions) {
            return Err(GenerateError::Invalid(format!(
                "sessions {} is out of range 1-{} (max_batch)",
                spec.sessions, spec.max_batch
            )));
        }
        for (what, path) in [("model", &spec.model), ("tokenizer", &spec.tokenizer)] {
            if !path.is_file() {
                return Err(GenerateError::Unavailable(format!(
                    "the generator's {what} file {} does not exist",
                    path.display()
                )));
            }
        }
        let tokenizer = Tokenizer::from_file(&spec.tokenizer).map_err(|e| {
            GenerateError::Unavailable(format!(
                "cannot read the tokenizer {}: {e}",
                spec.tokenizer.display()
            ))
        })?;
        let settings = settings::resolve(spec, &tokenizer)?;
        let chat = ChatFormat::new(
            settings.chat_template.as_deref(),
            settings.bos_token.clone().unwrap_or_default(),
            settings.eos_token.clone().unwrap_or_default(),
        )?;
        // Parallel sessions share the cores rather than each taking all of them.
        let threads = match spec.threads {
            0 => {
                (std::thread::available_parallelism().map_or(1, |n| n.get()) / spec.sessions).max(1)
            }
            n => n,
        };
        let session_spec = SessionSpec {
            path: &spec.model,
            threads,
            memory_mode: spec.memory_mode,
            // A decoder this engine runs steps token by token with host-side sampling and
            // cache handling: the CPU provider is the one it is built and tested for.
            chain: &[Provider::Cpu],
            gpu: None,
            tensorrt: TensorRtOptions::default(),
        };
        let unavailable = |e: super::RuntimeError| GenerateError::Unavailable(e.to_string());
        let small = std::fs::metadata(&spec.model).is_ok_and(|m| m.len() <= SMALL_MODEL_BYTES);
        let mut models = Vec::with_capacity(spec.sessions);
        let mut provider = Provider::Cpu;
        for _ in 0..spec.sessions {
            let opened = runtime.open_dynamic(&session_spec).map_err(unavailable)?;
            provider = opened.provider;
            let single = if small {
                Some(runtime.open(&session_spec).map_err(unavailable)?.session)
            } else {
                None
            };
            models.push(Model::new(opened.session, single, &spec.model)?);
        }
        let model = &models[0];
        let vocab = model
            .vocab()
            .unwrap_or_else(|| tokenizer.get_vocab_size(true));
        let info = GeneratorInfo {
            context_length: settings.context_length,
            vocab,
            bos_token_id: settings.bos,
            eos_token_ids: settings.eos.clone(),
            has_chat_template: chat.has_template(),
            provider,
        };
        let shared = Arc::new(Shared {
            tokenizer,
            settings,
            chat,
            info,
            stats: Stats::default(),
        });
        let (queue, waiting) = crossbeam_channel::bounded(spec.max_batch * WAITING_PER_SLOT);
        let name = spec
            .model
            .parent()
            .and_then(|d| d.file_name())
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        // An even share of the batch per session, so that a burst spreads over all of them
        // rather than filling the first one awake.
        let per_session = spec.max_batch.div_ceil(spec.sessions);
        for (i, model) in models.into_iter().enumerate() {
            scheduler::start(
                &format!("{name}-{i}"),
                model,
                shared.clone(),
                waiting.clone(),
                per_session,
            )
            .map_err(|e| {
                GenerateError::Internal(format!("cannot start the generator's thread: {e}"))
            })?;
        }
        Ok(OnnxGenerator { shared, queue })
    }

    /// What the generator is.
    pub fn info(&self) -> GeneratorInfo {
        self.shared.info.clone()
    }

    /// The prompt's token ids as [`OnnxGenerator::generate`] feeds them to the model (BOS
    /// and template included).
    pub fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, GenerateError> {
        self.encode(prompt)
    }

    /// Checks and queues a request; returns at once with the stream of its output. Tokenising
    /// and rendering the template happen on the caller's thread (well under a millisecond for
    /// prompts that fit a context); the model runs on the generator's own thread.
    pub fn generate(&self, req: GenerateRequest) -> Result<Generation, GenerateError> {
        if req.max_tokens == Some(0) {
            return Err(GenerateError::Invalid(
                "max_tokens must be at least 1".into(),
            ));
        }
        if req.stop.len() > MAX_STOP_SEQUENCES {
            return Err(GenerateError::Invalid(format!(
                "at most {MAX_STOP_SEQUENCES} stop sequences are allowed, {} were given",
                req.stop.len()
            )));
        }
        if req.stop.iter().any(String::is_empty) {
            return Err(GenerateError::Invalid(
                "a stop sequence cannot be empty".into(),
            ));
        }
        let sampler = Sampler::new(&req.sampling)?;
        let ids = match req.prompt_ids {
            Some(ids) => ids,
            None => self.encode(&req.prompt)?,
        };
        if ids.is_empty() {
            return Err(GenerateError::Invalid(
                "the prompt is empty and the model has no BOS token to start from".into(),
            ));
        }
        let context_length = self.shared.info.context_length;
        let room = context_length.saturating_sub(ids.len());
        let asked = req.max_tokens.unwrap_or(1);
        if asked > room {
            return Err(GenerateError::ContextTooLong {
                prompt_tokens: ids.len(),
                max_tokens: asked,
                context_length,
            });
        }
        let max_new = req.max_tokens.unwrap_or(room);
        let prompt_tokens = ids.len();
        // Each step sends at most one delta, and the end one more delta and the final event:
        // sends never find the channel full, so a slow reader never holds up the batch.
        let (events, receiver) = tokio::sync::mpsc::channel(max_new + 4);
        let sequence = Sequence::new(ids, max_new, sampler, req.stop, events);
        match self.queue.try_send(sequence) {
            Ok(()) => Ok(Generation {
                prompt_tokens,
                events: receiver,
            }),
            Err(crossbeam_channel::TrySendError::Full(mut s)) => {
                s.disarm();
                Err(GenerateError::Overloaded(
                    "the generator's queue is full; retry later".into(),
                ))
            }
            Err(crossbeam_channel::TrySendError::Disconnected(mut s)) => {
                s.disarm();
                Err(GenerateError::Unavailable(
                    "the generator has stopped".into(),
                ))
            }
        }
    }

    /// Sequences in the batch now, prompts prefilled and steps run so far.
    #[cfg(test)]
    fn stats(&self) -> (usize, usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.shared.stats;
        (
            s.active.load(Relaxed),
            s.prefills.load(Relaxed),
            s.steps.load(Relaxed),
        )
    }

    /// The prompt's token ids as the model is fed them.
    fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, GenerateError> {
        let shared = &self.shared;
        let (text, add_bos) = match prompt {
            Prompt::Text(text) => (std::borrow::Cow::Borrowed(text.as_str()), true),
            Prompt::Chat(messages) => {
                let rendered = shared.chat.render(messages)?;
                (std::borrow::Cow::Owned(rendered.text), rendered.add_bos)
            }
        };
        // Special tokens are placed by us (BOS) or by the template, never by the tokenizer's
        // post-processor, so that neither adds a second BOS.
        let encoding = shared
            .tokenizer
            .encode(text.as_ref(), false)
            .map_err(|e| GenerateError::Invalid(format!("cannot tokenise the prompt: {e}")))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_bos && let Some(bos) = shared.settings.bos {
            ids.push(bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }
}

#[cfg(test)]
mod tests;
