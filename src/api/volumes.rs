//! Volumes over HTTP: list and unlock. While the data volume is locked the daemon serves the
//! small [`locked_router`] instead of the whole API: health, readiness, the volume routes, and
//! 503 `volume-locked` for everything else.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::extract::{ApiJson, Caller};
use crate::daemon::App;
use crate::error::Problem;
use crate::volume::{Secret, VolumeError, Volumes};

/// Failed unlock attempts (wrong admin password or passphrase) allowed per minute.
const UNLOCK_FAILURES_PER_MINUTE: usize = 5;

/// What the locked daemon knows.
pub struct LockedState {
    /// The volumes.
    pub volumes: Arc<Volumes>,
    /// Why the data cannot be opened, for every refused request.
    pub reason: Mutex<String>,
    /// Woken when an unlock over the API succeeded.
    pub unlocked: tokio::sync::Notify,
    failures: Mutex<VecDeque<Instant>>,
}

impl LockedState {
    /// The state of a daemon waiting for its data volume.
    pub fn new(volumes: Arc<Volumes>, reason: String) -> LockedState {
        LockedState {
            volumes,
            reason: Mutex::new(reason),
            unlocked: tokio::sync::Notify::new(),
            failures: Mutex::new(VecDeque::new()),
        }
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "the data volume is locked".into())
    }

    /// Seconds to wait when too many attempts failed in the last minute.
    fn throttled(&self) -> Option<u64> {
        let mut failures = self.failures.lock().ok()?;
        let now = Instant::now();
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            failures.pop_front();
        }
        (failures.len() >= UNLOCK_FAILURES_PER_MINUTE).then(|| {
            60 - failures
                .front()
                .map_or(0, |t| now.duration_since(*t).as_secs())
        })
    }

    fn failed(&self) {
        if let Ok(mut f) = self.failures.lock() {
            f.push_back(Instant::now());
        }
    }
}

/// The body of an unlock request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockRequest {
    /// The volume's passphrase; absent uses its key file or TPM2 key.
    #[serde(default)]
    passphrase: Option<String>,
}

/// The router a daemon serves while its data volume is locked.
pub fn locked_router(state: Arc<LockedState>) -> Router {
    Router::new()
        .route("/healthz", get(super::health::healthz))
        .route("/readyz", get(locked_readyz))
        .route("/metrics", get(locked_metrics))
        .route("/api/v1/volumes", get(locked_list))
        .route("/api/v1/volumes/{name}/unlock", post(locked_unlock))
        .merge(super::console::routes())
        .fallback(locked_refusal)
        .with_state(state)
}

fn volume_locked(reason: String) -> Response {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "volume-locked", reason)
        .with_retry_after(5)
        .into_response()
}

async fn locked_refusal(State(state): State<Arc<LockedState>>) -> Response {
    volume_locked(format!(
        "volume locked: {}; an admin unlocks it with POST /api/v1/volumes/{{name}}/unlock (HTTP Basic admin credentials, body {{\"passphrase\": …}}) or `sparkbrain volume unlock` on the box",
        state.reason()
    ))
}

async fn locked_readyz(State(state): State<Arc<LockedState>>) -> Response {
    let detail = format!("volume locked: {}", state.reason());
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({
            "status": "not ready",
            "reasons": [format!("volume: {detail}")],
            "checks": [{"name": "volume", "ok": false, "detail": detail}],
        })),
    )
        .into_response()
}

async fn locked_metrics(State(state): State<Arc<LockedState>>) -> Response {
    let name = state.volumes.data_volume().unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        format!(
            "# HELP sparkbrain_volume_locked Whether the data volume is locked (the daemon serves nothing else).\n# TYPE sparkbrain_volume_locked gauge\nsparkbrain_volume_locked{{volume=\"{name}\"}} 1\n"
        ),
    )
        .into_response()
}

