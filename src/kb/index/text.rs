//! The full-text index of one collection: tantivy with BM25, keyed by chunk id.
//!
//! Each commit carries the last change of the `index_changes` log it holds as its payload, so
//! the index and the position it records are written atomically together.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use tantivy::collector::TopDocs;
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

/// The threads every collection's searches share to search an index's segments side by side:
/// at 1M chunks that halves BM25's slowest queries (p99 29 -> 16 ms). One pool for all
/// collections, so their number does not multiply threads.
fn search_executor() -> Executor {
    static SHARED: OnceLock<Executor> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            Executor::multi_thread(threads, "text-search-")
                .unwrap_or_else(|_| Executor::single_thread())
        })
        .clone()
}

/// One collection's full-text index.
pub struct TextIndex {
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    chunk: Field,
    document: Field,
    text: Field,
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
