//! Sign-in (`/auth/token`), refresh, sign-out and `whoami`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{ApiForm, ApiJson, Caller, context};
use crate::auth::TokenPair;
use crate::daemon::App;
use crate::error::Problem;

/// The OAuth2 token request (RFC 6749 §4.3 and §6), form-encoded.
#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

/// A refresh or sign-out request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

fn tokens_response(pair: TokenPair) -> Response {
    // Tokens must not be cached by any intermediary (RFC 6749 §5.1).
    ([(header::CACHE_CONTROL, "no-store")], Json(pair)).into_response()
}

/// `POST /api/v1/auth/token`: `grant_type=password` (default) or `grant_type=refresh_token`.
pub async fn token(
    State(app): State<Arc<App>>,
    parts: Parts,
    ApiForm(req): ApiForm<TokenRequest>,
) -> Result<Response, Problem> {
    let ctx = context(&parts);
    match req.grant_type.as_deref().unwrap_or("password") {
        "password" => {
            let (Some(username), Some(password)) = (req.username, req.password) else {
                return Err(Problem::bad_request(
                    "grant_type=password needs the fields username and password",
                ));
            };
            Ok(tokens_response(
                app.auth.login(&username, &password, &ctx).await?,
            ))
        }
        "refresh_token" => {
            let Some(token) = req.refresh_token else {
                return Err(Problem::bad_request(
                    "grant_type=refresh_token needs the field refresh_token",
                ));
            };
            Ok(tokens_response(app.auth.refresh(&token, &ctx).await?))
        }
        other => Err(Problem::bad_request(format!(
            "unsupported grant_type {other:?}: use password or refresh_token"
        ))),
    }
}

/// `POST /api/v1/auth/refresh` with `{"refresh_token": …}`.
pub async fn refresh(
    State(app): State<Arc<App>>,
    parts: Parts,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Response, Problem> {
    let ctx = context(&parts);
    Ok(tokens_response(
        app.auth.refresh(&req.refresh_token, &ctx).await?,
    ))
}

/// `POST /api/v1/auth/logout` with `{"refresh_token": …}`: revokes it. The refresh token is
/// the credential, so signing out works even after the access token has expired.
pub async fn logout(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Response, Problem> {
    app.auth.logout(&req.refresh_token).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/auth/me`: who the token or key belongs to.
pub async fn me(caller: Caller) -> Json<crate::auth::Principal> {
    Json(caller.principal)
}
