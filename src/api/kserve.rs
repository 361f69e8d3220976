//! The KServe v2 / Triton HTTP protocol: server and model metadata, readiness, and the model
//! repository extension. Errors are `{"error": "…"}` as the protocol says.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::{ApiPath, Caller};
use crate::daemon::App;
use crate::error::Problem;
use crate::inference::model_config::ModelConfig;
use crate::inference::tensor::{NamedTensor, TensorData, from_protocol_name, protocol_name};
use crate::inference::{ModelManager, ServedModel, ServingError};

/// The `/v2` routes; inference requests may be up to `max_request_bytes`.
pub fn routes(max_request_bytes: usize) -> Router<Arc<App>> {
    let inference = Router::new()
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer))
        .layer(axum::extract::DefaultBodyLimit::max(max_request_bytes));
    Router::new()
        .merge(inference)
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(version_config),
        )
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(version_stats),
        )
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
}

/// A protocol error: a status and `{"error": message}`.
pub struct KsError {
    status: StatusCode,
    message: String,
}

impl KsError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        KsError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for KsError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ServingError> for KsError {
    fn from(e: ServingError) -> Self {
        let status = match e {
            ServingError::NotFound(_) => StatusCode::NOT_FOUND,
            ServingError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServingError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServingError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        KsError::new(status, e.to_string())
    }
}

/// A problem from the shared extractors, re-shaped as the protocol's error body (status and
/// headers such as `WWW-Authenticate` kept).
fn reshape(problem: Problem) -> Response {
    let detail = problem.detail.clone();
    let mut response = problem.into_response();
    let body = serde_json::to_vec(&json!({ "error": detail })).unwrap_or_default();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, body.into())
}

/// An authenticated caller whose rejection uses the protocol's error body.
pub struct KsCaller(pub Caller);

impl FromRequestParts<Arc<App>> for KsCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        Caller::from_request_parts(parts, app)
            .await
            .map(KsCaller)
            .map_err(reshape)
    }
}

/// Model and version from the path, with a precise error for a malformed version.
async fn model_path(parts: &mut Parts, app: &Arc<App>) -> Result<(String, Option<u64>), Response> {
    let ApiPath(params) = ApiPath::<Vec<(String, String)>>::from_request_parts(parts, app)
        .await
        .map_err(reshape)?;
    let mut model = String::new();
    let mut version = None;
    for (key, value) in params {
        match key.as_str() {
            "model" => model = value,
            _ => {
                let v = value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| {
                        KsError::new(
                            StatusCode::BAD_REQUEST,
                            format!("version {value:?} is not a positive integer"),
                        )
                        .into_response()
                    })?;
                version = Some(v);
            }
        }
    }
    Ok((model, version))
}

/// Model name and optional version from the path.
pub struct ModelRef {
    name: String,
    version: Option<u64>,
}

impl FromRequestParts<Arc<App>> for ModelRef {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let (name, version) = model_path(parts, app).await?;
        Ok(ModelRef { name, version })
    }
}

fn manager(app: &App) -> Result<Arc<ModelManager>, KsError> {
    app.models().ok_or_else(|| {
        KsError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model serving is not available: ONNX Runtime is not loaded (see /readyz)",
        )
    })
}

async fn server_metadata(_c: KsCaller) -> Json<Value> {
    Json(json!({
        "name": "sparkbrain",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository", "model_configuration", "statistics"],
    }))
}

