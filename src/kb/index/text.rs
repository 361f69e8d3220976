//! The full-text index of one collection: tantivy with BM25, keyed by chunk id.
//!
//! Each commit carries the last change of the `index_changes` log it holds as its payload, so
//! the index and the position it records are written atomically together.

use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tantivy::collector::TopDocs;
use tantivy::index::SegmentId;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Executor, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::kb::Language;

const ANALYZER: &str = "sparkbrain";
/// Memory the writer buffers before it writes a segment.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;
/// Segments beyond one per search thread are merged into those once they hold this share of
/// the smallest of them; below it they are merged with one another only, so a trickle of
/// uploads does not rewrite a large index each time.
const MERGE_INTO_LARGE: u64 = 8;

/// The threads every collection's searches share to search an index's segments side by side:
/// at 1M chunks that halves BM25's slowest queries (p99 29 -> 16 ms). One pool for all
/// collections, so their number does not multiply threads.
fn search_executor() -> Executor {
    static SHARED: OnceLock<Executor> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            Executor::multi_thread(search_threads(), "text-search-")
                .unwrap_or_else(|_| Executor::single_thread())
        })
        .clone()
}

fn search_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One collection's full-text index.
pub struct TextIndex {
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    chunk: Field,
    document: Field,
    text: Field,
    /// When the index last committed a change (or opened).
    last_commit: Mutex<Instant>,
}

/// A parsed full-text query.
pub struct TextQuery {
    terms: Vec<Term>,
}

fn analyzer(language: Language) -> TextAnalyzer {
    let base = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match language {
        Language::None => base.build(),
        Language::Stemmed(l) => match StopWordFilter::new(l) {
            Some(stop) => base.filter(stop).filter(Stemmer::new(l)).build(),
            None => base.filter(Stemmer::new(l)).build(),
        },
    }
}

fn schema() -> Schema {
    let mut builder = Schema::builder();
    builder.add_u64_field("chunk", INDEXED | FAST | STORED);
    builder.add_u64_field("document", INDEXED | FAST);
    builder.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        ),
    );
    builder.build()
}

/// How to merge segments (by position in `sizes`, their live chunks) so a search walks about
/// `parts` of even size, one per search thread: each group is merged into one segment. Empty
/// when the segments are best left as they are. Segments are never split, so one larger than
/// the rest stays on its own.
fn merge_plan(sizes: &[u64], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.max(1);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    if order.len() <= parts {
        return Vec::new();
    }
    let (large, small) = order.split_at(parts);
    let smallest_large = large.iter().map(|&i| sizes[i]).min().unwrap_or(0);
    let rest: u64 = small.iter().map(|&i| sizes[i]).sum();
    if rest * MERGE_INTO_LARGE < smallest_large {
        return if small.len() >= 2 {
            vec![small.to_vec()]
        } else {
            Vec::new()
        };
    }
    // Largest first, each to the lightest group: even within the largest segment's size.
    let mut groups: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); parts];
    for &i in &order {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(total, _)| *total) {
            lightest.0 += sizes[i];
            lightest.1.push(i);
        }
    }
    groups
        .into_iter()
        .map(|(_, members)| members)
        .filter(|members| members.len() >= 2)
        .collect()
}

