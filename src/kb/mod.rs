//! The knowledge base: collections of documents, the ingestion pipeline (extract → chunk →
//! embed → index), the derived vector and full-text indexes, and hybrid search.
//!
//! SQLite is the source of truth for everything here; the indexes under
//! `<data_dir>/kb/collections/<id>/` are derived and replayed from the `index_changes` log.

mod access;
pub mod answer;
mod chunk;
mod collections;
mod documents;
mod error;
pub mod extract;
mod index;
mod language;
mod pipeline;
mod search;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub use crate::telemetry::metrics::KbMetrics;
pub use access::Access;
pub use answer::{Answer, AnswerEvent, Answering, AskRequest, Citation};
pub use chunk::{Chunk, Chunker};
pub use collections::{
    Collection, CollectionCounts, CollectionPatch, Grant, GrantTarget, NewCollection,
};
pub use documents::{DocumentInfo, DocumentList, DocumentQuery, Upload, Uploaded};
pub use error::KbError;
pub use index::{IndexState, snapshot_files as snapshot_index_files};
pub use language::Language;
pub use search::{Filters, Hit, Mode, SearchRequest, SearchResults, Snippet};

use crate::config::{Config, KbConfig};
use crate::inference::ModelManager;
use crate::store::{BlobStore, Store};
use index::Indexes;
use pipeline::Pipeline;

/// Where the indexes live, relative to the data directory.
pub const INDEX_DIR: &str = "kb/collections";

/// The knowledge base capability. One per daemon.
pub struct KnowledgeBase {
    store: Store,
    blobs: BlobStore,
    config: KbConfig,
    /// The embedding model new collections get when they name none.
    default_model: String,
    /// Set once ONNX Runtime has loaded; without it documents wait in the queue and only
    /// full-text search works.
    models: OnceLock<Arc<ModelManager>>,
    indexes: Arc<Indexes>,
    pipeline: Pipeline,
    /// Serialises "is this blob still referenced → remove it" against "store this blob and
    /// reference it", so a delete never removes a blob an upload has just claimed.
    blob_guard: tokio::sync::Mutex<()>,
    /// The executable that runs extractions in a child process.
    extractor: PathBuf,
    metrics: KbMetrics,
}

impl KnowledgeBase {
    /// Opens the knowledge base: sweeps what an interrupted delete left, opens and replays the
    /// indexes, re-queues documents an interrupted run was processing, and starts the index
    /// applier. Blocking; call it off the async runtime. [`KnowledgeBase::start`] starts the
    /// ingestion workers once the models are there.
    pub fn open(
        config: &Config,
        store: Store,
        blobs: BlobStore,
        metrics: KbMetrics,
    ) -> Result<Arc<KnowledgeBase>, KbError> {
        let root = config.data_dir.join(INDEX_DIR);
        let extractor = std::env::current_exe().map_err(|e| {
            KbError::Internal(format!("cannot locate the sparkbrain executable: {e}"))
        })?;
        let started = std::time::SystemTime::now();
        let indexes = Arc::new(Indexes::open(&root, &config.kb, &store, metrics.clone())?);
        documents::requeue_interrupted(&store)?;
        let kb = Arc::new_cyclic(|weak| KnowledgeBase {
            pipeline: Pipeline::new(weak.clone(), config.kb.ingest_workers),
            store,
            blobs,
            config: config.kb.clone(),
            default_model: config.models.embedding_name.clone(),
            models: OnceLock::new(),
            indexes,
            blob_guard: tokio::sync::Mutex::new(()),
            extractor,
            metrics,
        });
        kb.indexes
            .start_applier(kb.store.clone(), config.kb.index_save_interval_seconds);
        let sweeper = kb.clone();
        std::thread::Builder::new()
            .name("kb-blob-sweep".into())
            .spawn(move || sweeper.sweep_orphan_blobs(started))
            .map_err(|e| KbError::Internal(format!("cannot start the blob sweep: {e}")))?;
        Ok(kb)
    }

    /// Starts ingestion with the serving runtime's models (none when ONNX Runtime failed to
    /// load: documents then wait in the queue).
    pub fn start(&self, models: Option<Arc<ModelManager>>, runtime: &tokio::runtime::Handle) {
        if let Some(models) = models {
            let _ = self.models.set(models);
            self.pipeline.start(runtime);
        }
    }

    /// Links the indexes' files as they stand between two index rounds into `dest`, for a
    /// backup. See [`snapshot_index_files`].
    pub fn snapshot_indexes(&self, dest: &std::path::Path) -> Result<(), KbError> {
        self.indexes.snapshot(dest)
    }

    /// Saves the indexes; called once at shutdown so the next start replays nothing.
    pub fn shutdown(&self) {
        self.pipeline.stop();
        self.indexes.shutdown(&self.store);
    }
}