/// Alive: public, like `/healthz`.
async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready (public, like `/readyz`): the daemon is ready and every loaded model version is ready.
async fn ready(State(app): State<Arc<App>>) -> StatusCode {
    let status_app = app.clone();
    let daemon_ready = tokio::task::spawn_blocking(move || status_app.readiness().ready)
        .await
        .unwrap_or(false);
    let models_ready = app.models().is_some_and(|m| {
        m.index(false)
            .is_ok_and(|rows| rows.iter().all(|r| r.state != Some("UNAVAILABLE")))
    });
    if daemon_ready && models_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn metadata(model: &ServedModel, versions: Vec<String>) -> Value {
    let batched = model.config.max_batch_size > 0;
    let tensors = |list: &[crate::inference::model_config::Tensor]| -> Vec<Value> {
        list.iter()
            .map(|t| {
                let mut shape = t.dims.clone();
                if batched {
                    shape.insert(0, -1);
                }
                json!({ "name": t.name, "datatype": protocol_name(t.data_type), "shape": shape })
            })
            .collect()
    };
    json!({
        "name": model.name,
        "versions": versions,
        "platform": if model.config.platform.is_empty() { "onnxruntime_onnx" } else { model.config.platform.as_str() },
        "inputs": tensors(&model.config.input),
        "outputs": tensors(&model.config.output),
    })
}

async fn model_metadata(
    State(app): State<Arc<App>>,
    _c: KsCaller,
    m: ModelRef,
) -> Result<Json<Value>, KsError> {
    let models = manager(&app)?;
    let model = models.get(&m.name, m.version)?;
    let versions = models
        .versions(&m.name)?
        .into_iter()
        .filter(|(_, ready)| *ready)
        .map(|(v, _)| v.to_string())
        .collect();
    Ok(Json(metadata(&model, versions)))
}

async fn version_metadata(
    State(app): State<Arc<App>>,
    _c: KsCaller,
    m: ModelRef,
) -> Result<Json<Value>, KsError> {
    let model = manager(&app)?.get(&m.name, m.version)?;
    Ok(Json(metadata(&model, vec![model.version.to_string()])))
}

async fn model_ready(
    State(app): State<Arc<App>>,
    _c: KsCaller,
    m: ModelRef,
) -> Result<StatusCode, KsError> {
    // Ready is 200; anything else is an error status, as Triton answers.
    manager(&app)?.get(&m.name, m.version)?;
    Ok(StatusCode::OK)
}

async fn version_ready(
    state: State<Arc<App>>,
    c: KsCaller,
    m: ModelRef,
) -> Result<StatusCode, KsError> {
    model_ready(state, c, m).await
}

/// Triton's statistics extension: every ready version of every served model.
async fn all_stats(State(app): State<Arc<App>>, _c: KsCaller) -> Result<Json<Value>, KsError> {
    let models = manager(&app)?;
    let mut stats = Vec::new();
    for name in models.served_names()? {
        stats.extend(version_stats_of(&models, &name, None)?);
    }
    Ok(Json(json!({ "model_stats": stats })))
}

/// Statistics of one model's ready versions, or of the version in the path.
async fn model_stats(
    State(app): State<Arc<App>>,
    _c: KsCaller,
    m: ModelRef,
) -> Result<Json<Value>, KsError> {
    let models = manager(&app)?;
    let stats = version_stats_of(&models, &m.name, m.version)?;
    Ok(Json(json!({ "model_stats": stats })))
}

async fn version_stats(
    state: State<Arc<App>>,
    c: KsCaller,
    m: ModelRef,
) -> Result<Json<Value>, KsError> {
    model_stats(state, c, m).await
}

fn version_stats_of(
    models: &ModelManager,
    name: &str,
    version: Option<u64>,
) -> Result<Vec<Value>, KsError> {
    let versions: Vec<u64> = match version {
        Some(v) => vec![v],
        None => models
            .versions(name)?
            .into_iter()
            .filter_map(|(v, ready)| ready.then_some(v))
            .collect(),
    };
    versions
        .into_iter()
        .map(|v| {
            let model = models.get(name, Some(v))?;
            Ok(model.stats().to_json(&model.name, model.version))
        })
        .collect()
}

async fn model_config(
    State(app): State<Arc<App>>,
    _c: KsCaller,
    m: ModelRef,
) -> Result<Response, KsError> {
    let model = manager(&app)?.get(&m.name, m.version)?;
    let mut config = serde_json::to_value(&model.config)
        .map_err(|e| KsError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Which execution provider actually serves this version (ONNX Runtime can fall back).
    config["execution_provider"] = json!(model.provider.ort_name());
    config["instance_count"] = json!(model.instance_count());
    Ok(Json(config).into_response())
}

async fn version_config(
    state: State<Arc<App>>,
    c: KsCaller,
    m: ModelRef,
) -> Result<Response, KsError> {
    model_config(state, c, m).await
}

fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, KsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        KsError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed request body: {e}"),
        )
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

async fn index(
    State(app): State<Arc<App>>,
    _c: KsCaller,
    body: Bytes,
) -> Result<Json<Value>, KsError> {
    let request: IndexRequest = json_body(&body)?;
    let models = manager(&app)?;
    let rows = tokio::task::spawn_blocking(move || models.index(request.ready))
        .await
        .map_err(|e| KsError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(json!(rows)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    #[serde(default)]
    parameters: LoadParameters,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LoadParameters {
    /// A replacement configuration in Triton's JSON form.
    config: Option<String>,
}

async fn load(
    State(app): State<Arc<App>>,
    KsCaller(c): KsCaller,
    m: ModelRef,
    body: Bytes,
) -> Result<StatusCode, Response> {
    app.auth
        .require_admin(&c.principal, "model.load", Some(&m.name), &c.ctx)
        .await
        .map_err(|e| reshape(e.into()))?;
    let request: LoadRequest = json_body(&body).map_err(IntoResponse::into_response)?;
    let config = match request.parameters.config {
        Some(text) => Some(ModelConfig::from_json(&text).map_err(|e| {
            KsError::new(StatusCode::BAD_REQUEST, format!("parameters.config: {e}")).into_response()
        })?),
        None => None,
    };
    change_repository(&app, &c, "model.load", &m.name, move |models, name| {
        models.load(name, config)
    })
    .await
}

/// Runs a repository change (already authorised) off the async runtime and audits it.
async fn change_repository(
    app: &Arc<App>,
    c: &Caller,
    action: &'static str,
    name: &str,
    change: impl FnOnce(&ModelManager, &str) -> Result<(), ServingError> + Send + 'static,
) -> Result<StatusCode, Response> {
    let models = manager(app).map_err(IntoResponse::into_response)?;
    let model = name.to_string();
    let result = tokio::task::spawn_blocking(move || change(&models, &model))
        .await
        .map_err(|e| {
            KsError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        })?;
    app.auth
        .record_admin_action(
            &c.principal,
            &c.ctx,
            action,
            name,
            result.clone().map_err(|e| e.to_string()),
        )
        .await;
    result.map_err(|e| KsError::from(e).into_response())?;
    Ok(StatusCode::OK)
}

async fn unload(
    State(app): State<Arc<App>>,
    KsCaller(c): KsCaller,
    m: ModelRef,
    body: Bytes,
) -> Result<StatusCode, Response> {
    app.auth
        .require_admin(&c.principal, "model.unload", Some(&m.name), &c.ctx)
        .await
        .map_err(|e| reshape(e.into()))?;
    let _: Value = json_body(&body).map_err(IntoResponse::into_response)?;
    change_repository(&app, &c, "model.unload", &m.name, |models, name| {
        models.unload(name)
    })
    .await
}

/// Header that gives the length of the JSON part of a binary-extension body.
const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

/// An inference answer, serialised as it is built (tensors are not turned into JSON values
/// first).
#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputJson<'a>>,
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

fn bad(message: impl Into<String>) -> KsError {
    KsError::new(StatusCode::BAD_REQUEST, message)
}

/// Splits a body into its JSON part and the binary tensor data after it.
fn split_body<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), KsError> {
    match headers.get(HEADER_LENGTH) {
        None => Ok((body, &[])),
        Some(value) => {
            let n: usize = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| bad("Inference-Header-Content-Length is not a number"))?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length is {n}, but the body has only {} bytes",
                    body.len()
                )));
            }
            Ok(body.split_at(n))
        }
    }
}

