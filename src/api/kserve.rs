//! The KServe v2 / Triton HTTP protocol: server and model metadata, readiness, and the model
//! repository extension. Errors are `{"error": "…"}` as the protocol says.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiPath, Caller};
use crate::daemon::App;
use crate::error::Problem;
use crate::inference::model_config::{DataType, ModelConfig};
use crate::inference::{ModelManager, ServedModel, ServingError};

/// The `/v2` routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
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

/// The protocol's name of a tensor type.
pub fn datatype(t: DataType) -> &'static str {
    match t {
        DataType::Bool => "BOOL",
        DataType::Uint8 => "UINT8",
        DataType::Uint16 => "UINT16",
        DataType::Uint32 => "UINT32",
        DataType::Uint64 => "UINT64",
        DataType::Int8 => "INT8",
        DataType::Int16 => "INT16",
        DataType::Int32 => "INT32",
        DataType::Int64 => "INT64",
        DataType::Fp16 => "FP16",
        DataType::Fp32 => "FP32",
        DataType::Fp64 => "FP64",
        DataType::String => "BYTES",
        DataType::Bf16 => "BF16",
        DataType::Invalid => "INVALID",
    }
}

async fn server_metadata(_c: KsCaller) -> Json<Value> {
    Json(json!({
        "name": "sparkbrain",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository", "model_configuration"],
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
                json!({ "name": t.name, "datatype": datatype(t.data_type), "shape": shape })
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
    let models = manager(&app).map_err(IntoResponse::into_response)?;
    let name = m.name.clone();
    let result = tokio::task::spawn_blocking(move || models.load(&name, config))
        .await
        .map_err(|e| {
            KsError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        })?;
    app.auth
        .record_admin_action(
            &c.principal,
            &c.ctx,
            "model.load",
            &m.name,
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
    let models = manager(&app).map_err(IntoResponse::into_response)?;
    let name = m.name.clone();
    let result = tokio::task::spawn_blocking(move || models.unload(&name))
        .await
        .map_err(|e| {
            KsError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        })?;
    app.auth
        .record_admin_action(
            &c.principal,
            &c.ctx,
            "model.unload",
            &m.name,
            result.clone().map_err(|e| e.to_string()),
        )
        .await;
    result.map_err(|e| KsError::from(e).into_response())?;
    Ok(StatusCode::OK)
}
