//! A generator that is another server on the box speaking OpenAI's API (vLLM, TensorRT-LLM,
//! NIM, Ollama, llama.cpp's server, or another sparkbrain): sparkbrain streams from it and
//! passes the text on, so the answers, citations and chats work the same with a large model.
//!
//! Every failure of the upstream becomes a clear error within the configured time: refused or
//! dropped connections and error answers are `Upstream` (502), silence past the timeout is
//! `Timeout` (504), and a body that is not an OpenAI stream is `Upstream` naming what was wrong.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::generate::{
    Event, FinishReason, Finished, GenerateError, GenerateRequest, Generation, Prompt,
};
use crate::config::UpstreamConfig;

/// Events buffered between the upstream reader and the consumer.
const EVENT_BUFFER: usize = 64;
/// Longest line of an event stream accepted from an upstream.
const MAX_LINE_BYTES: usize = 1 << 20;

/// An OpenAI-compatible server used as a generator.
pub struct UpstreamGenerator {
    name: String,
    base_url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    client: reqwest::Client,
}

impl UpstreamGenerator {
    /// A client for the upstream described by `config`, known in sparkbrain as `name`.
    pub fn new(name: &str, config: &UpstreamConfig) -> Result<UpstreamGenerator, GenerateError> {
        let api_key = match (&config.api_key, &config.api_key_env) {
            (key, _) if !key.is_empty() => Some(key.clone()),
            (_, var) if !var.is_empty() => Some(std::env::var(var).map_err(|_| {
                GenerateError::Invalid(format!(
                    "generator {name:?}: the environment variable {var} (api_key_env) is not set"
                ))
            })?),
            _ => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_seconds))
            .build()
            .map_err(|e| GenerateError::Internal(format!("cannot build an HTTP client: {e}")))?;
        Ok(UpstreamGenerator {
            name: name.to_string(),
            base_url: config.base_url.trim_end_matches('/').to_string(),
            model: config.model.clone(),
            api_key,
            timeout: Duration::from_secs(config.timeout_seconds),
            client,
        })
    }

    /// Where requests go, for status pages.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The model name sent upstream.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Starts a streamed generation upstream. The answer's first bytes are awaited here, so a
    /// refused connection or an error status is this call's error, not an event.
    pub async fn generate(&self, req: GenerateRequest) -> Result<Generation, GenerateError> {
        let (path, mut body) = match &req.prompt {
            Prompt::Chat(messages) => ("chat/completions", json!({ "messages": messages })),
            Prompt::Text(text) => ("completions", json!({ "prompt": text })),
        };
        body["model"] = json!(self.model);
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        body["temperature"] = json!(req.sampling.temperature);
        if let Some(n) = req.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if let Some(p) = req.sampling.top_p {
            body["top_p"] = json!(p);
        }
        if let Some(k) = req.sampling.top_k {
            // Not in OpenAI's API; vLLM, llama.cpp and sparkbrain read it, others ignore it.
            body["top_k"] = json!(k);
        }
        if let Some(seed) = req.sampling.seed {
            body["seed"] = json!(seed);
        }
        if !req.stop.is_empty() {
            body["stop"] = json!(req.stop);
        }
        let url = format!("{}/{path}", self.base_url);
        let mut request = self.client.post(&url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let response = tokio::time::timeout_at(deadline, request.send())
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.unreachable(&url, &e))?;
        let status = response.status();
        if !status.is_success() {
            let text = tokio::time::timeout_at(deadline, response.text())
                .await
                .unwrap_or_else(|_| Ok(String::new()))
                .unwrap_or_default();
            return Err(self.refused(status, &text));
        }
        let chat = matches!(req.prompt, Prompt::Chat(_));
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let reader = StreamReader {
            name: self.name.clone(),
            chat,
            deadline,
            timeout: self.timeout,
        };
        tokio::spawn(async move {
            let outcome = reader.relay(response, &tx).await;
            let last = match outcome {
                Ok(finished) => Event::Done(finished),
                Err(e) => Event::Failed(e),
            };
            let _ = tx.send(last).await;
        });
        Ok(Generation {
            prompt_tokens: 0,
            events: rx,
        })
    }

    fn timed_out(&self) -> GenerateError {
        GenerateError::Timeout(format!(
            "generator {:?}: the upstream at {} did not answer within {} s",
            self.name,
            self.base_url,
            self.timeout.as_secs()
        ))
    }

    fn unreachable(&self, url: &str, e: &reqwest::Error) -> GenerateError {
        if e.is_timeout() {
            return self.timed_out();
        }
        GenerateError::Upstream(format!(
            "generator {:?}: cannot reach the upstream at {url}: {} (is it running?)",
            self.name,
            root_cause(e)
        ))
    }

    fn refused(&self, status: reqwest::StatusCode, body: &str) -> GenerateError {
        let said = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.get("detail"))
                    .or_else(|| v.get("error"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        let hint = match status.as_u16() {
            401 | 403 => " (check the generator's api_key)",
            404 => " (check base_url and the model name)",
            _ => "",
        };
        GenerateError::Upstream(format!(
            "generator {:?}: the upstream answered {status}: {said}{hint}",
            self.name
        ))
    }
}

