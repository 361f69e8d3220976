//! Extractors: the authenticated caller, and JSON/form bodies whose errors are problems.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::auth::{Principal, RequestContext};
use crate::daemon::App;
use crate::error::Problem;

/// The request's context for the audit log: source address and route.
pub fn context(parts: &Parts) -> RequestContext {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or_else(|| parts.uri.path().to_string(), |m| m.as_str().to_string());
    RequestContext {
        source: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        route: format!("{} {route}", parts.method),
    }
}

/// An authenticated caller (JWT access token or API key) and the request context.
pub struct Caller {
    /// Who is calling.
    pub principal: Principal,
    /// Source and route, for the audit log.
    pub ctx: RequestContext,
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let ctx = context(parts);
        let header = match parts.headers.get(AUTHORIZATION) {
            Some(v) => Some(v.to_str().map_err(|_| {
                Problem::unauthorized(
                    Some("invalid_request"),
                    "the Authorization header is not valid text",
                )
            })?),
            None => None,
        };
        let principal = app.auth.authenticate(header, &ctx).await?;
        Ok(Caller { principal, ctx })
    }
}

/// A JSON body; malformed, mistyped, unlabelled or oversized bodies become precise problems.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::JsonDataError(e) => Problem::unprocessable(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(e.body_text()),
        other => body_problem(other.status(), other.body_text()),
    }
}

/// A form-encoded body (`application/x-www-form-urlencoded`), as OAuth2 clients send.
pub struct ApiForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiForm<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(ApiForm(v)),
            Err(FormRejection::InvalidFormContentType(_)) => Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body form-encoded with `Content-Type: application/x-www-form-urlencoded`",
            )),
            Err(FormRejection::FailedToDeserializeForm(e)) => {
                Err(Problem::unprocessable(e.body_text()))
            }
            Err(FormRejection::FailedToDeserializeFormBody(e)) => {
                Err(Problem::unprocessable(e.body_text()))
            }
            Err(other) => Err(body_problem(other.status(), other.body_text())),
        }
    }
}

fn body_problem(status: StatusCode, text: String) -> Problem {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            status,
            "payload-too-large",
            "the request body is larger than server.max_body_bytes allows",
        )
    } else {
        Problem::new(status, "bad-request", text)
    }
}

/// A query string; bad parameters become a 422 problem naming them.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| Problem::unprocessable(e.body_text()))
    }
}

/// Path parameters; a malformed one (e.g. a non-numeric id) becomes a 400 problem.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}
