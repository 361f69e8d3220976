//! `/api/v1/ask`, `/api/v1/chats` and `/api/v1/generators`: thin handlers over the knowledge
//! base's answers and the configured language models.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::json;

use super::extract::{ApiJson, ApiPath, Caller};
use super::kb::kb;
use crate::daemon::App;
use crate::error::Problem;
use crate::inference::generators::{GeneratorStatus, Generators};
use crate::kb::answer::chats::{Chat, ChatSummary, NewChat};
use crate::kb::{AnswerEvent, AskRequest, KbError};

/// The generators, once the runtime loader has run.
pub fn generators(app: &App) -> Result<Arc<Generators>, KbError> {
    app.generators().ok_or_else(|| {
        KbError::Unavailable("the language models are still loading; retry shortly".into())
    })
}

/// `POST /api/v1/ask`: an answer with citations, whole or streamed as server-sent events
/// (`citations` first, then `delta` events with text, then `done`, or `error`).
pub async fn ask(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiJson(req): ApiJson<AskRequest>,
) -> Result<Response, Problem> {
    let generators = generators(&app)?;
    let stream = req.stream;
    let answering = kb(&app)?
        .ask(&c.principal, req, &generators, &app.config.answers)
        .await?;
    if !stream {
        return Ok(Json(answering.collect().await?).into_response());
    }
    let head = Event::default()
        .event("citations")
        .json_data(&answering.head)
        .map_err(|e| Problem::internal(format!("cannot encode citations: {e}")))?;
    let events = stream::unfold(
        (Some(head), Some(answering.events)),
        |(head, events)| async move {
            if let Some(head) = head {
                return Some((Ok::<_, Infallible>(head), (None, events)));
            }
            let mut events = events?;
            let event = events.recv().await?;
            let (sse, more) = match event {
                AnswerEvent::Delta(text) => (
                    Event::default()
                        .event("delta")
                        .data(json!({ "text": text }).to_string()),
                    true,
                ),
                AnswerEvent::Done(tail) => (
                    Event::default()
                        .event("done")
                        .data(serde_json::to_string(&tail).unwrap_or_default()),
                    false,
                ),
                AnswerEvent::Failed(e) => {
                    let problem = Problem::from(KbError::from(e));
                    (
                        Event::default()
                            .event("error")
                            .data(json!({ "status": problem.status().as_u16(), "detail": problem.detail }).to_string()),
                        false,
                    )
                }
            };
            Some((Ok(sse), (None, more.then_some(events))))
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /api/v1/generators`: the configured language models and their state.
pub async fn list_generators(
    State(app): State<Arc<App>>,
    _c: Caller,
) -> Result<Json<Vec<GeneratorStatus>>, Problem> {
    Ok(Json(generators(&app)?.status()))
}

/// `POST /api/v1/chats`: 201 with a new chat of the caller's.
pub async fn create_chat(
    State(app): State<Arc<App>>,
    c: Caller,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    // The body is optional: a chat needs no title.
    let new: NewChat = if body.iter().all(u8::is_ascii_whitespace) {
        NewChat::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Problem::unprocessable(format!("the body is not a chat: {e}")))?
    };
    let chat = kb(&app)?.create_chat(&c.principal, new).await?;
    Ok((StatusCode::CREATED, Json(chat)).into_response())
}

/// `GET /api/v1/chats`: the caller's chats, most recent first.
pub async fn list_chats(
    State(app): State<Arc<App>>,
    c: Caller,
) -> Result<Json<Vec<ChatSummary>>, Problem> {
    Ok(Json(kb(&app)?.list_chats(&c.principal).await?))
}

/// `GET /api/v1/chats/{id}`: one of the caller's chats with its messages.
pub async fn get_chat(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Chat>, Problem> {
    Ok(Json(kb(&app)?.chat(&c.principal, id).await?))
}

/// `DELETE /api/v1/chats/{id}`: 204.
pub async fn delete_chat(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, Problem> {
    kb(&app)?.delete_chat(&c.principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
