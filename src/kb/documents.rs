//! Documents: streamed upload into the blob store, status, original content, deletion.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::access::{Access, access_of};
use super::collections::resolve_for;
use super::extract::{self, Format};
use super::{KbError, KnowledgeBase};
use crate::auth::Principal;
use crate::store::{BlobId, Store, format_ms, now_ms};

/// Bytes of a file's start looked at to decide its format.
const SNIFF_BYTES: usize = 8 * 1024;

/// One file arriving from a client.
pub struct Upload<S> {
    /// The client's file name (only the last path component is kept).
    pub filename: Option<String>,
    /// The content type the client declared (a hint, never trusted).
    pub content_type: Option<String>,
    /// The bytes, as they arrive.
    pub body: S,
}

/// What an upload produced.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    /// The document (the one already there, for a duplicate).
    #[serde(flatten)]
    pub document: DocumentInfo,
    /// The same content was already in the collection; nothing was added.
    pub duplicate: bool,
}

/// A document as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentInfo {
    /// Numeric id.
    pub id: i64,
    /// Its collection's name.
    pub collection: String,
    /// File name given at upload.
    pub filename: String,
    /// Title found in the document, if any.
    pub title: Option<String>,
    /// Detected format.
    pub format: String,
    /// Media type of the original file.
    pub media_type: String,
    /// Size of the original file in bytes.
    pub size: i64,
    /// SHA-256 of the original file.
    pub sha256: String,
    /// queued, extracting, embedding, indexed or failed.
    pub status: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DocumentError>,
    /// Pages (PDFs).
    pub pages: Option<i64>,
    /// Chunks stored.
    pub chunks: i64,
    /// Who uploaded it.
    pub uploaded_by: Option<String>,
    /// Upload time (RFC 3339).
    pub created_at: String,
    /// Last status change (RFC 3339).
    pub updated_at: String,
}

/// A failed document's reason.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentError {
    /// A stable code: encrypted, corrupt, truncated, too_large, timeout, encoding, no_text, …
    pub reason: String,
    /// What happened, for a person.
    pub message: String,
}

/// Query of `GET /api/v1/collections/{c}/documents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentQuery {
    /// Only documents in this status.
    pub status: Option<String>,
    /// Page size (1–1000, default 100).
    pub limit: Option<u32>,
    /// Documents with ids above this one (the previous page's `next_after`).
    pub after: Option<i64>,
}

/// A page of documents.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentList {
    /// The documents, by id.
    pub documents: Vec<DocumentInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

const SELECT_DOC: &str = "SELECT d.id, c.name, d.filename, d.title, d.format, d.size, d.sha256, \
     d.status, d.error_reason, d.error, d.pages, d.chunks, u.name, d.created_at, d.updated_at \
     FROM documents d JOIN collections c ON c.id = d.collection_id \
     LEFT JOIN users u ON u.id = d.uploaded_by";

