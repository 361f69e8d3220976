//! Answers grounded in the knowledge base: hybrid retrieval over the collections the caller
//! may read, a prompt with numbered sources, generation by a configured language model, and
//! the answer with the citations its `[n]` marks point to.
//!
//! Without any language model configured an answer is still given: the best passages with
//! their citations and a plain statement that no model is configured.

pub mod chats;
mod prompt;

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::search::{Hit, Mode, SearchRequest};
use super::{KbError, KnowledgeBase};
use crate::auth::Principal;
use crate::config::AnswersConfig;
use crate::inference::generate::{
    Event, FinishReason, GenerateError, GenerateRequest, Prompt, Sampling,
};
use crate::inference::generators::Generators;
use prompt::{Source, Turn};

/// Longest question, in characters.
const MAX_QUESTION_CHARS: usize = 4096;
/// Most passages one answer may draw on.
const MAX_TOP_K: usize = 50;
/// What an answer says when no language model is configured.
pub const NO_GENERATOR: &str = "No language model is configured on this server, so no answer was \
written. These are the passages that best match the question.";

/// Body of `POST /api/v1/ask`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub question: String,
    /// Collections by name; all the caller may read when absent.
    pub collections: Option<Vec<String>>,
    /// Passages retrieved and cited (1–50; `answers.top_k` when absent).
    pub top_k: Option<usize>,
    /// Generator name; the default one when absent.
    pub model: Option<String>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// A chat of the caller's to continue: its earlier turns inform the answer, and the
    /// question and answer are added to it.
    pub chat: Option<i64>,
    /// Most tokens of the answer (`answers.max_answer_tokens` when absent).
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy, the default for answers).
    pub temperature: Option<f32>,
    /// Seed for sampled answers.
    pub seed: Option<u64>,
}

/// A source an answer was given, numbered as the answer cites it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Citation {
    /// The number `[n]` in the answer.
    pub n: usize,
    /// Collection name.
    pub collection: String,
    /// Document id.
    pub document: i64,
    /// Document title, when found in it.
    pub title: Option<String>,
    /// Document file name.
    pub filename: String,
    /// First page of the passage (paged formats).
    pub page_start: Option<i64>,
    /// Last page of the passage.
    pub page_end: Option<i64>,
    /// Chunk id.
    pub chunk: i64,
    /// Position of the chunk in its document.
    pub seq: i64,
    /// Character span in the document's extracted text.
    pub chars: [i64; 2],
    /// The passage.
    pub text: String,
    /// Retrieval score (reciprocal-rank fusion).
    pub score: f64,
}

/// Token counts of an answer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// Prompt tokens (0 when an upstream did not say).
    pub prompt_tokens: usize,
    /// Answer tokens.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
}

/// What is known of an answer before its text: sent first when streaming.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerHead {
    /// The sources, numbered.
    pub citations: Vec<Citation>,
    /// The generator writing the answer; `null` when none is configured.
    pub model: Option<String>,
    /// The chat the answer is added to.
    pub chat: Option<i64>,
    /// Time spent retrieving, in milliseconds.
    pub retrieval_ms: f64,
}

/// What is known once the answer is complete.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerTail {
    /// `stop` or `length`; `null` when no generator wrote it.
    pub finish_reason: Option<FinishReason>,
    /// The citation numbers the answer uses, in order of first mention.
    pub cited: Vec<usize>,
    /// Token counts.
    pub usage: Usage,
    /// Milliseconds from handing the prompt to the generator to its first text (the prompt's
    /// prefill and one decoding step); `null` without a generator.
    pub first_token_ms: Option<f64>,
}

/// A piece of an answer being written.
pub enum AnswerEvent {
    /// More text.
    Delta(String),
    /// The end.
    Done(AnswerTail),
    /// Generation failed part-way.
    Failed(GenerateError),
}

/// An answer on its way: the head now, the text as it is written.
pub struct Answering {
    /// Citations and the model.
    pub head: AnswerHead,
    /// Text deltas, then `Done` or `Failed`. Dropping it stops the generation.
    pub events: mpsc::Receiver<AnswerEvent>,
}

/// A complete answer (`POST /api/v1/ask` without streaming).
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The answer text.
    pub answer: String,
    /// Citations, model, chat and retrieval time.
    #[serde(flatten)]
    pub head: AnswerHead,
    /// Finish reason, cited numbers and usage.
    #[serde(flatten)]
    pub tail: AnswerTail,
}

