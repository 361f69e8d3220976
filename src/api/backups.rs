//! Backups over HTTP (admin): take one now, and the state of backups for the console.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::extract::Caller;
use crate::backup::{BackupError, BackupStatus, CreateRequest};
use crate::daemon::App;
use crate::error::Problem;

/// `GET /api/v1/backups`: target, last success and failure, failures, the archives there.
pub async fn status(State(app): State<Arc<App>>, c: Caller) -> Result<Json<BackupStatus>, Problem> {
    app.auth
        .require_admin(&c.principal, "backup.list", None, &c.ctx)
        .await?;
    Ok(Json(app.backups.status().await))
}

/// `POST /api/v1/backups`: takes a backup now and answers 201 with the archive once it is
/// written. The body (optional JSON) may choose the target, encryption, models and indexes.
pub async fn create(
    State(app): State<Arc<App>>,
    c: Caller,
    body: Bytes,
) -> Result<Response, Problem> {
    app.auth
        .require_admin(&c.principal, "backup.create", None, &c.ctx)
        .await?;
    let request: CreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRequest::default()
    } else {
        let de = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Problem::bad_request(format!("the body is not valid JSON: {inner}"))
            } else {
                Problem::unprocessable(format!("field {path}: {inner}"))
            }
        })?
    };
    let kb = app.kb.get().and_then(|k| k.as_ref().ok()).cloned();
    let result = app.backups.create(kb, app.blobs.clone(), request).await;
    let target = match &result {
        Ok(created) => created.location.clone(),
        Err(_) => String::new(),
    };
    app.auth
        .record_admin_action(
            &c.principal,
            &c.ctx,
            "backup.create",
            &target,
            result.as_ref().map(|_| ()).map_err(ToString::to_string),
        )
        .await;
    let created = result.map_err(problem)?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

fn problem(e: BackupError) -> Problem {
    match e {
        BackupError::Busy(d) => Problem::conflict(d),
        BackupError::Refused(d) | BackupError::KeyNeeded(d) => Problem::unprocessable(d),
        BackupError::Target { .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "backup-target-failed",
            e.to_string(),
        ),
        e @ BackupError::Io { .. } if is_no_space(&e) => Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient-storage",
            e.to_string(),
        ),
        other => {
            tracing::error!(error = %other, "backup failed");
            Problem::internal(format!("the backup failed: {other}"))
        }
    }
}

fn is_no_space(e: &BackupError) -> bool {
    matches!(e, BackupError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC))
}