/// The innermost error of a chain, which says what actually went wrong.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Reads an upstream's server-sent events and relays the text.
struct StreamReader {
    name: String,
    chat: bool,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl StreamReader {
    async fn relay(
        &self,
        response: reqwest::Response,
        tx: &mpsc::Sender<Event>,
    ) -> Result<Finished, GenerateError> {
        let mut bytes = response.bytes_stream();
        let mut line = Vec::new();
        let mut finish: Option<FinishReason> = None;
        let mut completion_tokens = 0usize;
        let mut counted = false;
        loop {
            let chunk = tokio::time::timeout_at(self.deadline, bytes.next())
                .await
                .map_err(|_| {
                    GenerateError::Timeout(format!(
                        "generator {:?}: the upstream did not finish within {} s",
                        self.name,
                        self.timeout.as_secs()
                    ))
                })?;
            let Some(chunk) = chunk else {
                return Err(self.garbage("the stream ended without [DONE]"));
            };
            let chunk = chunk.map_err(|e| {
                GenerateError::Upstream(format!(
                    "generator {:?}: the upstream connection failed mid-answer: {}",
                    self.name,
                    root_cause(&e)
                ))
            })?;
            for byte in chunk {
                if byte != b'\n' {
                    if line.len() >= MAX_LINE_BYTES {
                        return Err(self.garbage("a line of the stream is over 1 MiB"));
                    }
                    line.push(byte);
                    continue;
                }
                let text = std::mem::take(&mut line);
                let text =
                    String::from_utf8(text).map_err(|_| self.garbage("the stream is not UTF-8"))?;
                let text = text.trim_end_matches('\r');
                let Some(data) = text.strip_prefix("data:") else {
                    // Blank lines end events; comments and other fields carry no text.
                    continue;
                };
                let data = data.trim_start();
                if data == "[DONE]" {
                    return Ok(Finished {
                        finish_reason: finish.unwrap_or(FinishReason::Stop),
                        completion_tokens,
                    });
                }
                let value: Value = serde_json::from_str(data)
                    .map_err(|e| self.garbage(&format!("an event is not JSON ({e})")))?;
                if let Some(message) = value.pointer("/error/message").and_then(Value::as_str) {
                    return Err(GenerateError::Upstream(format!(
                        "generator {:?}: the upstream failed mid-answer: {message}",
                        self.name
                    )));
                }
                if let Some(n) = value
                    .pointer("/usage/completion_tokens")
                    .and_then(Value::as_u64)
                {
                    completion_tokens = usize::try_from(n).unwrap_or(usize::MAX);
                    counted = true;
                }
                let Some(choices) = value.get("choices").and_then(Value::as_array) else {
                    return Err(self.garbage("an event has no \"choices\" list"));
                };
                for choice in choices {
                    let piece = if self.chat {
                        choice.pointer("/delta/content")
                    } else {
                        choice.get("text")
                    };
                    if let Some(piece) = piece.and_then(Value::as_str)
                        && !piece.is_empty()
                    {
                        if !counted {
                            completion_tokens += 1;
                        }
                        if tx.send(Event::Delta(piece.to_string())).await.is_err() {
                            // The client is gone: dropping the response closes the upstream.
                            return Ok(Finished {
                                finish_reason: FinishReason::Stop,
                                completion_tokens,
                            });
                        }
                    }
                    match choice.get("finish_reason").and_then(Value::as_str) {
                        Some("length") => finish = Some(FinishReason::Length),
                        Some(_) => finish = Some(FinishReason::Stop),
                        None => {}
                    }
                }
            }
        }
    }

    fn garbage(&self, what: &str) -> GenerateError {
        GenerateError::Upstream(format!(
            "generator {:?}: the upstream's answer is not an OpenAI event stream: {what}",
            self.name
        ))
    }
}
