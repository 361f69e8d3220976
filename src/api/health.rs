//! `/healthz`, `/readyz`, `/metrics` and `/api/v1/status`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::Caller;
use crate::daemon::App;
use crate::error::Problem;

/// Liveness: the process answers HTTP.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Readiness: 200 when every check passes, 503 with the failing checks otherwise.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let readiness = tokio::task::spawn_blocking(move || app.readiness()).await;
    match readiness {
        Ok(r) => {
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let reasons: Vec<String> = r
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            let body = json!({
                "status": if r.ready { "ready" } else { "not ready" },
                "reasons": reasons,
                "checks": r.checks,
            });
            (status, Json(body)).into_response()
        }
        Err(e) => Problem::internal(format!("readiness check failed: {e}")).into_response(),
    }
}

fn render_metrics(app: &App) -> Response {
    match app.metrics.render(&app.gpus.metrics_text()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => Problem::internal(format!("cannot render metrics: {e}")).into_response(),
    }
}

/// `/metrics` when `metrics.public = true`.
pub async fn metrics_public(State(app): State<Arc<App>>) -> Response {
    render_metrics(&app)
}

/// `/metrics` behind authentication (the default).
pub async fn metrics_private(State(app): State<Arc<App>>, _caller: Caller) -> Response {
    render_metrics(&app)
}

/// Daemon status for any signed-in user: version, uptime, readiness, TLS fingerprint.
pub async fn status(State(app): State<Arc<App>>, _caller: Caller) -> Response {
    let status_app = app.clone();
    let readiness = match tokio::task::spawn_blocking(move || status_app.readiness()).await {
        Ok(r) => r,
        Err(e) => return Problem::internal(format!("readiness check failed: {e}")).into_response(),
    };
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": app.uptime().as_secs(),
        "bind": app.config.server.bind,
        "tls": app.tls_fingerprint.as_ref().map(|f| json!({ "version": "TLS 1.3", "sha256_fingerprint": f })),
        "ready": readiness.ready,
        "checks": readiness.checks,
        "disk": crate::store::disk_space(&app.config.data_dir).ok(),
    }))
    .into_response()
}
