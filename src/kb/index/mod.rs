//! The derived indexes of every collection, and the applier thread that keeps them in step
//! with the `index_changes` log in SQLite.
//!
//! Each index records the last change it holds (the vector file's name, the text index's
//! commit payload). At start, and whenever the log grows, the applier applies what follows;
//! so a lost, stale or unreadable index is rebuilt from the database, never trusted blindly.

mod exact;
mod text;
mod vector;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

pub use text::TextIndex;
pub use vector::{Calibration, VectorIndex, VectorSettings};

use super::chunk::indexed_text;
use super::{KbError, Language};
use crate::config::KbConfig;
use crate::store::{Store, now_ms};
use crate::telemetry::metrics::KbMetrics;
use vector::CALIBRATION_PROBES;

/// Changes applied per collection before the text index commits and others get a turn.
const BATCH: i64 = 4096;
/// How long the applier waits after a wake-up for more changes to arrive.
const GATHER: Duration = Duration::from_millis(100);

/// The indexes of one collection.
pub struct CollectionIndex {
    /// Vectors (usearch).
    pub vectors: VectorIndex,
    /// Full text (tantivy).
    pub text: TextIndex,
    text_applied: AtomicI64,
    vector_applied: AtomicI64,
    vector_saved: AtomicI64,
}

/// What `GET /api/v1/collections/{c}` shows of a collection's indexes.
#[derive(Debug, Clone, Serialize)]
pub struct IndexState {
    /// Vectors in the vector index.
    pub vectors: usize,
    /// Chunks in the text index.
    pub text_chunks: u64,
    /// Segments of the text index; merged down once the collection is quiet.
    pub text_segments: usize,
    /// Last change of the log both indexes hold.
    pub applied_change: i64,
    /// Last change the saved vector file holds.
    pub saved_change: i64,
    /// SIMD kernels used for vector distances.
    pub acceleration: String,
    /// Search candidate list size in use.
    pub expansion_search: usize,
    /// What the last recall calibration measured, if one ran.
    pub calibration: Option<Calibration>,
}

/// Every collection's indexes.
pub struct Indexes {
    root: PathBuf,
    config: KbConfig,
    open: RwLock<HashMap<i64, Arc<CollectionIndex>>>,
    /// Collections deleted, whose folders the applier removes.
    dropped: Mutex<Vec<i64>>,
    wake: (Mutex<bool>, Condvar),
    stop: AtomicBool,
    applier: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held by the applier for each round of work, and by a snapshot while it links files, so
    /// a snapshot sees every index between two rounds.
    round: Mutex<()>,
    /// Every change up to here is applied to every index: the log needs no scan below it.
    applied_upto: AtomicI64,
    metrics: KbMetrics,
    /// A recall calibration is running.
    calibrating: Arc<AtomicBool>,
}

/// Links every finished index file under `root` into the same place under `dest`, copying
/// where a link is not possible. Index files are never rewritten in place (tantivy and the
/// vector saves write new files and rename), so a link is a snapshot.
pub fn snapshot_files(root: &Path, dest: &Path) -> Result<(), KbError> {
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = match entry {
            Ok(e) => e,
            // A folder removed meanwhile (a collection deleted) is simply not in the snapshot.
            Err(e)
                if e.io_error()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => return Err(KbError::Internal(format!("cannot list the indexes: {e}"))),
        };
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let target = dest.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|e| KbError::io("cannot create a snapshot folder", &e))?;
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if !entry.file_type().is_file() || name.ends_with(".tmp") || name.ends_with(".lock") {
            continue;
        }
        if let Err(e) = std::fs::hard_link(entry.path(), &target) {
            match e.kind() {
                std::io::ErrorKind::NotFound => continue,
                _ => {
                    if let Err(e) = std::fs::copy(entry.path(), &target)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        return Err(KbError::io("cannot copy an index file", &e));
                    }
                }
            }
        }
    }
    Ok(())
}

