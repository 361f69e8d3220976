//! The HTTP face: routers, request ids, tracing, metrics, and problem+json errors. Handlers are
//! thin: parse, call one capability, map its error.

mod answers;
mod backups;
mod console;
mod console_session;
mod errors;
mod extract;
mod gpus;
mod health;
mod inference;
mod kb;
mod keys;
mod kserve;
mod openai;
mod session;
mod users;
mod volumes;

pub use volumes::{LockedState, locked_router};

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::daemon::App;
use crate::error::Problem;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The router of a daemon that listens but has not opened its store yet: 503 for everything,
/// with `Retry-After`.
pub fn starting_router() -> Router {
    Router::new().fallback(|| async {
        Problem::unavailable("the daemon is starting; retry in a moment").with_retry_after(1)
    })
}

/// Builds the whole router over the app.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/auth/token", post(session::token))
        .route("/auth/refresh", post(session::refresh))
        .route("/auth/logout", post(session::logout))
        .route("/auth/me", get(session::me))
        .route(
            "/auth/session",
            post(console_session::sign_in).delete(console_session::sign_out),
        )
        .route("/auth/session/refresh", post(console_session::refresh))
        .route("/status", get(health::status))
        .route("/gpus", get(gpus::list))
        .route("/gpus/{uuid}/history", get(gpus::history))
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{name}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route("/groups", get(users::list_groups).post(users::create_group))
        .route("/groups/{name}", delete(users::delete_group))
        .route(
            "/groups/{name}/members/{user}",
            put(users::add_member).delete(users::remove_member),
        )
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}", delete(keys::revoke))
        .route("/audit", get(keys::audit))
        .route("/backups", get(backups::status).post(backups::create))
        .route("/inference", post(inference::infer))
        .route("/collections", get(kb::list).post(kb::create))
        .route(
            "/collections/{name}",
            get(kb::get).patch(kb::update).delete(kb::delete),
        )
        .route(
            "/collections/{name}/documents",
            get(kb::documents)
                .post(kb::upload)
                .layer(DefaultBodyLimit::max(
                    // The document limit is checked while streaming, with a precise message; the
                    // multipart framing around it needs a little room.
                    usize::try_from(app.config.kb.max_document_bytes.saturating_add(1 << 20))
                        .unwrap_or(usize::MAX),
                )),
        )
        .route(
            "/documents/{id}",
            get(kb::document).delete(kb::delete_document),
        )
        .route("/documents/{id}/content", get(kb::content))
        .route("/search", post(kb::search))
        .route("/ask", post(answers::ask))
        .route("/generators", get(answers::list_generators))
        .route(
            "/chats",
            get(answers::list_chats).post(answers::create_chat),
        )
        .route(
            "/chats/{id}",
            get(answers::get_chat).delete(answers::delete_chat),
        );
    let api = api.merge(volumes::routes());
    let metrics = if app.config.metrics.public {
        get(health::metrics_public)
    } else {
        get(health::metrics_private)
    };
    let body_limit = usize::try_from(app.config.server.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", metrics)
        .nest("/api/v1", api)
        .merge(kserve::routes(
            usize::try_from(app.config.serving.max_request_bytes).unwrap_or(usize::MAX),
        ))
        .merge(openai::routes())
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
                })
                // A 5xx answer is counted in /metrics and its cause logged where it arises; one
                // ERROR line per answer would flood the journal when a model is unavailable
                // under load.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(app)
}

/// Counts and times every request under its route template (never the raw path, which would
/// let clients create unbounded label values).
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let in_flight = app.metrics.start();
    let response = next.run(req).await;
    in_flight.finish(&route, &method, response.status().as_u16());
    response
}

async fn not_found(req: Request) -> Problem {
    Problem::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}