impl Answering {
    /// Waits for the whole answer.
    pub async fn collect(mut self) -> Result<Answer, KbError> {
        let mut text = String::new();
        while let Some(event) = self.events.recv().await {
            match event {
                AnswerEvent::Delta(d) => text.push_str(&d),
                AnswerEvent::Failed(e) => return Err(e.into()),
                AnswerEvent::Done(tail) => {
                    return Ok(Answer {
                        answer: text,
                        head: self.head,
                        tail,
                    });
                }
            }
        }
        Err(KbError::Internal(
            "the answer ended without a result".into(),
        ))
    }
}

impl KnowledgeBase {
    /// Answers a question from the collections the caller may read.
    pub async fn ask(
        &self,
        who: &Principal,
        req: AskRequest,
        generators: &Arc<Generators>,
        answers: &AnswersConfig,
    ) -> Result<Answering, KbError> {
        let question = req.question.trim().to_string();
        if question.is_empty() {
            return Err(KbError::Invalid("question is empty: ask something".into()));
        }
        if question.chars().count() > MAX_QUESTION_CHARS {
            return Err(KbError::Invalid(format!(
                "question is longer than {MAX_QUESTION_CHARS} characters"
            )));
        }
        let top_k = req.top_k.unwrap_or(answers.top_k);
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(KbError::Invalid(format!(
                "top_k {top_k} is out of range 1-{MAX_TOP_K}"
            )));
        }
        if req.max_tokens == Some(0) {
            return Err(KbError::Invalid("max_tokens must be at least 1".into()));
        }
        if let Some(t) = req.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(KbError::Invalid(format!(
                "temperature {t} is out of range 0-2"
            )));
        }
        // The generator is resolved before any work, so a wrong name is a quick 404.
        let model = match (&req.model, generators.is_empty()) {
            (None, true) => None,
            (name, _) => Some(generators.resolve(name.as_deref())?),
        };
        let history = match req.chat {
            None => Vec::new(),
            Some(chat) => {
                let (who, turns) = (who.clone(), answers.history_turns);
                self.store
                    .run(move |conn| -> Result<Vec<(String, String)>, KbError> {
                        chats::owned(conn, &who, chat)?;
                        chats::history(conn, chat, turns)
                    })
                    .await?
            }
        };

        let started = Instant::now();
        // A follow-up ("and its population?") is retrieved together with the question before it.
        let query = match history.last() {
            Some((previous, _)) => format!("{previous}\n{question}"),
            None => question.clone(),
        };
        let found = self
            .search(
                who,
                SearchRequest {
                    query,
                    collections: req.collections.clone(),
                    top_k: Some(top_k),
                    mode: Mode::Hybrid,
                    filters: None,
                },
            )
            .await?;
        let retrieval_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut citations: Vec<Citation> = found.hits.into_iter().map(citation).collect();

        let (tx, rx) = mpsc::channel(64);
        let Some(model) = model else {
            let tail = AnswerTail {
                finish_reason: None,
                cited: Vec::new(),
                usage: Usage::default(),
                first_token_ms: None,
            };
            let head = AnswerHead {
                citations,
                model: None,
                chat: req.chat,
                retrieval_ms,
            };
            if let Some(chat) = req.chat {
                let citations = head.citations.clone();
                self.store
                    .run(move |conn| {
                        chats::record(conn, chat, &question, NO_GENERATOR, &citations, None)
                    })
                    .await?;
            }
            // The channel holds both events, so these sends cannot wait.
            let _ = tx.send(AnswerEvent::Delta(NO_GENERATOR.to_string())).await;
            let _ = tx.send(AnswerEvent::Done(tail)).await;
            return Ok(Answering { head, events: rx });
        };

        let turns: Vec<Turn> = history
            .into_iter()
            .map(|(question, answer)| Turn { question, answer })
            .collect();
        let asked = req.max_tokens;
        // Without an explicit max_tokens, the answer's room never takes more than a quarter of
        // the model's context from the sources, and grows into whatever the prompt leaves.
        let room = |context: usize| match asked {
            Some(n) => n,
            None => answers.max_answer_tokens.min(context / 4).max(1),
        };
        // Sources that do not fit the model's context are dropped, least relevant first. The
        // prompt without sources and each source's block are tokenised once, the sources kept
        // are chosen from those counts, and the chosen prompt is tokenised once more, exactly:
        // its ids go to the generator, which then does not tokenise it again.
        let (prompt, prompt_ids, max_tokens) =
            match generators.measure(&model, &prompt::frame(&turns, &question))? {
                None => (
                    build_prompt(&citations, &turns, &question, answers.max_passage_chars),
                    None,
                    asked.unwrap_or(answers.max_answer_tokens),
                ),
                Some((frame, context)) => {
                    let budget = context.saturating_sub(room(context));
                    if frame.len() > budget {
                        return Err(GenerateError::ContextTooLong {
                            prompt_tokens: frame.len(),
                            max_tokens: room(context),
                            context_length: context,
                        }
                        .into());
                    }
                    let mut used = frame.len();
                    let mut keep = 0;
                    for c in &citations {
                        let block = prompt::quoted(&source(c), answers.max_passage_chars);
                        // The block's own count includes a BOS the whole prompt has only once.
                        let share = generators
                            .measure(&model, &Prompt::Text(block))?
                            .map_or(0, |(ids, _)| ids.len().saturating_sub(1));
                        if used + share > budget {
                            break;
                        }
                        used += share;
                        keep += 1;
                    }
                    citations.truncate(keep);
                    // Tokens merge across block boundaries, so the exact count may still differ a
                    // little: drop more sources while it does not fit.
                    loop {
                        let prompt =
                            build_prompt(&citations, &turns, &question, answers.max_passage_chars);
                        let ids = generators
                            .measure(&model, &prompt)?
                            .map(|(ids, _)| ids)
                            .unwrap_or_default();
                        if ids.len() <= budget || citations.is_empty() {
                            let max = asked.unwrap_or_else(|| {
                                answers
                                    .max_answer_tokens
                                    .min(context.saturating_sub(ids.len()))
                                    .max(1)
                            });
                            break (prompt, Some(ids), max);
                        }
                        citations.pop();
                    }
                }
            };
        let generating = Instant::now();
        let generation = generators
            .generate(
                &model,
                GenerateRequest {
                    prompt,
                    prompt_ids,
                    max_tokens: Some(max_tokens),
                    sampling: Sampling {
                        temperature: req.temperature.unwrap_or(0.0),
                        top_k: None,
                        top_p: None,
                        seed: req.seed,
                    },
                    stop: Vec::new(),
                },
            )
            .await?;
        let head = AnswerHead {
            citations: citations.clone(),
            model: Some(model.clone()),
            chat: req.chat,
            retrieval_ms,
        };
        let store = self.store.clone();
        let (chat, prompt_tokens) = (req.chat, generation.prompt_tokens);
        let mut events = generation.events;
        tokio::spawn(async move {
            let mut text = String::new();
            let mut first_token_ms = None;
            while let Some(event) = events.recv().await {
                match event {
                    Event::Delta(d) => {
                        first_token_ms
                            .get_or_insert_with(|| generating.elapsed().as_secs_f64() * 1000.0);
                        text.push_str(&d);
                        if tx.send(AnswerEvent::Delta(d)).await.is_err() {
                            // The client left: dropping `events` stops the generation.
                            return;
                        }
                    }
                    Event::Failed(e) => {
                        let _ = tx.send(AnswerEvent::Failed(e)).await;
                        return;
                    }
                    Event::Done(finished) => {
                        let cited = prompt::cited(&text, citations.len());
                        if let Some(chat) = chat {
                            let (q, t, c, m) = (question, text, citations, model);
                            let recorded = store
                                .run(move |conn| chats::record(conn, chat, &q, &t, &c, Some(&m)))
                                .await;
                            if let Err(e) = recorded {
                                tracing::warn!(chat, error = %e, "cannot record a chat turn");
                            }
                        }
                        let usage = Usage {
                            prompt_tokens,
                            completion_tokens: finished.completion_tokens,
                            total_tokens: prompt_tokens + finished.completion_tokens,
                        };
                        let _ = tx
                            .send(AnswerEvent::Done(AnswerTail {
                                finish_reason: Some(finished.finish_reason),
                                cited,
                                usage,
                                first_token_ms,
                            }))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Answering { head, events: rx })
    }
}

fn build_prompt(
    citations: &[Citation],
    turns: &[Turn],
    question: &str,
    max_chars: usize,
) -> Prompt {
    let sources: Vec<Source<'_>> = citations.iter().map(source).collect();
    prompt::build(&sources, turns, question, max_chars)
}

fn source(c: &Citation) -> Source<'_> {
    Source {
        n: c.n,
        title: c.title.as_deref().unwrap_or(&c.filename),
        page: c.page_start,
        text: &c.text,
    }
}

fn citation(hit: Hit) -> Citation {
    Citation {
        n: hit.rank,
        collection: hit.collection,
        document: hit.document,
        title: hit.title,
        filename: hit.filename,
        page_start: hit.page_start,
        page_end: hit.page_end,
        chunk: hit.chunk.id,
        seq: hit.chunk.seq,
        chars: hit.chunk.chars,
        text: hit.chunk.text,
        score: hit.score,
    }
}