/// One change of the log.
struct Change {
    seq: i64,
    document: i64,
    add: bool,
    chunk_ids: Vec<u64>,
}

impl Indexes {
    /// Opens every collection's indexes and replays the log into them; removes index folders
    /// of collections that no longer exist.
    pub fn open(
        root: &Path,
        config: &KbConfig,
        store: &Store,
        metrics: KbMetrics,
    ) -> Result<Indexes, KbError> {
        std::fs::create_dir_all(root)
            .map_err(|e| KbError::io("cannot create the index folder", &e))?;
        let indexes = Indexes {
            root: root.to_path_buf(),
            config: config.clone(),
            open: RwLock::new(HashMap::new()),
            dropped: Mutex::new(Vec::new()),
            wake: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
            applier: Mutex::new(None),
            round: Mutex::new(()),
            applied_upto: AtomicI64::new(0),
            metrics,
            calibrating: Arc::new(AtomicBool::new(false)),
        };
        let ids: Vec<i64> = store.with_conn(|conn| -> Result<Vec<i64>, KbError> {
            let mut stmt = conn.prepare("SELECT id FROM collections")?;
            Ok(stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })?;
        let known: HashSet<String> = ids.iter().map(i64::to_string).collect();
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                // A collection deleted while the daemon stopped before removing its folder.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        for id in ids {
            store.with_conn(|conn| indexes.ensure(conn, id).map(|_| ()))?;
        }
        let started = Instant::now();
        indexes.apply_all(store)?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "indexes replayed"
        );
        Ok(indexes)
    }

    /// A collection's indexes, if it has any yet.
    pub fn get(&self, collection: i64) -> Option<Arc<CollectionIndex>> {
        self.open.read().ok()?.get(&collection).cloned()
    }

    /// State of a collection's indexes.
    pub fn state(&self, collection: i64) -> Option<IndexState> {
        let index = self.get(collection)?;
        Some(IndexState {
            vectors: index.vectors.len(),
            text_chunks: index.text.len(),
            text_segments: index.text.segments(),
            applied_change: index
                .text_applied
                .load(Ordering::Acquire)
                .min(index.vector_applied.load(Ordering::Acquire)),
            saved_change: index.vector_saved.load(Ordering::Acquire),
            acceleration: index.vectors.acceleration(),
            expansion_search: index.vectors.expansion_search(),
            calibration: index.vectors.calibration(),
        })
    }

    /// Opens a collection's indexes if they are not open yet.
    fn ensure(&self, conn: &Connection, id: i64) -> Result<Arc<CollectionIndex>, KbError> {
        if let Some(index) = self.get(id) {
            return Ok(index);
        }
        let row: Option<(i64, String, i64)> = conn
            .query_row(
                "SELECT dimensions, language, log_compacted_upto FROM collections WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((dimensions, language, compacted)) = row else {
            return Err(KbError::NotFound(format!("collection {id} is gone")));
        };
        let dir = self.root.join(id.to_string());
        let settings = VectorSettings {
            dimensions: dimensions as usize,
            scalar: self.config.vector_scalar,
            connectivity: self.config.hnsw_connectivity,
            expansion_add: self.config.hnsw_expansion_add,
            expansion_search: self.config.hnsw_expansion_search,
            expansion_search_max: self.config.hnsw_expansion_search_max,
            recall_target: self.config.vector_recall_target,
        };
        let (vectors, vector_applied) =
            VectorIndex::open(&dir.join("vectors"), settings).map_err(KbError::Internal)?;
        let (text, text_applied) = TextIndex::open(
            &dir.join("text"),
            Language::parse(&language).unwrap_or(Language::None),
        )
        .map_err(KbError::Internal)?;
        let index = CollectionIndex {
            vectors,
            text,
            text_applied: AtomicI64::new(text_applied),
            vector_applied: AtomicI64::new(vector_applied),
            vector_saved: AtomicI64::new(vector_applied),
        };
        if text_applied < compacted || vector_applied < compacted {
            rebuild(conn, id, &index, compacted)?;
        }
        show_calibration(&self.metrics, id, &index);
        let index = Arc::new(index);
        let mut open = self
            .open
            .write()
            .map_err(|_| KbError::Internal("index map poisoned".into()))?;
        Ok(open.entry(id).or_insert(index).clone())
    }

    /// Asks the applier to look at the log now.
    pub fn wake(&self) {
        let (flag, cv) = &self.wake;
        if let Ok(mut f) = flag.lock() {
            *f = true;
            cv.notify_one();
        }
    }

    /// Forgets a deleted collection's indexes; the applier removes the folder.
    pub fn drop_collection(&self, id: i64) {
        if let Ok(mut open) = self.open.write() {
            open.remove(&id);
        }
        if let Ok(mut dropped) = self.dropped.lock() {
            dropped.push(id);
        }
        self.wake();
    }

    /// Starts the applier thread.
    pub fn start_applier(self: &Arc<Self>, store: Store, save_every_seconds: u64) {
        let me = self.clone();
        let every = Duration::from_secs(save_every_seconds);
        let handle = std::thread::Builder::new()
            .name("kb-index".into())
            .spawn(move || me.run(store, every));
        match handle {
            Ok(h) => {
                if let Ok(mut slot) = self.applier.lock() {
                    *slot = Some(h);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot start the index applier thread"),
        }
    }

    fn run(&self, store: Store, save_every: Duration) {
        let mut last_save = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            {
                let (flag, cv) = &self.wake;
                if let Ok(guard) = flag.lock() {
                    let (mut guard, _) = cv
                        .wait_timeout_while(guard, Duration::from_secs(1), |woken| !*woken)
                        .unwrap_or_else(|e| e.into_inner());
                    *guard = false;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // Let the documents finishing now join this round: one text-index commit for
            // many of them instead of one each.
            std::thread::sleep(GATHER);
            let _round = self.round.lock().unwrap_or_else(|e| e.into_inner());
            self.remove_dropped();
            if let Err(e) = self.apply_all(&store) {
                tracing::warn!(error = %e, "cannot apply index changes; retrying");
            }
            if last_save.elapsed() >= save_every {
                last_save = Instant::now();
                self.save_all(&store);
            }
            self.calibrate_one(&store);
            self.merge_one_quiet();
            if let Err(e) = store.with_conn(|conn| self.count_documents(conn)) {
                tracing::debug!(error = %e, "cannot count documents");
            }
        }
    }

    /// Starts measuring the recall of one collection's vector index that has changed enough
    /// since it was last measured, on a thread of its own: at a million vectors it took
    /// minutes of one core here, which the applier must not wait for. One runs at a time.
    fn calibrate_one(&self, store: &Store) {
        if self.calibrating.swap(true, Ordering::AcqRel) {
            return;
        }
        let due = self.open.read().ok().and_then(|m| {
            m.iter()
                .find(|(_, index)| index.vectors.calibration_due())
                .map(|(id, index)| (*id, index.clone()))
        });
        let Some((id, index)) = due else {
            self.calibrating.store(false, Ordering::Release);
            return;
        };
        let (store, metrics, flag) = (
            store.clone(),
            self.metrics.clone(),
            self.calibrating.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("kb-calibrate".into())
            .spawn(move || {
                let started = Instant::now();
                let outcome = calibrate_collection(store.path(), id, &index.vectors);
                match outcome {
                    Ok(c) => {
                        show_calibration(&metrics, id, &index);
                        tracing::info!(
                            collection = id,
                            vectors = c.vectors,
                            recall = c.recall,
                            expansion_search = c.expansion_search,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "vector recall calibrated"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(collection = id, error = %e, "cannot calibrate vector recall")
                    }
                }
                flag.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a recall calibration thread");
            self.calibrating.store(false, Ordering::Release);
        }
    }

    /// Every open collection's indexes.
    fn open_indexes(&self) -> Vec<(i64, Arc<CollectionIndex>)> {
        self.open
            .read()
            .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }

    /// Merges the text segments of one collection that has been quiet for
    /// `kb.text_merge_quiet_seconds`: an ingestion in progress keeps committing, and merging
    /// under it would soon be undone. It runs inside the applier's round, so a snapshot never
    /// links a merge half done; changes arriving meanwhile wait for it (seconds at a million
    /// chunks).
    fn merge_one_quiet(&self) {
        for (id, index) in self.open_indexes() {
            let started = Instant::now();
            let quiet = Duration::from_secs(self.config.text_merge_quiet_seconds);
            match index.text.merge_when_quiet(quiet) {
                Ok(0) => continue,
                Ok(merged) => tracing::info!(
                    collection = id,
                    merged,
                    segments = index.text.segments(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "text index segments merged"
                ),
                Err(e) => {
                    tracing::warn!(collection = id, error = %e, "cannot merge text index segments")
                }
            }
            return;
        }
    }

    fn remove_dropped(&self) {
        let ids: Vec<i64> = self
            .dropped
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        for id in ids {
            let label = id.to_string();
            let _ = self.metrics.vector_recall.remove_label_values(&[&label]);
            let _ = self.metrics.vector_expansion.remove_label_values(&[&label]);
            let dir = self.root.join(id.to_string());
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %dir.display(), error = %e, "cannot remove a deleted collection's indexes");
            }
        }
    }

    /// Saves the vector indexes, then links (or copies) every collection's index files into
    /// `dest`, between two rounds of the applier: each index there holds the changes up to the
    /// one it records, and the daemon replays the rest from the database when it opens them.
    pub fn snapshot(&self, store: &Store, dest: &Path) -> Result<(), KbError> {
        let _round = self.round.lock().unwrap_or_else(|e| e.into_inner());
        // Saved now, a restore has nothing to replay into the vectors.
        self.save_all(store);
        snapshot_files(&self.root, dest)
    }

    /// Stops the applier and saves every vector index.
    pub fn shutdown(&self, store: &Store) {
        self.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(handle) = self.applier.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
        self.save_all(store);
    }

    fn save_all(&self, store: &Store) {
        for (id, index) in self.open_indexes() {
            let applied = index.vector_applied.load(Ordering::Acquire);
            if applied > index.vector_saved.load(Ordering::Acquire) {
                match index.vectors.save(applied) {
                    Ok(()) => index.vector_saved.store(applied, Ordering::Release),
                    Err(e) => {
                        tracing::warn!(collection = id, error = %e, "cannot save the vector index")
                    }
                }
            }
            // Both indexes hold everything up to here durably: the log before it is spent.
            let spent = index
                .vector_saved
                .load(Ordering::Acquire)
                .min(index.text_applied.load(Ordering::Acquire));
            let _ = store.with_conn(|conn| -> Result<(), KbError> {
                let tx = conn.transaction()?;
                tx.execute(
                    "DELETE FROM index_changes WHERE collection_id = ?1 AND seq <= ?2",
                    params![id, spent],
                )?;
                tx.execute(
                    "UPDATE collections SET log_compacted_upto = MAX(log_compacted_upto, ?2)
                     WHERE id = ?1",
                    params![id, spent],
                )?;
                tx.commit()?;
                Ok(())
            });
        }
    }

    fn count_documents(&self, conn: &Connection) -> Result<(), KbError> {
        let mut stmt =
            conn.prepare_cached("SELECT status, COUNT(*) FROM documents GROUP BY status")?;
        let counts: HashMap<String, i64> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for status in ["queued", "extracting", "embedding", "indexed", "failed"] {
            self.metrics
                .documents
                .with_label_values(&[status])
                .set(counts.get(status).copied().unwrap_or(0));
        }
        Ok(())
    }

    /// Applies every pending change of every collection. The database is held only to read
    /// the changes and to mark documents indexed, never while the indexes work.
    fn apply_all(&self, store: &Store) -> Result<(), KbError> {
        let done = self.applied_upto.load(Ordering::Acquire);
        let newest: i64 = store.with_conn(|conn| -> Result<i64, KbError> {
            Ok(
                conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM index_changes", [], |r| {
                    r.get(0)
                })?,
            )
        })?;
        if newest <= done {
            return Ok(());
        }
        let pending: Vec<(i64, i64)> = store.with_conn(|conn| -> Result<_, KbError> {
            let mut stmt = conn.prepare_cached(
                "SELECT collection_id, MAX(seq) FROM index_changes WHERE seq > ?1
                 GROUP BY collection_id",
            )?;
            Ok(stmt
                .query_map([done], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })?;
        for (id, last) in pending {
            let index = match store.with_conn(|conn| self.ensure(conn, id)) {
                Ok(index) => index,
                Err(KbError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            loop {
                let from = index
                    .text_applied
                    .load(Ordering::Acquire)
                    .min(index.vector_applied.load(Ordering::Acquire));
                if from >= last {
                    break;
                }
                let batch = store.with_conn(|conn| load_batch(conn, id, from))?;
                let added = self.apply_batch(&index, batch)?;
                let marked = store.with_conn(|conn| mark_indexed(conn, &added))?;
                self.metrics.documents_indexed.inc_by(marked as u64);
            }
        }
        self.applied_upto.fetch_max(newest, Ordering::AcqRel);
        Ok(())
    }

    /// Applies loaded changes to the indexes and commits the text index; returns the
    /// documents added.
    fn apply_batch(
        &self,
        index: &CollectionIndex,
        batch: Vec<Loaded>,
    ) -> Result<Vec<i64>, KbError> {
        let Some(last) = batch.last().map(|l| l.change.seq) else {
            return Ok(Vec::new());
        };
        let text_from = index.text_applied.load(Ordering::Acquire);
        let vector_from = index.vector_applied.load(Ordering::Acquire);
        let mut added_docs = Vec::new();
        let mut chunks_added = 0u64;
        // Vector inserts are gathered so a large replay spreads them over threads; a removal
        // first flushes what was gathered, keeping the log's order.
        let mut pending: Vec<ChunkRow> = Vec::new();
        for Loaded { change, chunks } in batch {
            if change.add {
                if change.seq > text_from {
                    let texts: Vec<(u64, String)> =
                        chunks.iter().map(|c| (c.id, c.indexed.clone())).collect();
                    index
                        .text
                        .add(change.document as u64, &texts)
                        .map_err(KbError::Internal)?;
                }
                chunks_added += chunks.len() as u64;
                added_docs.push(change.document);
                if change.seq > vector_from {
                    pending.extend(chunks);
                }
            } else {
                if change.seq > text_from {
                    index
                        .text
                        .remove_document(change.document as u64)
                        .map_err(KbError::Internal)?;
                }
                if change.seq > vector_from {
                    add_vectors(index, &mut pending)?;
                    index
                        .vectors
                        .remove(&change.chunk_ids)
                        .map_err(KbError::Internal)?;
                }
            }
        }
        add_vectors(index, &mut pending)?;
        if last > text_from {
            index.text.commit(last).map_err(KbError::Internal)?;
            index.text_applied.store(last, Ordering::Release);
        }
        if last > vector_from {
            index.vector_applied.store(last, Ordering::Release);
        }
        self.metrics.chunks_indexed.inc_by(chunks_added);
        Ok(added_docs)
    }
}

/// A change with the chunks it adds.
struct Loaded {
    change: Change,
    chunks: Vec<ChunkRow>,
}

/// Reads up to [`BATCH`] changes of a collection after `from`, with the chunks they add.
fn load_batch(conn: &Connection, collection: i64, from: i64) -> Result<Vec<Loaded>, KbError> {
    let changes: Vec<Change> = {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, document_id, op, chunk_ids FROM index_changes
             WHERE collection_id = ?3 AND seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        stmt.query_map(params![from, BATCH, collection], |r| {
            let op: String = r.get(2)?;
            let packed: Option<Vec<u8>> = r.get(3)?;
            Ok(Change {
                seq: r.get(0)?,
                document: r.get(1)?,
                add: op == "add",
                chunk_ids: packed
                    .unwrap_or_default()
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    changes
        .into_iter()
        .map(|change| {
            let chunks = if change.add {
                chunk_rows(conn, change.document)?
            } else {
                Vec::new()
            };
            Ok(Loaded { change, chunks })
        })
        .collect()
}

/// Marks documents whose chunks are now searchable as indexed; returns how many changed.
fn mark_indexed(conn: &Connection, documents: &[i64]) -> Result<usize, KbError> {
    let now = now_ms();
    let mut marked = 0;
    let tx = conn.unchecked_transaction()?;
    {
        let mut mark = tx.prepare_cached(
            "UPDATE documents SET status = 'indexed', updated_at = ?2
             WHERE id = ?1 AND status = 'embedding'",
        )?;
        for doc in documents {
            marked += mark.execute(params![doc, now])?;
        }
    }
    tx.commit()?;
    Ok(marked)
}

/// Rebuilds the indexes of a collection that hold less than the log still has: from every
/// stored chunk. Changes after `compacted` are replayed afterwards; adding a chunk twice is
/// harmless to both indexes.
fn rebuild(
    conn: &Connection,
    collection: i64,
    index: &CollectionIndex,
    compacted: i64,
) -> Result<(), KbError> {
    let started = Instant::now();
    let text = index.text_applied.load(Ordering::Acquire) < compacted;
    let vectors = index.vector_applied.load(Ordering::Acquire) < compacted;
    tracing::warn!(
        collection,
        text,
        vectors,
        "an index is older than the change log; rebuilding it from the database"
    );
    if text {
        index.text.clear().map_err(KbError::Internal)?;
    }
    if vectors {
        index.vectors.clear().map_err(KbError::Internal)?;
    }
    let documents: Vec<i64> = {
        let mut stmt = conn.prepare(
            "SELECT id FROM documents WHERE collection_id = ?1 AND chunks > 0 ORDER BY id",
        )?;
        stmt.query_map([collection], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut count = 0usize;
    // Vectors are added a batch of documents at a time: a document often has one chunk, and
    // only a large add is spread over every core.
    let mut pending: Vec<ChunkRow> = Vec::new();
    for document in documents {
        let chunks = chunk_rows(conn, document)?;
        count += chunks.len();
        if text {
            let texts: Vec<(u64, String)> =
                chunks.iter().map(|c| (c.id, c.indexed.clone())).collect();
            index
                .text
                .add(document as u64, &texts)
                .map_err(KbError::Internal)?;
        }
        if vectors {
            pending.extend(chunks);
            if pending.len() >= BATCH as usize {
                add_vectors(index, &mut pending)?;
            }
        }
    }
    add_vectors(index, &mut pending)?;
    if text {
        index.text.commit(compacted).map_err(KbError::Internal)?;
        index.text_applied.store(compacted, Ordering::Release);
    }
    if vectors {
        index.vectors.save(compacted).map_err(KbError::Internal)?;
        index.vector_applied.store(compacted, Ordering::Release);
        index.vector_saved.store(compacted, Ordering::Release);
    }
    tracing::info!(
        collection,
        chunks = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index rebuilt"
    );
    Ok(())
}

/// Adds the gathered chunks' vectors in one call, so a large add is spread over threads, and
/// empties the list.
fn add_vectors(index: &CollectionIndex, pending: &mut Vec<ChunkRow>) -> Result<(), KbError> {
    if pending.is_empty() {
        return Ok(());
    }
    let items: Vec<(u64, &[f32])> = pending
        .iter()
        .map(|c| (c.id, c.vector.as_slice()))
        .collect();
    index.vectors.add(&items).map_err(KbError::Internal)?;
    pending.clear();
    Ok(())
}

/// A stored chunk as the indexes need it.
struct ChunkRow {
    id: u64,
    indexed: String,
    vector: Vec<f32>,
}

fn chunk_rows(conn: &Connection, document: i64) -> Result<Vec<ChunkRow>, KbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, text, heading, vector FROM chunks WHERE document_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([document], |r| {
            let text: String = r.get(1)?;
            let heading: Option<String> = r.get(2)?;
            let bytes: Vec<u8> = r.get(3)?;
            Ok(ChunkRow {
                id: r.get::<_, i64>(0)? as u64,
                indexed: indexed_text(&text, heading.as_deref()),
                vector: decode_vector(&bytes),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Measures one collection's vector recall and keeps the search list it needs. It reads the
/// stored vectors on a connection of its own: the pass over every chunk takes seconds at a
/// million, and the connection everyone shares must not wait for it.
fn calibrate_collection(
    db: &Path,
    collection: i64,
    vectors: &VectorIndex,
) -> Result<Calibration, KbError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let Some((low, high)) = chunk_id_span(&conn, collection)? else {
        return Err(KbError::Internal(
            "too few vectors to measure recall: the collection has no chunks".into(),
        ));
    };
    let pairs = probe_vectors(&conn, collection, (low, high), 2 * CALIBRATION_PROBES)?;
    let mut stmt = conn.prepare(&format!("{IN_CHUNK_ORDER} AND ch.id BETWEEN ?2 AND ?3"))?;
    let rows = stmt.query_map(params![collection, low, high], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let all = rows.map(|row| {
        row.map(|(id, bytes)| (id as u64, decode_vector(&bytes)))
            .map_err(|e| format!("cannot read the stored vectors: {e}"))
    });
    vectors.calibrate(&pairs, all).map_err(KbError::Internal)
}

/// A collection's chunks walked in chunk id order: CROSS JOIN keeps `chunks` the outer loop.
/// Joined the other way, SQLite visits every document of the collection (and sorts, for an
/// order): seconds per query once a collection holds a million documents.
const IN_CHUNK_ORDER: &str = "SELECT ch.id, ch.vector FROM chunks ch
     CROSS JOIN documents d ON d.id = ch.document_id WHERE d.collection_id = ?1";

/// The lowest and highest chunk id of a collection, if it has chunks.
fn chunk_id_span(conn: &Connection, collection: i64) -> Result<Option<(i64, i64)>, KbError> {
    let end = |order: &str| {
        conn.query_row(
            &format!("{IN_CHUNK_ORDER} ORDER BY ch.id {order} LIMIT 1"),
            [collection],
            |r| r.get::<_, i64>(0),
        )
        .optional()
    };
    Ok(end("ASC")?.zip(end("DESC")?))
}

/// Up to `count` stored chunk vectors of a collection, spread evenly over its chunk ids
/// `span` (so old and new documents both count): calibration probes between them.
fn probe_vectors(
    conn: &Connection,
    collection: i64,
    (low, high): (i64, i64),
    count: usize,
) -> Result<Vec<Vec<f32>>, KbError> {
    let mut stmt = conn.prepare(&format!(
        "{IN_CHUNK_ORDER} AND ch.id >= ?2 ORDER BY ch.id LIMIT 1"
    ))?;
    let step = ((high - low) / count.max(1) as i64).max(1);
    let mut probes = Vec::with_capacity(count);
    let mut from = low;
    while probes.len() < count && from <= high {
        let row: Option<(i64, Vec<u8>)> = stmt
            .query_row(params![collection, from], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((id, bytes)) = row else {
            break;
        };
        probes.push(decode_vector(&bytes));
        from = (id + 1).max(low + step * probes.len() as i64);
    }
    Ok(probes)
}

/// A stored vector: little-endian f32s.
fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Puts a collection's vector search settings into `/metrics`.
fn show_calibration(metrics: &KbMetrics, id: i64, index: &CollectionIndex) {
    let label = id.to_string();
    metrics
        .vector_expansion
        .with_label_values(&[&label])
        .set(index.vectors.expansion_search() as i64);
    if let Some(c) = index.vectors.calibration() {
        metrics
            .vector_recall
            .with_label_values(&[&label])
            .set(c.recall);
    }
}

#[cfg(test)]
mod tests {
    use super::vector::tests::random_vectors;
    use super::*;
    use crate::config::VectorScalar;

    #[test]
    fn calibration_reads_the_collections_vectors_while_the_shared_connection_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let base = random_vectors(1500, 11);
        let mut keys = Vec::new();
        store
            .with_conn(|c| {
                let tx = c.transaction()?;
                tx.execute_batch(
                    "INSERT INTO users VALUES (1, 'owner', 'x', 'admin', 0, 0, 0);
                     INSERT INTO collections (id, name, owner_id, embedding_model, dimensions,
                         language, created_at, updated_at)
                     VALUES (1, 'one', 1, 'm', 32, 'en', 0, 0), (2, 'two', 1, 'm', 32, 'en', 0, 0);
                     INSERT INTO documents (id, collection_id, filename, format, size, sha256,
                         status, created_at, updated_at)
                     VALUES (1, 1, 'a', 'text', 1, 'a', 'indexed', 0, 0),
                            (2, 2, 'b', 'text', 1, 'b', 'indexed', 0, 0);",
                )?;
                for (seq, v) in base.iter().enumerate() {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    tx.execute(
                        "INSERT INTO chunks (document_id, seq, text, char_start, char_end, vector)
                         VALUES (?1, ?2, 't', 0, 1, ?3)",
                        params![1 + (seq % 7 == 0) as i64, seq as i64, bytes],
                    )?;
                    keys.push(tx.last_insert_rowid() as u64);
                }
                Ok::<(), KbError>(tx.commit()?)
            })
            .unwrap();
        // Collection 1's chunks in its index; every 7th chunk belongs to collection 2.
        let vectors = VectorIndex::open(
            &dir.path().join("vectors"),
            VectorSettings {
                dimensions: 32,
                scalar: VectorScalar::F32,
                connectivity: 4,
                expansion_add: 16,
                expansion_search: 8,
                expansion_search_max: 1024,
                recall_target: 0.95,
            },
        )
        .unwrap()
        .0;
        let own: Vec<(u64, &[f32])> = keys
            .iter()
            .zip(&base)
            .enumerate()
            .filter(|(seq, _)| seq % 7 != 0)
            .map(|(_, (k, v))| (*k, v.as_slice()))
            .collect();
        vectors.add(&own).unwrap();

        // A writer holds the shared connection throughout: calibration does not wait for it.
        let c = store
            .with_conn(|conn| {
                conn.execute_batch("BEGIN IMMEDIATE; UPDATE documents SET chunks = 1;")?;
                let c = calibrate_collection(store.path(), 1, &vectors);
                conn.execute_batch("COMMIT")?;
                Ok::<_, KbError>(c)
            })
            .unwrap()
            .unwrap();
        assert_eq!(c.vectors, own.len());
        assert_eq!((c.probes, c.queries), (CALIBRATION_PROBES, 0), "{c:?}");
        assert!(c.recall >= 0.95, "{c:?}");
        assert!(c.expansion_search > 8, "{c:?}");

        // A collection without chunks has nothing to measure.
        let empty = calibrate_collection(store.path(), 3, &vectors).unwrap_err();
        assert!(empty.to_string().contains("too few"), "{empty}");
    }
}
