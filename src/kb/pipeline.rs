//! The ingestion pipeline: workers take queued documents from SQLite (the durable queue),
//! extract them in a bounded child process, chunk, embed through the serving runtime and
//! store the chunks; the index applier then makes them searchable.
//!
//! A worker extracts and chunks a document, hands its chunks to a task that embeds and stores
//! them, and takes the next document: so extraction overlaps embedding, and the chunks of many
//! short documents are in flight together for the embedding scheduler to batch. A bound on the
//! chunks in flight keeps memory in check when extraction outruns the model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use rusqlite::{OptionalExtension, params};
use tokio::sync::Semaphore;

use super::chunk::{Chunk, Chunker, Tokens};
use super::extract::{self, ExtractError, FailureReason, Format, Limits};
use super::{KbError, KnowledgeBase};
use crate::inference::{ServedModel, ServingError, TextTask};
use crate::store::{BlobId, now_ms};

/// Texts per embedding request: a full batch of the built-in model.
const EMBED_GROUP: usize = 32;
/// Embedding requests of one document in flight at once.
const EMBED_IN_FLIGHT: usize = 4;
/// Chunks handed to embedding and not yet stored, across documents: enough to keep several
/// full batches queued for the model.
const EMBED_BACKLOG: u32 = 512;
/// How long an idle worker waits before looking at the queue again.
const IDLE_POLL: Duration = Duration::from_millis(500);

impl Tokens for TextTask {
    fn spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        self.token_spans(text)
    }
}

/// The pipeline's workers.
pub struct Pipeline {
    kb: Weak<KnowledgeBase>,
    workers: usize,
    wake: Arc<tokio::sync::Notify>,
    stop: Arc<AtomicBool>,
    backlog: Arc<Semaphore>,
}

/// A document extracted and chunked, waiting for its embeddings.
struct Prepared {
    served: Arc<ServedModel>,
    title: Option<String>,
    pages: Option<u32>,
    chunks: Vec<Chunk>,
}

/// A document taken from the queue.
struct Job {
    id: i64,
    collection: i64,
    model: String,
    format: Format,
    blob: BlobId,
}

/// Why a document could not be processed now.
enum Outcome {
    /// It failed for good, with a reason code and a message.
    Failed(&'static str, String),
    /// Its embedding model is not available: it goes back to the queue.
    Later(String),
}

impl Pipeline {
    /// A pipeline of `workers` workers, not started.
    pub fn new(kb: Weak<KnowledgeBase>, workers: usize) -> Pipeline {
        Pipeline {
            kb,
            workers: workers.max(1),
            wake: Arc::new(tokio::sync::Notify::new()),
            stop: Arc::new(AtomicBool::new(false)),
            backlog: Arc::new(Semaphore::new(EMBED_BACKLOG as usize)),
        }
    }

    /// Starts the workers on the runtime.
    pub fn start(&self, runtime: &tokio::runtime::Handle) {
        for _ in 0..self.workers {
            let (kb, wake, stop, backlog) = (
                self.kb.clone(),
                self.wake.clone(),
                self.stop.clone(),
                self.backlog.clone(),
            );
            runtime.spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let Some(me) = kb.upgrade() else { break };
                    let worked = me.work_once(&backlog).await;
                    drop(me);
                    if !worked {
                        let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
                    }
                }
            });
        }
    }

    /// Tells idle workers a document was queued.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Stops taking new documents (a document in progress is re-queued at the next start).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }
}

