//! `/api/v1/keys`: API keys for programs, and `/api/v1/audit`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::auth::{ApiKey, AuditEntry, AuditQuery};
use crate::daemon::App;
use crate::error::Problem;

/// Body of `POST /api/v1/keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    /// Admins may create a key for another user.
    owner: Option<String>,
}

/// Query of `GET /api/v1/keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyListQuery {
    #[serde(default)]
    all: bool,
}

/// `GET /api/v1/keys`: the caller's keys; `?all=true` lists everyone's (admin).
pub async fn list(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> Result<Json<Vec<ApiKey>>, Problem> {
    Ok(Json(
        app.auth.list_api_keys(&c.principal, &c.ctx, q.all).await?,
    ))
}

/// `POST /api/v1/keys`: 201 with the key; the secret is in this answer only.
pub async fn create(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiJson(req): ApiJson<NewKey>,
) -> Result<Response, Problem> {
    let (key, secret) = app
        .auth
        .create_api_key(&c.principal, &c.ctx, &req.name, req.owner.as_deref())
        .await?;
    let body = json!({
        "key": secret,
        "id": key.id,
        "name": key.name,
        "owner": key.owner,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "note": "store this key now: it is not shown again",
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /api/v1/keys/{id}`: revokes it (owner or admin).
pub async fn revoke(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ApiKey>, Problem> {
    Ok(Json(
        app.auth.revoke_api_key(&c.principal, &c.ctx, id).await?,
    ))
}

/// Query of `GET /api/v1/audit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditListQuery {
    limit: Option<u32>,
    before_id: Option<i64>,
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
}

/// `GET /api/v1/audit` (admin): newest first, `limit` ≤ 1000 (default 100), paged by `before_id`.
pub async fn audit(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiQuery(q): ApiQuery<AuditListQuery>,
) -> Result<Json<Vec<AuditEntry>>, Problem> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(Problem::unprocessable(format!(
            "limit is {limit}; it must be between 1 and 1000"
        )));
    }
    if let Some(o) = &q.outcome
        && !matches!(o.as_str(), "allowed" | "denied" | "failed")
    {
        return Err(Problem::unprocessable(format!(
            "outcome {o:?} is not one of allowed, denied, failed"
        )));
    }
    let query = AuditQuery {
        before_id: q.before_id,
        actor: q.actor,
        action: q.action,
        outcome: q.outcome,
        limit,
    };
    Ok(Json(
        app.auth.list_audit(&c.principal, &c.ctx, query).await?,
    ))
}
