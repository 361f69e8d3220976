//! The web console's session: the refresh token lives in an HttpOnly, Secure, SameSite=Strict
//! cookie that page scripts cannot read, and the console keeps only the short-lived access
//! token in memory.
//!
//! Cross-site requests cannot use the cookie: SameSite=Strict keeps browsers from sending it
//! from another site, and refresh and sign-out also need the `X-Sparkbrain-Console` header,
//! which a cross-site page can only send after a CORS preflight the daemon never grants.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{ApiForm, context};
use crate::auth::{Principal, TokenPair};
use crate::daemon::App;
use crate::error::Problem;

/// The cookie that holds the refresh token.
const COOKIE: &str = "sparkbrain_session";
/// Where the browser sends it: the session routes only.
const COOKIE_PATH: &str = "/api/v1/auth/session";
/// The header that proves a request comes from the console's own scripts.
const CONSOLE_HEADER: &str = "x-sparkbrain-console";

/// A console sign-in, form-encoded as the sign-in form posts it.
#[derive(Deserialize)]
pub struct SignIn {
    username: String,
    password: String,
}

/// What the console gets back: the access token and who it belongs to.
#[derive(Serialize)]
struct Session {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: Principal,
}

/// `POST /api/v1/auth/session`: signs in and sets the session cookie.
pub async fn sign_in(
    State(app): State<Arc<App>>,
    parts: Parts,
    ApiForm(form): ApiForm<SignIn>,
) -> Result<Response, Problem> {
    let ctx = context(&parts);
    let pair = app.auth.login(&form.username, &form.password, &ctx).await?;
    session_response(&app, &parts, pair).await
}

/// `POST /api/v1/auth/session/refresh`: a new access token for the cookie's session, and a new
/// cookie (refresh tokens are single use).
pub async fn refresh(State(app): State<Arc<App>>, parts: Parts) -> Result<Response, Problem> {
    if !from_console(&parts.headers) {
        return Err(not_from_console());
    }
    let Some(token) = cookie(&parts.headers) else {
        return Err(Problem::unauthorized(
            Some("invalid_token"),
            "no console session: sign in",
        ));
    };
    let ctx = context(&parts);
    match app.auth.refresh(&token, &ctx).await {
        Ok(pair) => session_response(&app, &parts, pair).await,
        // A spent or expired cookie is useless: drop it with the refusal.
        Err(e) => Ok(with_cookie(
            Problem::from(e).into_response(),
            &clear_cookie(),
        )),
    }
}

/// `DELETE /api/v1/auth/session`: revokes the cookie's refresh token and clears the cookie.
pub async fn sign_out(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if !from_console(&headers) {
        return Err(not_from_console());
    }
    if let Some(token) = cookie(&headers) {
        app.auth.logout(&token).await?;
    }
    Ok(with_cookie(
        StatusCode::NO_CONTENT.into_response(),
        &clear_cookie(),
    ))
}

/// Whether a cookie-authenticated request comes from the console's own scripts.
fn from_console(headers: &HeaderMap) -> bool {
    headers.contains_key(CONSOLE_HEADER)
}

fn not_from_console() -> Problem {
    Problem::forbidden("console session requests need the header X-Sparkbrain-Console: 1")
}

/// The session body with its cookie; the user is read back through the new access token, so
/// the answer says exactly what the token grants.
async fn session_response(app: &App, parts: &Parts, pair: TokenPair) -> Result<Response, Problem> {
    let bearer = format!("Bearer {}", pair.access_token);
    let user = app
        .auth
        .authenticate(Some(&bearer), &context(parts))
        .await?;
    let max_age = app.config.auth.refresh_token_ttl_seconds;
    let cookie = format!(
        "{COOKIE}={}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict",
        pair.refresh_token
    );
    let body = Session {
        access_token: pair.access_token,
        token_type: pair.token_type,
        expires_in: pair.expires_in,
        user,
    };
    let response = ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response();
    Ok(with_cookie(response, &cookie))
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The session cookie's value, if the request carries it.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_an_empty_one_is_none() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; sparkbrain_session=abc.def; other=1"),
        );
        assert_eq!(cookie(&headers).as_deref(), Some("abc.def"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("sparkbrain_session=; x=y"),
        );
        assert_eq!(cookie(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("not_sparkbrain_session=zzz"),
        );
        assert_eq!(cookie(&headers), None);
    }
}
