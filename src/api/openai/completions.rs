//! `POST /v1/chat/completions` and `POST /v1/completions` on the configured generators, whole
//! or streamed as server-sent events with the chunk shapes OpenAI sends.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{OaCaller, OpenAiError, parse_body};
use crate::daemon::App;
use crate::inference::generate::{
    ChatMessage, Event, FinishReason, GenerateRequest, Generation, Prompt, Sampling,
};
use crate::inference::generators::Generators;

/// Most stop sequences, as OpenAI allows.
const MAX_STOP: usize = 4;

/// Fields common to both endpoints.
#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Value>,
    n: Option<usize>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<InMessage>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: Value,
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Value,
    #[serde(flatten)]
    common: Common,
}

/// Which endpoint a response is for: it decides the object names and where text goes.
#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Text,
}

fn generators(app: &App) -> Result<Arc<Generators>, OpenAiError> {
    app.generators().ok_or_else(|| OpenAiError {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        message: "the language models are still loading; retry shortly".into(),
        param: None,
        code: None,
    })
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(app): State<Arc<App>>,
    _c: OaCaller,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: ChatRequest = parse_body(body)?;
    if req.messages.is_empty() {
        return Err(OpenAiError::invalid(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in req.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant"
        ) {
            return Err(OpenAiError::invalid(
                format!(
                    "role {:?} is not supported: use system, user or assistant",
                    m.role
                ),
                Some("messages"),
            ));
        }
        let role = if m.role == "developer" {
            "system".to_string()
        } else {
            m.role
        };
        messages.push(ChatMessage {
            role,
            content: content_text(&m.content)?,
        });
    }
    run(&app, Prompt::Chat(messages), req.common, Shape::Chat).await
}

/// `POST /v1/completions`.
pub async fn complete(
    State(app): State<Arc<App>>,
    _c: OaCaller,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OpenAiError> {
    let req: CompletionRequest = parse_body(body)?;
    let prompt = match &req.prompt {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        _ => {
            return Err(OpenAiError::invalid(
                "prompt must be one string (lists of prompts and token ids are not supported)",
                Some("prompt"),
            ));
        }
    };
    // OpenAI's default for completions.
    let mut common = req.common;
    if common.max_tokens.is_none() && common.max_completion_tokens.is_none() {
        common.max_tokens = Some(16);
    }
    run(&app, Prompt::Text(prompt), common, Shape::Text).await
}

/// A message's text: a string, or a list of text parts.
fn content_text(content: &Value) -> Result<String, OpenAiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(
                |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => Err(OpenAiError::invalid(
                        "only text content parts are supported",
                        Some("messages"),
                    )),
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .map(|t| t.concat()),
        _ => Err(OpenAiError::invalid(
            "message content must be a string or a list of text parts",
            Some("messages"),
        )),
    }
}

fn stops(stop: Option<&Value>) -> Result<Vec<String>, OpenAiError> {
    let bad = || {
        OpenAiError::invalid(
            format!("stop must be a string or a list of at most {MAX_STOP} non-empty strings"),
            Some("stop"),
        )
    };
    let list = match stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    if list.len() > MAX_STOP || list.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(list)
}

fn sampling(c: &Common) -> Result<Sampling, OpenAiError> {
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(OpenAiError::invalid(
            format!("temperature {temperature} is out of range 0-2"),
            Some("temperature"),
        ));
    }
    if let Some(p) = c.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(OpenAiError::invalid(
            format!("top_p {p} is out of range (0, 1]"),
            Some("top_p"),
        ));
    }
    if c.top_k == Some(0) {
        return Err(OpenAiError::invalid(
            "top_k must be at least 1",
            Some("top_k"),
        ));
    }
    Ok(Sampling {
        temperature,
        top_k: c.top_k,
        top_p: c.top_p,
        seed: c.seed,
    })
}

