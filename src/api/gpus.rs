//! `GET /api/v1/gpus` and `GET /api/v1/gpus/{uuid}/history`: the supervisor's view of the
//! GPUs and the host services, with the model instances each GPU runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::{ApiPath, ApiQuery, Caller};
use crate::daemon::App;
use crate::error::Problem;
use crate::gpu::history::Resolution;
use crate::inference::placement::Device;

/// `GET /api/v1/gpus`: NVML state, driver, each GPU with health, latest sample, XIDs and the
/// model instances placed on it, and the host services.
pub async fn list(State(app): State<Arc<App>>, _caller: Caller) -> Response {
    let overview = app.gpus.overview();
    let placements = app.models().map(|m| m.placements()).unwrap_or_default();
    let mut body = json!(overview);
    if let Some(gpus) = body.get_mut("gpus").and_then(|g| g.as_array_mut()) {
        for gpu in gpus {
            let Some(index) = gpu.get("index").and_then(serde_json::Value::as_u64) else {
                continue;
            };
            let instances: Vec<serde_json::Value> = placements
                .iter()
                .filter_map(|(model, version, devices)| {
                    let n = devices
                        .iter()
                        .filter(|d| matches!(d, Device::Gpu(i) if u64::from(*i) == index))
                        .count();
                    (n > 0).then(|| json!({ "model": model, "version": version, "instances": n }))
                })
                .collect();
            gpu["instances"] = json!(instances);
        }
    }
    let cpu_instances: Vec<serde_json::Value> = placements
        .iter()
        .filter_map(|(model, version, devices)| {
            let n = devices.iter().filter(|d| **d == Device::Cpu).count();
            (n > 0).then(|| json!({ "model": model, "version": version, "instances": n }))
        })
        .collect();
    body["cpu_instances"] = json!(cpu_instances);
    Json(body).into_response()
}

/// Query of the history route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// `samples` (every sample, the default) or `minutes` (one averaged point per minute).
    #[serde(default)]
    resolution: Option<String>,
    /// Only points of the last this many seconds (all kept points when absent).
    #[serde(default)]
    seconds: Option<u64>,
}

/// `GET /api/v1/gpus/{uuid}/history`.
pub async fn history(
    State(app): State<Arc<App>>,
    _caller: Caller,
    ApiPath(uuid): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Response {
    let resolution = match q.resolution.as_deref() {
        None | Some("samples") => Resolution::Samples,
        Some("minutes") => Resolution::Minutes,
        Some(other) => {
            return Problem::unprocessable(format!(
                "resolution {other:?} is not one of \"samples\" or \"minutes\""
            ))
            .into_response();
        }
    };
    let since_ms = match q.seconds {
        None => i64::MIN,
        Some(s) if s <= 86_400 * 30 => {
            crate::store::now_ms() - i64::try_from(s * 1000).unwrap_or(0)
        }
        Some(s) => {
            return Problem::unprocessable(format!(
                "seconds {s} is more than the 2592000 (30 days) the history can hold"
            ))
            .into_response();
        }
    };
    match app.gpus.history(&uuid, resolution, since_ms) {
        Some(points) => Json(json!({
            "uuid": uuid,
            "resolution": if resolution == Resolution::Samples { "samples" } else { "minutes" },
            "points": points,
        }))
        .into_response(),
        None => Problem::not_found(format!(
            "no GPU has UUID {uuid:?}; GET /api/v1/gpus lists them"
        ))
        .into_response(),
    }
}