/// Checks HTTP Basic credentials against the admins recorded for unlocking.
async fn locked_admin(state: &LockedState, headers: &HeaderMap) -> Result<String, Response> {
    if let Some(wait) = state.throttled() {
        return Err(Problem::too_many_requests(
            wait,
            "too many failed unlock attempts; wait a minute",
        )
        .into_response());
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((name, password)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return Err(basic_challenge(
            "the data volume is locked, so sign-in is off: send an admin's name and password as HTTP Basic credentials",
        ));
    };
    let (name, password) = (name.to_string(), password.to_string());
    let file = state.volumes.unlockers_file();
    let checked = name.clone();
    let ok = tokio::task::spawn_blocking(move || {
        crate::auth::unlockers::verify(&file, &checked, &password)
    })
    .await
    .unwrap_or(false);
    if ok {
        Ok(name)
    } else {
        state.failed();
        tracing::warn!(user = %name, "refused an unlock: not an admin's name and password");
        Err(basic_challenge("not an admin's name and password"))
    }
}

fn basic_challenge(detail: &str) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sparkbrain volume unlock\""),
    );
    response
}

async fn locked_list(State(state): State<Arc<LockedState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = locked_admin(&state, &headers).await {
        return denied;
    }
    list_volumes(state.volumes.clone()).await
}

async fn locked_unlock(
    State(state): State<Arc<LockedState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UnlockRequest>,
) -> Response {
    let admin = match locked_admin(&state, &headers).await {
        Ok(admin) => admin,
        Err(denied) => return denied,
    };
    let response = unlock(state.volumes.clone(), name.clone(), body).await;
    match response.status() {
        StatusCode::OK => {
            tracing::info!(volume = %name, user = %admin, "volume unlocked over the API");
            state.unlocked.notify_one();
        }
        StatusCode::FORBIDDEN => state.failed(),
        _ => {}
    }
    response
}

async fn list_volumes(volumes: Arc<Volumes>) -> Response {
    match tokio::task::spawn_blocking(move || volumes.status()).await {
        Ok(Ok(all)) => axum::Json(json!({ "volumes": all })).into_response(),
        Ok(Err(e)) => problem(e).into_response(),
        Err(e) => Problem::internal(format!("volume status failed: {e}")).into_response(),
    }
}

async fn unlock(volumes: Arc<Volumes>, name: String, body: UnlockRequest) -> Response {
    let key = body.passphrase.map(|p| Secret::new(p.into_bytes()));
    let result = tokio::task::spawn_blocking(move || volumes.unlock(&name, key.as_ref())).await;
    match result {
        Ok(Ok(status)) => axum::Json(json!({ "unlocked": true, "volume": status })).into_response(),
        Ok(Err(e)) => problem(e).into_response(),
        Err(e) => Problem::internal(format!("unlock failed: {e}")).into_response(),
    }
}

/// Routes of the unlocked daemon (admins only).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/{name}/unlock", post(unlock_unlocked))
}

async fn list(State(app): State<Arc<App>>, caller: Caller) -> Response {
    if let Err(e) = app
        .auth
        .require_admin(&caller.principal, "volume.list", None, &caller.ctx)
        .await
    {
        return Problem::from(e).into_response();
    }
    list_volumes(app.volumes.clone()).await
}

async fn unlock_unlocked(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UnlockRequest>,
) -> Response {
    if let Err(e) = app
        .auth
        .require_admin(&caller.principal, "volume.unlock", Some(&name), &caller.ctx)
        .await
    {
        return Problem::from(e).into_response();
    }
    unlock(app.volumes.clone(), name, body).await
}

/// The one mapping from volume errors to HTTP problems.
fn problem(e: VolumeError) -> Problem {
    match e {
        VolumeError::WrongPassphrase => {
            Problem::new(StatusCode::FORBIDDEN, "wrong-passphrase", e.to_string())
        }
        VolumeError::NotFound(_) => Problem::not_found(e.to_string()),
        VolumeError::Refused(_) | VolumeError::Busy(_) => Problem::conflict(e.to_string()),
        VolumeError::NotLuks(_) => Problem::unprocessable(e.to_string()),
        VolumeError::MissingTool { .. }
        | VolumeError::NoDeviceMapper(_)
        | VolumeError::Failed(_) => {
            tracing::error!(error = %e, "volume operation failed");
            Problem::internal(e.to_string())
        }
    }
}