fn decode_inputs(request: &[InferInput], mut binary: &[u8]) -> Result<Vec<NamedTensor>, KsError> {
    let mut tensors = Vec::with_capacity(request.len());
    for input in request {
        let data_type = from_protocol_name(&input.datatype).ok_or_else(|| {
            bad(format!(
                "input {:?}: unknown datatype {:?}",
                input.name, input.datatype
            ))
        })?;
        if input.shape.iter().any(|d| *d < 0) {
            return Err(bad(format!(
                "input {:?}: shape {:?} has a negative dimension",
                input.name, input.shape
            )));
        }
        let data = match (input.parameters.get("binary_data_size"), &input.data) {
            (Some(size), None) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| bad(format!("input {:?}: binary_data_size is not a byte count", input.name)))?;
                if size > binary.len() {
                    return Err(bad(format!(
                        "input {:?}: binary_data_size is {size}, but only {} bytes of binary data remain",
                        input.name,
                        binary.len()
                    )));
                }
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                TensorData::from_le_bytes(data_type, bytes)
            }
            (None, Some(values)) => TensorData::from_json(data_type, values),
            (Some(_), Some(_)) => return Err(bad(format!("input {:?}: give data or binary_data_size, not both", input.name))),
            (None, None) => return Err(bad(format!("input {:?}: no data", input.name))),
        }
        .map_err(|e| bad(format!("input {:?}: {e}", input.name)))?;
        tensors.push(NamedTensor {
            name: input.name.clone(),
            shape: input.shape.clone(),
            data,
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    Ok(tensors)
}

async fn infer(
    State(app): State<Arc<App>>,
    _c: KsCaller,
    m: ModelRef,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, KsError> {
    let body = body.map_err(|e| {
        let message = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "the inference request is larger than serving.max_request_bytes allows".to_string()
        } else {
            e.body_text()
        };
        KsError::new(e.status(), message)
    })?;
    let (json_part, binary) = split_body(&headers, &body)?;
    let request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| bad(format!("malformed inference request: {e}")))?;
    let inputs = decode_inputs(&request.inputs, binary)?;
    let binary_default = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let wanted: Vec<(String, bool)> = request
        .outputs
        .iter()
        .map(|o| {
            let binary = o
                .parameters
                .get("binary_data")
                .and_then(Value::as_bool)
                .unwrap_or(binary_default);
            (o.name.clone(), binary)
        })
        .collect();
    // Triton's request parameter: the most microseconds to wait in the queue.
    let timeout = match request.parameters.get("timeout") {
        None => None,
        Some(v) => Some(Duration::from_micros(v.as_u64().ok_or_else(|| {
            bad(format!(
                "parameter \"timeout\" is {v}; expected a whole number of microseconds"
            ))
        })?)),
    };
    let model = manager(&app)?.get(&m.name, m.version)?;
    let names: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
    let outputs = model.infer(inputs, &names, timeout).await?;
    let mut binary_out = Vec::new();
    let outputs_json: Vec<OutputJson<'_>> = outputs
        .iter()
        .map(|t| {
            let as_binary = wanted
                .iter()
                .find(|(n, _)| *n == t.name)
                .map_or(binary_default, |(_, b)| *b);
            let mut out = OutputJson {
                name: &t.name,
                datatype: protocol_name(t.data.data_type()),
                shape: &t.shape,
                parameters: None,
                data: None,
            };
            if as_binary {
                let bytes = t.data.to_le_bytes();
                out.parameters = Some(json!({ "binary_data_size": bytes.len() }));
                binary_out.extend_from_slice(&bytes);
            } else {
                out.data = Some(&t.data);
            }
            out
        })
        .collect();
    let response = InferResponse {
        model_name: &model.name,
        model_version: model.version.to_string(),
        id: request.id,
        outputs: outputs_json,
    };
    let header = serde_json::to_vec(&response)
        .map_err(|e| KsError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if binary_out.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], header).into_response());
    }
    let header_len = header.len();
    let mut body = header;
    body.extend_from_slice(&binary_out);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                header_len.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}