async fn run(app: &App, prompt: Prompt, c: Common, shape: Shape) -> Result<Response, OpenAiError> {
    if c.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid(
            "n other than 1 is not supported",
            Some("n"),
        ));
    }
    let max_tokens = c.max_completion_tokens.or(c.max_tokens);
    if max_tokens == Some(0) {
        return Err(OpenAiError::invalid(
            "max_tokens must be at least 1",
            Some("max_tokens"),
        ));
    }
    let request = GenerateRequest {
        prompt_ids: None,
        prompt,
        max_tokens,
        sampling: sampling(&c)?,
        stop: stops(c.stop.as_ref())?,
    };
    let generators = generators(app)?;
    let name = generators.resolve(Some(&c.model))?;
    let generation = generators.generate(&name, request).await?;
    let id = format!(
        "{}-{}",
        match shape {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
        },
        random_id()
    );
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let reply = Reply {
        id,
        created,
        model: name,
        shape,
    };
    if c.stream {
        let usage = c.stream_options.is_some_and(|o| o.include_usage);
        return Ok(reply.stream(generation, usage));
    }
    reply.whole(generation).await
}

fn random_id() -> String {
    let mut bytes = [0u8; 12];
    // An id only has to be unique enough to tell responses apart in logs.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

fn finish_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Builds a response's JSON.
struct Reply {
    id: String,
    created: u64,
    model: String,
    shape: Shape,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.shape, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Text, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        })
    }

    fn usage(prompt: usize, completion: usize) -> Value {
        json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
    }

    async fn whole(&self, mut generation: Generation) -> Result<Response, OpenAiError> {
        let mut text = String::new();
        while let Some(event) = generation.events.recv().await {
            match event {
                Event::Delta(d) => text.push_str(&d),
                Event::Failed(e) => return Err(e.into()),
                Event::Done(done) => {
                    let reason = finish_name(done.finish_reason);
                    let choice = match self.shape {
                        Shape::Chat => json!({
                            "index": 0,
                            "message": { "role": "assistant", "content": text, "refusal": null },
                            "logprobs": null,
                            "finish_reason": reason,
                        }),
                        Shape::Text => json!({
                            "index": 0, "text": text, "logprobs": null, "finish_reason": reason,
                        }),
                    };
                    let mut body = self.envelope(false, json!([choice]));
                    body["usage"] = Self::usage(generation.prompt_tokens, done.completion_tokens);
                    return Ok(Json(body).into_response());
                }
            }
        }
        Err(OpenAiError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            message: "the generation ended without a result".into(),
            param: None,
            code: None,
        })
    }

    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        let choice = match self.shape {
            Shape::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            Shape::Text => json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish,
            }),
        };
        self.envelope(true, json!([choice]))
    }

    fn stream(self, generation: Generation, include_usage: bool) -> Response {
        let prompt_tokens = generation.prompt_tokens;
        let opening = matches!(self.shape, Shape::Chat).then(|| self.chunk(Some(""), true, None));
        let state = Streaming {
            reply: self,
            events: Some(generation.events),
            pending: opening.into_iter().collect(),
            include_usage,
            prompt_tokens,
        };
        let events = stream::unfold(state, |mut s| async move {
            loop {
                if let Some(next) = s.pending.pop_front() {
                    let data = match next {
                        Value::String(done) => done,
                        other => other.to_string(),
                    };
                    return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), s));
                }
                let events = s.events.as_mut()?;
                match events.recv().await {
                    Some(Event::Delta(d)) => {
                        let chunk = s.reply.chunk(Some(&d), false, None);
                        s.pending.push_back(chunk);
                    }
                    Some(Event::Done(done)) => {
                        s.events = None;
                        let last =
                            s.reply
                                .chunk(None, false, Some(finish_name(done.finish_reason)));
                        s.pending.push_back(last);
                        if s.include_usage {
                            let mut usage = s.reply.envelope(true, json!([]));
                            usage["usage"] = Reply::usage(s.prompt_tokens, done.completion_tokens);
                            s.pending.push_back(usage);
                        }
                        s.pending.push_back(Value::String("[DONE]".into()));
                    }
                    Some(Event::Failed(e)) => {
                        s.events = None;
                        s.pending.push_back(OpenAiError::from(e).body());
                    }
                    None => {
                        s.events = None;
                    }
                }
            }
        });
        Sse::new(events).into_response()
    }
}

/// A streamed response's progress.
struct Streaming {
    reply: Reply,
    events: Option<tokio::sync::mpsc::Receiver<Event>>,
    pending: std::collections::VecDeque<Value>,
    include_usage: bool,
    prompt_tokens: usize,
}
