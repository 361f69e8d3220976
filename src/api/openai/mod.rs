//! OpenAI-compatible endpoints: `GET /v1/models`, `POST /v1/embeddings`,
//! `POST /v1/chat/completions` and `POST /v1/completions`, with OpenAI's error shape, so the
//! official SDKs work against sparkbrain with an API key.

mod completions;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::Caller;
use crate::daemon::App;
use crate::error::Problem;
use crate::inference::ServingError;
use crate::inference::generate::GenerateError;

/// Most texts in one embeddings request (OpenAI's own limit).
const MAX_INPUTS: usize = 2048;

/// The `/v1` routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::complete))
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub struct OpenAiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) param: Option<&'static str>,
    pub(super) code: Option<&'static str>,
}

impl OpenAiError {
    /// The error body as one JSON value, for a stream that fails part-way.
    pub(super) fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": kind(self.status), "param": self.param, "code": self.code } })
    }
}

fn kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        StatusCode::NOT_FOUND => "invalid_request_error",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request_error",
    }
}

impl OpenAiError {
    pub(super) fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param,
            code: None,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<ServingError> for OpenAiError {
    fn from(e: ServingError) -> Self {
        let (status, code) = match e {
            ServingError::NotFound(_) => (StatusCode::NOT_FOUND, Some("model_not_found")),
            ServingError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            ServingError::Invalid(_) => (StatusCode::BAD_REQUEST, None),
            ServingError::Overloaded(_) => {
                (StatusCode::TOO_MANY_REQUESTS, Some("rate_limit_exceeded"))
            }
        };
        OpenAiError {
            status,
            message: e.to_string(),
            param: None,
            code,
        }
    }
}

impl From<GenerateError> for OpenAiError {
    fn from(e: GenerateError) -> Self {
        let (status, code) = match &e {
            GenerateError::NotFound(_) => (StatusCode::NOT_FOUND, Some("model_not_found")),
            GenerateError::ContextTooLong { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("context_length_exceeded"),
            ),
            GenerateError::Invalid(_) => (StatusCode::BAD_REQUEST, None),
            GenerateError::Overloaded(_) => {
                (StatusCode::TOO_MANY_REQUESTS, Some("rate_limit_exceeded"))
            }
            GenerateError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            GenerateError::Upstream(_) => (StatusCode::BAD_GATEWAY, Some("upstream_error")),
            GenerateError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, Some("upstream_timeout")),
            GenerateError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "generation failed");
        }
        OpenAiError {
            status,
            message: e.to_string(),
            param: None,
            code,
        }
    }
}

/// An authenticated caller whose rejection uses OpenAI's error shape.
pub struct OaCaller;

impl FromRequestParts<Arc<App>> for OaCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, app).await {
            Ok(_) => Ok(OaCaller),
            Err(problem) => Err(reshape(problem)),
        }
    }
}

fn reshape(problem: Problem) -> Response {
    let status = problem.status();
    let detail = problem.detail.clone();
    let mut response = problem.into_response();
    let code = (status == StatusCode::UNAUTHORIZED).then_some("invalid_api_key");
    let fresh = OpenAiError {
        status,
        message: detail,
        param: None,
        code,
    }
    .into_response();
    // Keep WWW-Authenticate and Retry-After from the problem.
    let headers = std::mem::take(response.headers_mut());
    let (mut parts, body) = fresh.into_parts();
    for (name, value) in headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    Response::from_parts(parts, body)
}

fn manager(app: &App) -> Result<Arc<crate::inference::ModelManager>, OpenAiError> {
    app.models().ok_or_else(|| OpenAiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "model serving is not available: ONNX Runtime is not loaded (see /readyz)".into(),
        param: None,
        code: None,
    })
}

async fn models(State(app): State<Arc<App>>, _c: OaCaller) -> Result<Json<Value>, OpenAiError> {
    let models = manager(&app)?;
    let mut names = models.served_names()?;
    if let Some(generators) = app.generators() {
        names.extend(generators.names());
    }
    let data: Vec<Value> = names
        .into_iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "sparkbrain" }))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Value,
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
}

fn texts(input: &Value) -> Result<Vec<String>, OpenAiError> {
    let bad = |m: &str| OpenAiError::invalid(m, Some("input"));
    let texts: Vec<String> = match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.is_empty() => return Err(bad("input must not be an empty list")),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Err(bad(
                    "token-id input is not supported; send the text as a string or a list of strings",
                )),
                _ => Err(bad("input must be a string or a list of strings")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("input must be a string or a list of strings")),
    };
    if texts.len() > MAX_INPUTS {
        return Err(bad(&format!(
            "input has {} texts; at most {MAX_INPUTS} per request",
            texts.len()
        )));
    }
    if texts.iter().any(|t| t.is_empty()) {
        return Err(bad("input texts must not be empty"));
    }
    Ok(texts)
}

/// Reads a JSON body; an oversized or malformed one is an error in OpenAI's shape.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, OpenAiError> {
    let body = body.map_err(|e| OpenAiError {
        status: e.status(),
        message: if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "the request is larger than server.max_body_bytes allows".into()
        } else {
            e.body_text()
        },
        param: None,
        code: None,
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::invalid(format!("malformed request body: {e}"), None))
}

async fn embeddings(
    State(app): State<Arc<App>>,
    _c: OaCaller,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<EmbeddingsJson>, OpenAiError> {
    let request: EmbeddingsRequest = parse_body(body)?;
    let texts = texts(&request.input)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(OpenAiError::invalid(
                format!("encoding_format {other:?} is not supported; use \"float\" or \"base64\""),
                Some("encoding_format"),
            ));
        }
    };
    let model = manager(&app)?.get(&request.model, None)?;
    // The vector size is the last dimension of the model's token-vector output.
    let dim = model
        .config
        .output
        .first()
        .and_then(|o| o.dims.last().copied())
        .unwrap_or(-1);
    if let Some(asked) = request.dimensions
        && i64::try_from(asked).ok() != Some(dim)
    {
        return Err(OpenAiError::invalid(
            format!(
                "dimensions {asked} is not supported: model {:?} returns {dim}-dimensional vectors",
                model.name
            ),
            Some("dimensions"),
        ));
    }
    let (vectors, tokens) = model.embed(&texts, None).await?;
    let data: Vec<EmbeddingJson> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingJson {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Float(v)
            },
        })
        .collect();
    Ok(Json(EmbeddingsJson {
        object: "list",
        data,
        model: model.name.clone(),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// `/v1/embeddings`' answer, serialised as it is built; floats keep their `f32` precision.
#[derive(Serialize)]
struct EmbeddingsJson {
    object: &'static str,
    data: Vec<EmbeddingJson>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingJson {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}