impl TextIndex {
    /// Opens (or creates) the index in `dir` and returns it with the last change it holds. An
    /// index that cannot be opened is set aside and rebuilt from the database.
    pub fn open(dir: &Path, language: Language) -> Result<(TextIndex, i64), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut index = match Index::open_in_dir(dir) {
            Ok(index) => index,
            Err(tantivy::TantivyError::OpenDirectoryError(_))
            | Err(tantivy::TantivyError::OpenReadError(_))
                if !dir.join("meta.json").exists() =>
            {
                Index::create_in_dir(dir, schema()).map_err(|e| e.to_string())?
            }
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "text index unreadable; rebuilding it from the database");
                let aside = dir.with_extension("broken");
                let _ = std::fs::remove_dir_all(&aside);
                std::fs::rename(dir, &aside)
                    .map_err(|e| format!("cannot set aside {}: {e}", dir.display()))?;
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                Index::create_in_dir(dir, schema()).map_err(|e| e.to_string())?
            }
        };
        index.set_executor(search_executor());
        index.tokenizers().register(ANALYZER, analyzer(language));
        let applied = index
            .load_metas()
            .map_err(|e| e.to_string())?
            .payload
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let field = |name: &str| index.schema().get_field(name).map_err(|e| e.to_string());
        let (chunk, document, text) = (field("chunk")?, field("document")?, field("text")?);
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(|e| format!("cannot open the text index writer: {e}"))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e: tantivy::TantivyError| e.to_string())?;
        Ok((
            TextIndex {
                index,
                writer: Mutex::new(writer),
                reader,
                chunk,
                document,
                text,
                last_commit: Mutex::new(Instant::now()),
            },
            applied,
        ))
    }

    /// Chunks searchable now.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Adds chunks (visible after [`TextIndex::commit`]); a chunk already there is replaced,
    /// so replaying a change twice is harmless.
    pub fn add(&self, document: u64, chunks: &[(u64, String)]) -> Result<(), String> {
        let writer = self.writer.lock().map_err(|_| "text index lock poisoned")?;
        for (id, text) in chunks {
            writer.delete_term(Term::from_field_u64(self.chunk, *id));
            let mut doc = TantivyDocument::default();
            doc.add_u64(self.chunk, *id);
            doc.add_u64(self.document, document);
            doc.add_text(self.text, text);
            writer
                .add_document(doc)
                .map_err(|e| format!("cannot add chunk {id} to the text index: {e}"))?;
        }
        Ok(())
    }

    /// Removes everything (visible after [`TextIndex::commit`]).
    pub fn clear(&self) -> Result<(), String> {
        let writer = self.writer.lock().map_err(|_| "text index lock poisoned")?;
        writer
            .delete_all_documents()
            .map(|_| ())
            .map_err(|e| format!("cannot clear the text index: {e}"))
    }

    /// Removes a document's chunks (visible after [`TextIndex::commit`]).
    pub fn remove_document(&self, document: u64) -> Result<(), String> {
        let writer = self.writer.lock().map_err(|_| "text index lock poisoned")?;
        writer.delete_term(Term::from_field_u64(self.document, document));
        Ok(())
    }

    /// Makes the changes durable as holding the log up to `seq`, and searchable.
    pub fn commit(&self, seq: i64) -> Result<(), String> {
        let mut writer = self.writer.lock().map_err(|_| "text index lock poisoned")?;
        let mut prepared = writer
            .prepare_commit()
            .map_err(|e| format!("cannot commit the text index: {e}"))?;
        prepared.set_payload(&seq.to_string());
        prepared
            .commit()
            .map_err(|e| format!("cannot commit the text index: {e}"))?;
        drop(writer);
        if let Ok(mut at) = self.last_commit.lock() {
            *at = Instant::now();
        }
        self.reader
            .reload()
            .map_err(|e| format!("cannot reload the text index: {e}"))
    }

    /// Segments a search walks now.
    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// Merges segments into about one per search thread once the index has committed nothing
    /// for `quiet`, and returns how many it merged (0 when there was nothing to do). A search
    /// ranks each segment on its own: at 1M chunks, ten uneven segments cost BM25 a quarter
    /// more CPU than two even ones, and two even ones let both threads share a query. Blocks
    /// until the merges are done (seconds at 1M chunks); the commit payload is kept.
    pub fn merge_when_quiet(&self, quiet: Duration) -> Result<usize, String> {
        self.merge_into_parts(quiet, search_threads())
    }

    fn merge_into_parts(&self, quiet: Duration, parts: usize) -> Result<usize, String> {
        let settled = self
            .last_commit
            .lock()
            .is_ok_and(|at| at.elapsed() >= quiet);
        if !settled {
            return Ok(0);
        }
        // The reader's segments, not the metas on disk: this runs every second.
        let searcher = self.reader.searcher();
        let segments = searcher.segment_readers();
        let sizes: Vec<u64> = segments.iter().map(|r| u64::from(r.num_docs())).collect();
        let plan = merge_plan(&sizes, parts);
        if plan.is_empty() {
            return Ok(0);
        }
        let groups: Vec<Vec<SegmentId>> = plan
            .iter()
            .map(|group| group.iter().map(|&i| segments[i].segment_id()).collect())
            .collect();
        drop(searcher);
        let merged = self.merge(&groups);
        if merged.is_err() {
            // A merge of tantivy's own may have replaced these segments since the reader last
            // looked: the next try, after another quiet spell, plans from a fresh view.
            let _ = self.reader.reload();
            if let Ok(mut at) = self.last_commit.lock() {
                *at = Instant::now();
            }
        }
        merged.map(|()| plan.iter().map(Vec::len).sum())
    }

    fn merge(&self, groups: &[Vec<SegmentId>]) -> Result<(), String> {
        let merging: Vec<_> = {
            let mut writer = self.writer.lock().map_err(|_| "text index lock poisoned")?;
            groups.iter().map(|ids| writer.merge(ids)).collect()
        };
        for done in merging {
            done.wait()
                .map_err(|e| format!("cannot merge the text index: {e}"))?;
        }
        self.reader
            .reload()
            .map_err(|e| format!("cannot reload the text index: {e}"))
    }

    /// Analyses a query with the collection's language: its words, stemmed, stop words gone.
    pub fn parse(&self, query: &str) -> Result<TextQuery, String> {
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.text)
            .map_err(|e| e.to_string())?;
        let mut stream = analyzer.token_stream(query);
        let mut terms = Vec::new();
        while let Some(token) = stream.next() {
            terms.push(Term::from_field_text(self.text, &token.text));
        }
        Ok(TextQuery { terms })
    }

    fn query(&self, q: &TextQuery, documents: Option<&[u64]>) -> Box<dyn Query> {
        let words: Vec<(Occur, Box<dyn Query>)> = q
            .terms
            .iter()
            .map(|t| {
                (
                    Occur::Should,
                    Box::new(TermQuery::new(t.clone(), IndexRecordOption::WithFreqs))
                        as Box<dyn Query>,
                )
            })
            .collect();
        let text: Box<dyn Query> = Box::new(BooleanQuery::new(words));
        match documents {
            None => text,
            Some(ids) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, text),
                (
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(
                        Box::new(TermSetQuery::new(
                            ids.iter().map(|d| Term::from_field_u64(self.document, *d)),
                        )),
                        0.0,
                    )),
                ),
            ])),
        }
    }

    /// The `k` best chunks by BM25, best first; `documents` limits them to those documents.
    pub fn search(
        &self,
        q: &TextQuery,
        k: usize,
        documents: Option<&[u64]>,
    ) -> Result<Vec<(u64, f32)>, String> {
        if q.terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let top = searcher
            .search(
                &*self.query(q, documents),
                &TopDocs::with_limit(k).order_by_score(),
            )
            .map_err(|e| format!("text search failed: {e}"))?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let column = searcher
                .segment_reader(address.segment_ord)
                .fast_fields()
                .u64("chunk")
                .map_err(|e| e.to_string())?;
            if let Some(id) = column.first(address.doc_id) {
                out.push((id, score));
            }
        }
        Ok(out)
    }

    /// Highlights a query's words in a chunk's text.
    pub fn highlighter(&self, q: &TextQuery) -> Result<SnippetGenerator, String> {
        let searcher = self.reader.searcher();
        let query = self.query(q, None);
        let mut generator =
            SnippetGenerator::create(&searcher, &*query, self.text).map_err(|e| e.to_string())?;
        generator.set_max_num_chars(240);
        Ok(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_merge_into_one_even_part_per_search_thread() {
        assert!(merge_plan(&[], 2).is_empty());
        assert!(
            merge_plan(&[500, 3], 2).is_empty(),
            "never more parts than threads"
        );
        assert!(
            merge_plan(&[1000, 900, 10], 2).is_empty(),
            "one small segment waits"
        );
        assert_eq!(merge_plan(&[10, 1000, 20, 900], 2), vec![vec![2, 0]]);
        assert_eq!(
            merge_plan(&[262, 262, 249, 32, 32, 32, 32, 32, 32, 29], 2),
            vec![vec![0, 2], vec![1, 3, 4, 5, 6, 7, 8, 9]],
        );
        assert_eq!(merge_plan(&[1000, 125, 100], 1), vec![vec![0, 1, 2]]);
        assert_eq!(merge_plan(&[60, 40, 30], 0), vec![vec![0, 1, 2]]);
    }

    fn words(index: &TextIndex, query: &str) -> Vec<u64> {
        let q = index.parse(query).unwrap();
        let mut hits: Vec<u64> = index
            .search(&q, 10, None)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        hits.sort_unstable();
        hits
    }

    #[test]
    fn a_quiet_index_merges_its_segments_and_keeps_its_chunks_deletions_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let english = Language::parse("en").unwrap();
        let (index, _) = TextIndex::open(dir.path(), english).unwrap();
        let batches: [&[(u64, &str)]; 3] = [
            &[(1, "granite quarries of the northern hills")],
            &[
                (2, "tidal energy along granite coasts"),
                (4, "salt marshes and their birds"),
            ],
            &[(3, "copper mining in the northern hills")],
        ];
        for (seq, batch) in batches.iter().enumerate() {
            for (doc, text) in batch.iter() {
                index.add(*doc, &[(*doc * 10, text.to_string())]).unwrap();
            }
            index.commit(seq as i64 + 1).unwrap();
        }
        index.remove_document(2).unwrap();
        index.commit(4).unwrap();
        assert_eq!(index.segments(), 3);

        assert_eq!(index.merge_into_parts(Duration::from_secs(3600), 1), Ok(0));
        assert_eq!(index.segments(), 3, "a busy index is left alone");
        assert_eq!(index.merge_into_parts(Duration::ZERO, 1), Ok(3));
        assert_eq!(index.segments(), 1);
        assert_eq!(index.len(), 3);
        assert_eq!(words(&index, "granite"), vec![10]);
        assert_eq!(words(&index, "marsh"), vec![40]);
        assert_eq!(words(&index, "northern hills"), vec![10, 30]);
        assert_eq!(index.merge_into_parts(Duration::ZERO, 1), Ok(0));
        drop(index);

        let (again, applied) = TextIndex::open(dir.path(), english).unwrap();
        assert_eq!(applied, 4, "the merge keeps the change the index holds");
        assert_eq!(again.segments(), 1);
        assert_eq!(words(&again, "copper"), vec![30]);
    }
}
