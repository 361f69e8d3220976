//! `/api/v1/collections`, `/api/v1/documents` and `/api/v1/search`: thin handlers over the
//! knowledge base.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::daemon::App;
use crate::error::Problem;
use crate::kb::{
    Collection, CollectionPatch, DocumentInfo, DocumentList, DocumentQuery, KbError, KnowledgeBase,
    NewCollection, SearchRequest, SearchResults, Upload,
};

/// The knowledge base, or why it is not available.
pub fn kb(app: &App) -> Result<Arc<KnowledgeBase>, KbError> {
    match app.kb.get() {
        Some(Ok(kb)) => Ok(kb.clone()),
        Some(Err(e)) => Err(KbError::Unavailable(format!(
            "the knowledge base is not available: {e}"
        ))),
        None => Err(KbError::Unavailable(
            "the knowledge base is opening its indexes; retry shortly".into(),
        )),
    }
}

/// `GET /api/v1/collections`: the collections the caller may read.
pub async fn list(
    State(app): State<Arc<App>>,
    c: Caller,
) -> Result<Json<Vec<Collection>>, Problem> {
    Ok(Json(kb(&app)?.list_collections(&c.principal).await?))
}

/// `POST /api/v1/collections`: 201 with the collection.
pub async fn create(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiJson(req): ApiJson<NewCollection>,
) -> Result<Response, Problem> {
    let name = req.name.clone();
    let result = kb(&app)?.create_collection(&c.principal, req).await;
    app.auth
        .record_admin_action(
            &c.principal,
            &c.ctx,
            "collection.create",
            &name,
            audit(&result),
        )
        .await;
    Ok((StatusCode::CREATED, Json(result?)).into_response())
}

/// `GET /api/v1/collections/{c}`.
pub async fn get(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Collection>, Problem> {
    Ok(Json(kb(&app)?.get_collection(&c.principal, &name).await?))
}

/// `PATCH /api/v1/collections/{c}`: rename, describe, share (owner or admin).
pub async fn update(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(patch): ApiJson<CollectionPatch>,
) -> Result<Json<Collection>, Problem> {
    let result = kb(&app)?
        .update_collection(&c.principal, &name, patch)
        .await;
    if !matches!(result, Err(KbError::NotFound(_))) {
        app.auth
            .record_admin_action(
                &c.principal,
                &c.ctx,
                "collection.update",
                &name,
                audit(&result),
            )
            .await;
    }
    Ok(Json(result?))
}

/// `DELETE /api/v1/collections/{c}`: 204 (owner or admin).
pub async fn delete(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let result = kb(&app)?.delete_collection(&c.principal, &name).await;
    if !matches!(result, Err(KbError::NotFound(_))) {
        app.auth
            .record_admin_action(
                &c.principal,
                &c.ctx,
                "collection.delete",
                &name,
                audit(&result),
            )
            .await;
    }
    result?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/collections/{c}/documents`.
pub async fn documents(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<DocumentQuery>,
) -> Result<Json<DocumentList>, Problem> {
    Ok(Json(
        kb(&app)?.list_documents(&c.principal, &name, query).await?,
    ))
}

/// `POST /api/v1/collections/{c}/documents` (multipart, one file in a part named `file`):
/// 202 with the queued document, or 200 with the existing one for content already there.
pub async fn upload(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(name): ApiPath<String>,
    mut multipart: Multipart,
) -> Result<Response, Problem> {
    let kb = kb(&app)?;
    loop {
        let field = multipart.next_field().await.map_err(multipart_problem)?;
        let Some(field) = field else {
            return Err(Problem::unprocessable(
                "the form has no part named \"file\": send the document as multipart/form-data with a part `file`",
            ));
        };
        if field.name() != Some("file") {
            continue;
        }
        let upload = Upload {
            filename: field.file_name().map(str::to_string),
            content_type: field.content_type().map(str::to_string),
            body: field.map_err(|e| e.body_text()),
        };
        let uploaded = kb.upload(&c.principal, &name, upload).await?;
        let status = if uploaded.duplicate {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let location = format!("/api/v1/documents/{}", uploaded.document.id);
        return Ok((status, [(header::LOCATION, location)], Json(uploaded)).into_response());
    }
}

fn multipart_problem(e: axum::extract::multipart::MultipartError) -> Problem {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            status,
            "payload-too-large",
            "the upload is larger than kb.max_document_bytes allows",
        )
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE || status == StatusCode::BAD_REQUEST {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!(
                "send the document as multipart/form-data with a part named \"file\": {}",
                e.body_text()
            ),
        )
    } else {
        Problem::new(status, "bad-request", e.body_text())
    }
}

/// `GET /api/v1/documents/{id}`.
pub async fn document(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<DocumentInfo>, Problem> {
    Ok(Json(kb(&app)?.get_document(&c.principal, id).await?))
}

/// `GET /api/v1/documents/{id}/content`: the original file.
pub async fn content(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, Problem> {
    let (doc, file) = kb(&app)?.document_content(&c.principal, id).await?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        doc.filename.replace(['"', '\\'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, doc.media_type.clone()),
            (header::CONTENT_LENGTH, doc.size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}

/// `DELETE /api/v1/documents/{id}`: 204.
pub async fn delete_document(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, Problem> {
    kb(&app)?.delete_document(&c.principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/search`.
pub async fn search(
    State(app): State<Arc<App>>,
    c: Caller,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<SearchResults>, Problem> {
    Ok(Json(kb(&app)?.search(&c.principal, req).await?))
}

fn audit<T>(result: &Result<T, KbError>) -> Result<(), String> {
    result.as_ref().map(|_| ()).map_err(ToString::to_string)
}