async fn embed_group(
    served: Arc<ServedModel>,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, ServingError> {
    served.embed(&texts, None).await.map(|(v, _)| v)
}

fn failure(e: &ExtractError) -> (&'static str, String) {
    (e.reason.as_str(), e.message.clone())
}

impl KnowledgeBase {
    /// The served embedding model of that name.
    pub(super) fn embedding_model(&self, name: &str) -> Result<Arc<ServedModel>, KbError> {
        let models = self.models.get().ok_or_else(|| {
            KbError::Unavailable(
                "ONNX Runtime is not loaded, so no embedding model is served; see /readyz".into(),
            )
        })?;
        models.get(name, None).map_err(|e| match e {
            ServingError::NotFound(m) => KbError::Invalid(format!("no embedding model: {m}")),
            other => KbError::Unavailable(format!(
                "embedding model {name:?} is not available: {other}"
            )),
        })
    }

    /// Takes one document from the queue, extracts and chunks it, and hands it on to be
    /// embedded and stored; false when the queue was empty.
    async fn work_once(self: &Arc<Self>, backlog: &Arc<Semaphore>) -> bool {
        let job = match self.claim().await {
            Ok(Some(job)) => job,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ingestion queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return false;
            }
        };
        let prepared = match self.prepare(&job).await {
            Ok(prepared) => prepared,
            Err(outcome) => {
                self.settle(job.id, outcome).await;
                return true;
            }
        };
        let wanted = u32::try_from(prepared.chunks.len())
            .unwrap_or(EMBED_BACKLOG)
            .clamp(1, EMBED_BACKLOG);
        let Ok(permit) = backlog.clone().acquire_many_owned(wanted).await else {
            return true;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = me.embed_and_store(&job, prepared).await;
            drop(permit);
            if let Err(outcome) = outcome {
                me.settle(job.id, outcome).await;
            }
        });
        true
    }

    /// Records a document that could not be processed: failed for good, or back in the queue.
    async fn settle(&self, id: i64, outcome: Outcome) {
        match outcome {
            Outcome::Failed(reason, message) => {
                tracing::info!(document = id, reason, "document failed: {message}");
                self.metrics
                    .documents_failed
                    .with_label_values(&[reason])
                    .inc();
                let result = self
                    .store
                    .run(move |conn| -> Result<(), KbError> {
                        conn.execute(
                            "UPDATE documents SET status = 'failed', error_reason = ?2, error = ?3,
                                 updated_at = ?4 WHERE id = ?1",
                            params![id, reason, message, now_ms()],
                        )?;
                        Ok(())
                    })
                    .await;
                if let Err(e) = result {
                    tracing::warn!(document = id, error = %e, "cannot record a failed document");
                }
            }
            Outcome::Later(why) => {
                tracing::warn!(document = id, "document waits: {why}");
                let _ = self
                    .store
                    .run(move |conn| -> Result<(), KbError> {
                        conn.execute(
                            "UPDATE documents SET status = 'queued' WHERE id = ?1
                             AND status IN ('extracting', 'embedding')",
                            [id],
                        )?;
                        Ok(())
                    })
                    .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }

    /// Marks the oldest queued document as extracting and returns it.
    async fn claim(&self) -> Result<Option<Job>, KbError> {
        // Unsynced: a claim lost to a power cut leaves the document queued, which is where a
        // restart puts an interrupted one anyway.
        self.store
            .run_unsynced(|conn| -> Result<Option<Job>, KbError> {
                let row = conn
                    .query_row(
                        "UPDATE documents SET status = 'extracting', updated_at = ?1
                         WHERE id = (SELECT id FROM documents WHERE status = 'queued'
                                     ORDER BY id LIMIT 1)
                         RETURNING id, collection_id, format, sha256",
                        [now_ms()],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((id, collection, format, sha)) = row else {
                    return Ok(None);
                };
                let model: String = conn.query_row(
                    "SELECT embedding_model FROM collections WHERE id = ?1",
                    [collection],
                    |r| r.get(0),
                )?;
                Ok(Some(Job {
                    id,
                    collection,
                    model,
                    format: Format::parse(&format).ok_or_else(|| {
                        KbError::Internal(format!("document {id} has unknown format {format:?}"))
                    })?,
                    blob: sha.parse().map_err(KbError::Internal)?,
                }))
            })
            .await
    }

    /// Extracts and chunks a document and marks it as embedding.
    async fn prepare(&self, job: &Job) -> Result<Prepared, Outcome> {
        let later = |e: KbError| match e {
            KbError::Invalid(m) => Outcome::Failed("model_unavailable", m),
            other => Outcome::Later(other.to_string()),
        };
        let served = self.embedding_model(&job.model).map_err(later)?;

        let started = Instant::now();
        let (exe, path, format) = (
            self.extractor.clone(),
            self.blobs.path_of(&job.blob),
            job.format,
        );
        let limits = Limits {
            max_decompressed_bytes: self.config.max_decompressed_bytes,
            max_text_bytes: self.config.max_text_bytes,
            ..Limits::default()
        };
        let (timeout, memory) = (
            Duration::from_secs(self.config.extract_timeout_seconds),
            self.config.extract_memory_bytes,
        );
        let doc = tokio::task::spawn_blocking(move || {
            match format {
                // Text and Markdown parse in linear time within max_text_bytes and decompress
                // nothing: a child process would only add its start-up to every small
                // document. HTML goes to the child: html5ever slows down with the square of
                // a page's nesting depth, which only the child's time limit bounds.
                Format::Text | Format::Markdown => extract::extract(&path, format, &limits),
                _ => extract::sandbox::extract_isolated(
                    &exe, &path, format, &limits, timeout, memory,
                ),
            }
        })
        .await
        .map_err(|e| Outcome::Failed("internal", format!("the extraction worker failed: {e}")))?
        .map_err(|e| {
            let (reason, message) = failure(&e);
            Outcome::Failed(reason, message)
        })?;
        self.observe("extract", started);

        let started = Instant::now();
        let task_model = served.clone();
        let chunker = self.chunker(&served);
        let doc = Arc::new(doc);
        let chunks = {
            let doc = doc.clone();
            tokio::task::spawn_blocking(move || -> Result<Vec<Chunk>, String> {
                let task = task_model.text_task().map_err(|e| e.to_string())?;
                Ok(chunker.chunk(&doc, task))
            })
            .await
            .map_err(|e| Outcome::Failed("internal", format!("the chunking worker failed: {e}")))?
            .map_err(|m| Outcome::Failed("model_unavailable", m))?
        };
        if chunks.is_empty() {
            return Err(Outcome::Failed(
                FailureReason::NoText.as_str(),
                "no text was found in the document (a scanned PDF needs OCR, which sparkbrain does not do)".into(),
            ));
        }
        self.observe("chunk", started);

        let id = job.id;
        // Unsynced, like the claim: the stored chunks' commit that follows is flushed.
        let _ = self
            .store
            .run_unsynced(move |conn| -> Result<(), KbError> {
                conn.execute(
                    "UPDATE documents SET status = 'embedding', updated_at = ?2
                     WHERE id = ?1 AND status = 'extracting'",
                    params![id, now_ms()],
                )?;
                Ok(())
            })
            .await;
        Ok(Prepared {
            served,
            title: doc.title.clone(),
            pages: doc.pages,
            chunks,
        })
    }

    /// Embeds a prepared document's chunks and stores them with its index change.
    async fn embed_and_store(&self, job: &Job, prepared: Prepared) -> Result<(), Outcome> {
        let Prepared {
            served,
            title,
            pages,
            chunks,
        } = prepared;
        let id = job.id;
        let started = Instant::now();
        let texts: Vec<String> = chunks.iter().map(Chunk::indexed_text).collect();
        // Built up front: futures made inside the stream's closure borrow it, and the spawned
        // worker's future must not.
        let requests: Vec<_> = texts
            .chunks(EMBED_GROUP)
            .map(|group| embed_group(served.clone(), group.to_vec()))
            .collect();
        let vectors: Vec<Vec<Vec<f32>>> = stream::iter(requests)
            .buffered(EMBED_IN_FLIGHT)
            .try_collect()
            .await
            .map_err(|e| match e {
                ServingError::Invalid(m) => Outcome::Failed("embedding", m),
                other => Outcome::Later(other.to_string()),
            })?;
        let vectors: Vec<Vec<f32>> = vectors.into_iter().flatten().collect();
        if vectors.len() != chunks.len() {
            return Err(Outcome::Failed(
                "embedding",
                format!(
                    "the model returned {} vectors for {} chunks",
                    vectors.len(),
                    chunks.len()
                ),
            ));
        }
        self.observe("embed", started);

        let started = Instant::now();
        let collection = job.collection;
        let stored = self
            .store
            .run(move |conn| -> Result<bool, KbError> {
                let tx = conn.transaction()?;
                // Deleted (or re-queued by a restart) while this worker was busy: drop the work.
                let current: Option<String> = tx
                    .query_row("SELECT status FROM documents WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?;
                if current.as_deref() != Some("embedding") {
                    return Ok(false);
                }
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO chunks (document_id, seq, text, heading, page_start, page_end,
                             char_start, char_end, vector)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?;
                    for (seq, (chunk, vector)) in chunks.iter().zip(&vectors).enumerate() {
                        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                        insert.execute(params![
                            id,
                            seq as i64,
                            chunk.text,
                            chunk.heading,
                            chunk.page_start,
                            chunk.page_end,
                            chunk.chars.start as i64,
                            chunk.chars.end as i64,
                            bytes
                        ])?;
                    }
                }
                tx.execute(
                    "UPDATE documents SET chunks = ?2, title = ?3, pages = ?4, updated_at = ?5
                     WHERE id = ?1",
                    params![id, chunks.len() as i64, title, pages, now_ms()],
                )?;
                tx.execute(
                    "INSERT INTO index_changes (collection_id, document_id, op) VALUES (?1, ?2, 'add')",
                    params![collection, id],
                )?;
                tx.commit()?;
                Ok(true)
            })
            .await
            .map_err(|e| match e {
                KbError::NoSpace(m) => Outcome::Later(m),
                other => Outcome::Failed("internal", other.to_string()),
            })?;
        self.observe("store", started);
        if stored {
            self.indexes.wake();
        }
        Ok(())
    }

    fn chunker(&self, served: &ServedModel) -> Chunker {
        let budget = served.text_task().map_or(self.config.chunk_tokens, |t| {
            t.max_length().saturating_sub(t.special_tokens())
        });
        Chunker {
            max_tokens: self.config.chunk_tokens.min(budget).max(8),
            overlap_tokens: self.config.chunk_overlap_tokens,
        }
    }

    fn observe(&self, stage: &str, started: Instant) {
        self.metrics
            .stage_seconds
            .with_label_values(&[stage])
            .observe(started.elapsed().as_secs_f64());
    }
}