fn read_doc(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentInfo> {
    let format: String = r.get(4)?;
    let reason: Option<String> = r.get(8)?;
    let message: Option<String> = r.get(9)?;
    Ok(DocumentInfo {
        id: r.get(0)?,
        collection: r.get(1)?,
        filename: r.get(2)?,
        title: r.get(3)?,
        media_type: Format::parse(&format)
            .map_or("application/octet-stream", Format::media_type)
            .to_string(),
        format,
        size: r.get(5)?,
        sha256: r.get(6)?,
        status: r.get(7)?,
        error: reason.map(|reason| DocumentError {
            reason,
            message: message.unwrap_or_default(),
        }),
        pages: r.get(10)?,
        chunks: r.get(11)?,
        uploaded_by: r.get(12)?,
        created_at: format_ms(r.get(13)?),
        updated_at: format_ms(r.get(14)?),
    })
}

fn document(conn: &Connection, id: i64) -> rusqlite::Result<Option<DocumentInfo>> {
    conn.query_row(&format!("{SELECT_DOC} WHERE d.id = ?1"), [id], read_doc)
        .optional()
}

/// Finds a document in a collection the caller may access at `needed`; 404 when the caller
/// may not read it, whether it exists or not.
fn resolve_doc(
    conn: &Connection,
    who: &Principal,
    id: i64,
    needed: Access,
) -> Result<(DocumentInfo, i64), KbError> {
    let not_found = || KbError::NotFound(format!("no document {id}"));
    let collection: i64 = conn
        .query_row(
            "SELECT collection_id FROM documents WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(not_found)?;
    let access = access_of(conn, who, collection)?.ok_or_else(not_found)?;
    let doc = document(conn, id)?.ok_or_else(not_found)?;
    if access < needed {
        return Err(KbError::Forbidden(format!(
            "you may read collection {:?} but not change its documents; ask its owner for write access",
            doc.collection
        )));
    }
    Ok((doc, collection))
}

/// The last component of a client's file name, without control characters, at most 255 bytes.
fn clean_filename(name: Option<&str>) -> String {
    let base = name
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>();
    let mut base = base.trim().to_string();
    while base.len() > 255 {
        base.pop();
    }
    if base.is_empty() {
        "unnamed".to_string()
    } else {
        base
    }
}

/// Puts documents an interrupted run was working on back in the queue. Documents whose
/// chunks are stored wait for the index applier instead.
pub(super) fn requeue_interrupted(store: &Store) -> Result<(), KbError> {
    store.with_conn(|conn| -> Result<(), KbError> {
        conn.execute(
            "UPDATE documents SET status = 'queued'
             WHERE status = 'extracting' OR (status = 'embedding' AND chunks = 0)",
            [],
        )?;
        Ok(())
    })
}

impl KnowledgeBase {
    /// Removes blobs no document references: left by an upload killed between storing its file
    /// and recording its row (never acknowledged), or by a delete killed before removing its
    /// file. Runs on its own thread after start, so a large store does not delay readiness;
    /// blobs written since `started` may belong to uploads in flight and are left alone, and
    /// each check and removal holds the blob guard, like deletes do.
    pub(super) fn sweep_orphan_blobs(&self, started: std::time::SystemTime) {
        for id in self.blobs.ids() {
            let _guard = self.blob_guard.blocking_lock();
            let fresh = std::fs::metadata(self.blobs.path_of(&id))
                .and_then(|m| m.modified())
                .map_or(true, |modified| modified >= started);
            if fresh {
                continue;
            }
            let sha = id.to_string();
            let referenced = self.store.with_conn(|conn| -> Result<bool, KbError> {
                Ok(conn
                    .query_row(
                        "SELECT 1 FROM documents WHERE sha256 = ?1 LIMIT 1",
                        [&sha],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some())
            });
            match referenced {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(blob = %id, "removing a blob no document references");
                    if let Err(e) = self.blobs.remove(&id) {
                        tracing::warn!(blob = %id, error = %e, "cannot remove an unreferenced blob");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sweep unreferenced blobs");
                    return;
                }
            }
        }
    }
}

impl KnowledgeBase {
    /// Stores an uploaded file and queues it. Answers once the file and its row are durable.
    pub async fn upload<S, E>(
        &self,
        who: &Principal,
        collection: &str,
        upload: Upload<S>,
    ) -> Result<Uploaded, KbError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (who2, name) = (who.clone(), collection.to_string());
        let collection_id = self
            .store
            .run(move |conn| resolve_for(conn, &who2, &name, Access::Write).map(|r| r.id))
            .await?;
        let limit = self.config.max_document_bytes;
        let too_large = || {
            KbError::TooLarge(format!(
                "the file is larger than the {limit}-byte limit (kb.max_document_bytes)"
            ))
        };
        let mut body = upload.body;
        let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
        let mut rest: Option<Bytes> = None;
        while head.len() < SNIFF_BYTES {
            match body.next().await {
                Some(piece) => {
                    let piece = piece.map_err(interrupted)?;
                    let room = SNIFF_BYTES - head.len();
                    if piece.len() > room {
                        head.extend_from_slice(&piece[..room]);
                        rest = Some(piece.slice(room..));
                        break;
                    }
                    head.extend_from_slice(&piece);
                }
                None => break,
            }
        }
        if head.is_empty() {
            return Err(KbError::Invalid(
                "the file is empty: there is nothing to index".into(),
            ));
        }
        let stored = async {
            let format = extract::sniff(
                &head,
                upload.filename.as_deref(),
                upload.content_type.as_deref(),
            )
            .map_err(|e| KbError::Unsupported(e.to_string()))?;
            let mut writer = self.blobs.writer()?;
            writer.write(&head)?;
            if let Some(piece) = rest {
                if writer.size() + piece.len() as u64 > limit {
                    return Err(too_large());
                }
                writer.write(&piece)?;
            }
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(interrupted)?;
                if writer.size() + piece.len() as u64 > limit {
                    return Err(too_large());
                }
                writer.write(&piece)?;
            }
            Ok((writer, format))
        }
        .await;
        let (writer, format) = match stored {
            Ok(done) => done,
            Err(e) => {
                // Read what the client still sends, so it gets this answer rather than a
                // reset connection (the route's body limit bounds how much that can be).
                while let Some(Ok(_)) = body.next().await {}
                return Err(e);
            }
        };
        let filename = clean_filename(upload.filename.as_deref());
        let user = who.user_id;
        // The file's syncs run outside the guard, so uploads do not queue behind each other's;
        // under it, a delete of the same content may have removed the file meanwhile.
        let (blob, size) = tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| KbError::Internal(e.to_string()))??;
        let _guard = self.blob_guard.lock().await;
        if !self.blobs.contains(&blob) {
            return Err(KbError::Unavailable(
                "the stored file of this content was removed at the same moment (a delete, or the start-up sweep of unreferenced files); upload it again".into(),
            ));
        }
        let sha = blob.to_string();
        let recorded =
            self.store
                .run(move |conn| -> Result<(i64, bool), KbError> {
                    let tx = conn.transaction()?;
                    let existing: Option<i64> = tx
                        .query_row(
                            "SELECT id FROM documents WHERE collection_id = ?1 AND sha256 = ?2",
                            params![collection_id, sha],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(id) = existing {
                        return Ok((id, true));
                    }
                    let now = now_ms();
                    tx.execute(
                    "INSERT INTO documents (collection_id, filename, format, size, sha256, status,
                         uploaded_by, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?7)",
                    params![collection_id, filename, format.as_str(), size as i64, sha, user, now],
                )?;
                    let id = tx.last_insert_rowid();
                    tx.commit()?;
                    Ok((id, false))
                })
                .await;
        let (id, duplicate) = match recorded {
            Ok(r) => r,
            Err(e) => {
                drop(_guard);
                self.remove_blobs(vec![blob.to_string()]).await;
                return Err(e);
            }
        };
        drop(_guard);
        if !duplicate {
            self.pipeline.wake();
        }
        let document = self
            .store
            .run(move |conn| -> Result<Option<DocumentInfo>, KbError> { Ok(document(conn, id)?) })
            .await?
            .ok_or_else(|| KbError::NotFound(format!("document {id} was deleted meanwhile")))?;
        Ok(Uploaded {
            document,
            duplicate,
        })
    }

    /// A document the caller may read.
    pub async fn get_document(&self, who: &Principal, id: i64) -> Result<DocumentInfo, KbError> {
        let who = who.clone();
        self.store
            .run(move |conn| resolve_doc(conn, &who, id, Access::Read).map(|(d, _)| d))
            .await
    }

    /// A document the caller may read, with its original file opened.
    pub async fn document_content(
        &self,
        who: &Principal,
        id: i64,
    ) -> Result<(DocumentInfo, tokio::fs::File), KbError> {
        let doc = self.get_document(who, id).await?;
        let blob: BlobId = doc
            .sha256
            .parse()
            .map_err(|e: String| KbError::Internal(e))?;
        let file = tokio::fs::File::open(self.blobs.path_of(&blob))
            .await
            .map_err(|e| {
                KbError::Internal(format!("the original of document {id} cannot be read: {e}"))
            })?;
        Ok((doc, file))
    }

    /// A page of a collection's documents.
    pub async fn list_documents(
        &self,
        who: &Principal,
        collection: &str,
        query: DocumentQuery,
    ) -> Result<DocumentList, KbError> {
        if let Some(s) = &query.status
            && !["queued", "extracting", "embedding", "indexed", "failed"].contains(&s.as_str())
        {
            return Err(KbError::Invalid(format!(
                "unknown status {s:?}: use queued, extracting, embedding, indexed or failed"
            )));
        }
        let limit = query.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(KbError::Invalid(format!(
                "limit {limit} is out of range 1-1000"
            )));
        }
        let (who, name) = (who.clone(), collection.to_string());
        self.store
            .run(move |conn| -> Result<DocumentList, KbError> {
                let row = resolve_for(conn, &who, &name, Access::Read)?;
                let mut stmt = conn.prepare_cached(&format!(
                    "{SELECT_DOC} WHERE d.collection_id = ?1 AND d.id > ?2
                     AND (?3 IS NULL OR d.status = ?3) ORDER BY d.id LIMIT ?4"
                ))?;
                let documents = stmt
                    .query_map(
                        params![row.id, query.after.unwrap_or(0), query.status, limit + 1],
                        read_doc,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut documents = documents;
                let next_after = if documents.len() > limit as usize {
                    documents.truncate(limit as usize);
                    documents.last().map(|d| d.id)
                } else {
                    None
                };
                Ok(DocumentList {
                    documents,
                    next_after,
                })
            })
            .await
    }

    /// Deletes a document, its chunks and index entries, and its blob when no other document
    /// holds the same content.
    pub async fn delete_document(&self, who: &Principal, id: i64) -> Result<DocumentInfo, KbError> {
        let who = who.clone();
        let _guard = self.blob_guard.lock().await;
        let (doc, orphan) = self
            .store
            .run(move |conn| -> Result<(DocumentInfo, bool), KbError> {
                let (doc, collection) = resolve_doc(conn, &who, id, Access::Write)?;
                let tx = conn.transaction()?;
                remove_document_rows(&tx, id, collection)?;
                let others: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM documents WHERE sha256 = ?1",
                    [&doc.sha256],
                    |r| r.get(0),
                )?;
                tx.commit()?;
                Ok((doc, others == 0))
            })
            .await?;
        if orphan {
            self.remove_blobs_locked(vec![doc.sha256.clone()]);
        }
        drop(_guard);
        self.indexes.wake();
        Ok(doc)
    }

    /// Removes blobs no document references any more (takes the blob guard).
    pub(super) async fn remove_blobs(&self, ids: Vec<String>) {
        let _guard = self.blob_guard.lock().await;
        let store = self.store.clone();
        let still = ids.clone();
        let referenced: Vec<String> = store
            .run(move |conn| -> Result<Vec<String>, KbError> {
                let mut out = Vec::new();
                for id in &still {
                    let n: i64 = conn.query_row(
                        "SELECT COUNT(*) FROM documents WHERE sha256 = ?1",
                        [id],
                        |r| r.get(0),
                    )?;
                    if n > 0 {
                        out.push(id.clone());
                    }
                }
                Ok(out)
            })
            .await
            .unwrap_or_else(|_| ids.clone());
        self.remove_blobs_locked(
            ids.into_iter()
                .filter(|i| !referenced.contains(i))
                .collect(),
        );
    }

    /// Removes blobs; the caller holds the blob guard and knows nothing references them.
    pub(super) fn remove_blobs_locked(&self, ids: Vec<String>) {
        for id in ids {
            match id.parse::<BlobId>() {
                Ok(blob) => {
                    if let Err(e) = self.blobs.remove(&blob) {
                        // The row is gone; the orphan costs only space and is logged.
                        tracing::warn!(blob = %id, error = %e, "cannot remove an unreferenced blob");
                    }
                }
                Err(e) => tracing::warn!(blob = %id, error = %e, "not a blob id"),
            }
        }
    }
}

/// Deletes a document's rows and logs the removal of its chunks for the indexes.
pub(super) fn remove_document_rows(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    collection: i64,
) -> Result<(), KbError> {
    let chunk_ids: Vec<i64> = {
        let mut stmt = tx.prepare_cached("SELECT id FROM chunks WHERE document_id = ?1")?;
        stmt.query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    if !chunk_ids.is_empty() {
        let packed: Vec<u8> = chunk_ids.iter().flat_map(|c| c.to_le_bytes()).collect();
        tx.execute(
            "INSERT INTO index_changes (collection_id, document_id, op, chunk_ids)
             VALUES (?1, ?2, 'remove', ?3)",
            params![collection, id, packed],
        )?;
    }
    tx.execute("DELETE FROM documents WHERE id = ?1", [id])?;
    Ok(())
}

fn interrupted(e: impl std::fmt::Display) -> KbError {
    KbError::Invalid(format!("the upload was interrupted: {e}"))
}
