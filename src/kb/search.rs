//! Search: full text (BM25), vectors (cosine), and hybrid (both, fused by reciprocal rank),
//! over the collections the caller may read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::params_from_iter;
use serde::{Deserialize, Serialize};

use super::access::Access;
use super::collections::{readable_ids, resolve_for};
use super::index::CollectionIndex;
use super::{KbError, KnowledgeBase};
use crate::auth::Principal;

/// Longest accepted query, in characters.
const MAX_QUERY_CHARS: usize = 4096;
/// Most hits one search returns.
const MAX_TOP_K: usize = 1000;
/// Candidates each retriever contributes to a hybrid search, at least.
const FUSION_DEPTH: usize = 50;

/// Which retrievers a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Both, fused by reciprocal rank.
    #[default]
    Hybrid,
    /// Embedding similarity only.
    Vector,
    /// BM25 only.
    Text,
}

/// Body of `POST /api/v1/search`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// What to look for.
    pub query: String,
    /// Collections by name; all the caller may read when absent.
    pub collections: Option<Vec<String>>,
    /// Hits wanted (1–1000, default 10).
    pub top_k: Option<usize>,
    /// Retrievers (default hybrid).
    #[serde(default)]
    pub mode: Mode,
    /// Narrows the documents searched.
    pub filters: Option<Filters>,
}

/// Filters of a search; all given ones must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Only these documents.
    pub documents: Option<Vec<i64>>,
    /// Only documents of these formats (pdf, docx, odt, epub, html, markdown, text).
    pub formats: Option<Vec<String>>,
}

/// The answer of a search.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResults {
    /// Best first.
    pub hits: Vec<Hit>,
    /// The mode used.
    pub mode: Mode,
    /// Time spent, in milliseconds.
    pub took_ms: f64,
}

/// One chunk found.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// 1-based position.
    pub rank: usize,
    /// Fused score (hybrid), BM25 (text) or cosine similarity (vector).
    pub score: f64,
    /// Collection name.
    pub collection: String,
    /// Document id.
    pub document: i64,
    /// Document title, if found in it.
    pub title: Option<String>,
    /// Document file name.
    pub filename: String,
    /// First page of the chunk (paged formats).
    pub page_start: Option<i64>,
    /// Last page of the chunk.
    pub page_end: Option<i64>,
    /// The chunk.
    pub chunk: HitChunk,
    /// The best passage with the query's words marked.
    pub snippet: Snippet,
    /// Position in the full-text ranking, if it was there.
    pub text_rank: Option<usize>,
    /// Position in the vector ranking, if it was there.
    pub vector_rank: Option<usize>,
}

/// The chunk of a hit.
#[derive(Debug, Clone, Serialize)]
pub struct HitChunk {
    /// Chunk id.
    pub id: i64,
    /// Position in its document.
    pub seq: i64,
    /// Its text.
    pub text: String,
    /// Headings above it.
    pub heading: Option<String>,
    /// Character span in the document's extracted text.
    pub chars: [i64; 2],
}

/// A highlighted passage.
#[derive(Debug, Clone, Serialize)]
pub struct Snippet {
    /// The passage.
    pub text: String,
    /// Byte ranges of `text` to highlight.
    pub highlights: Vec<[usize; 2]>,
}

/// A collection being searched.
struct Target {
    id: i64,
    model: String,
    index: Arc<CollectionIndex>,
}

/// One retriever's candidate: collection, chunk id, raw score (higher is better).
type Candidate = (i64, u64, f32);

impl KnowledgeBase {
    /// Searches the collections the caller may read.
    pub async fn search(
        &self,
        who: &Principal,
        req: SearchRequest,
    ) -> Result<SearchResults, KbError> {
        let started = Instant::now();
        let query = req.query.trim().to_string();
        if query.is_empty() {
            return Err(KbError::Invalid(
                "query is empty: say what to look for".into(),
            ));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(KbError::Invalid(format!(
                "query is longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        let top_k = req.top_k.unwrap_or(10);
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(KbError::Invalid(format!(
                "top_k {top_k} is out of range 1-{MAX_TOP_K}"
            )));
        }
        let filters = req.filters.clone().unwrap_or_default();
        if let Some(formats) = &filters.formats {
            for f in formats {
                if super::extract::Format::parse(f).is_none() {
                    return Err(KbError::Invalid(format!(
                        "unknown format {f:?} in filters.formats: use pdf, docx, odt, epub, html, markdown or text"
                    )));
                }
            }
        }
        let (targets, allowed) = self.targets(who, req.collections.clone(), filters).await?;
        let depth = match req.mode {
            Mode::Hybrid => top_k.max(FUSION_DEPTH),
            _ => top_k,
        };

        let text_list = if req.mode != Mode::Vector {
            let (targets, q, allowed) = (
                targets
                    .iter()
                    .map(|t| (t.id, t.index.clone()))
                    .collect::<Vec<_>>(),
                query.clone(),
                allowed.clone(),
            );
            Some(tokio::task::spawn_blocking(move || {
                text_candidates(&targets, &q, depth, allowed.as_ref())
            }))
        } else {
            None
        };
        let vector_list = if req.mode != Mode::Text {
            Some(
                self.vector_candidates(&targets, &query, depth, allowed.clone())
                    .await?,
            )
        } else {
            None
        };
        let text_list = match text_list {
            Some(task) => Some(
                task.await
                    .map_err(|e| KbError::Internal(e.to_string()))?
                    .map_err(KbError::Internal)?,
            ),
            None => None,
        };

        let ranked = fuse(
            text_list.as_deref(),
            vector_list.as_deref(),
            top_k,
            self.config.rrf_k,
            self.config.rrf_text_weight,
            self.config.rrf_vector_weight,
        );
        let hits = self.hits(&targets, &query, ranked).await?;
        Ok(SearchResults {
            hits,
            mode: req.mode,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The collections to search (404 for a named one the caller may not read) and, when
    /// filters are given, the chunk ids they allow.
    async fn targets(
        &self,
        who: &Principal,
        names: Option<Vec<String>>,
        filters: Filters,
    ) -> Result<(Vec<Target>, Option<Arc<AllowedChunks>>), KbError> {
        let who = who.clone();
        let (rows, allowed) = self
            .store
            .run(move |conn| -> Result<Scope, KbError> {
                let ids = match names {
                    Some(names) => {
                        let mut ids = Vec::new();
                        for n in names {
                            let row = resolve_for(conn, &who, &n, Access::Read)?;
                            if !ids.contains(&row.id) {
                                ids.push(row.id);
                            }
                        }
                        ids
                    }
                    None => readable_ids(conn, &who)?,
                };
                let mut rows = Vec::new();
                for id in &ids {
                    let model: String = conn.query_row(
                        "SELECT embedding_model FROM collections WHERE id = ?1",
                        [id],
                        |r| r.get(0),
                    )?;
                    rows.push((*id, model));
                }
                let allowed = if filters.documents.is_some() || filters.formats.is_some() {
                    Some(allowed_chunks(conn, &ids, &filters)?)
                } else {
                    None
                };
                Ok((rows, allowed))
            })
            .await?;
        let targets = rows
            .into_iter()
            .filter_map(|(id, model)| {
                self.indexes
                    .get(id)
                    .map(|index| Target { id, model, index })
            })
            .collect();
        Ok((targets, allowed.map(Arc::new)))
    }

    async fn vector_candidates(
        &self,
        targets: &[Target],
        query: &str,
        depth: usize,
        allowed: Option<Arc<AllowedChunks>>,
    ) -> Result<Vec<Candidate>, KbError> {
        let mut by_model: HashMap<&str, Vec<f32>> = HashMap::new();
        for t in targets {
            if !by_model.contains_key(t.model.as_str()) {
                let served = self.embedding_model(&t.model)?;
                let vector = served
                    .embed_query(query)
                    .await
                    .map_err(|e| KbError::Unavailable(format!("cannot embed the query: {e}")))?;
                by_model.insert(&t.model, vector);
            }
        }
        let jobs: Vec<(i64, Arc<CollectionIndex>, Vec<f32>)> = targets
            .iter()
            .map(|t| {
                (
                    t.id,
                    t.index.clone(),
                    by_model.get(t.model.as_str()).cloned().unwrap_or_default(),
                )
            })
            .collect();
        tokio::task::spawn_blocking(move || -> Result<Vec<Candidate>, String> {
            let mut all = Vec::new();
            for (id, index, vector) in jobs {
                let found = match &allowed {
                    Some(a) => {
                        let keep = |key: u64| a.chunks.contains(&key);
                        index.vectors.search(&vector, depth, Some(&keep))?
                    }
                    None => index.vectors.search(&vector, depth, None)?,
                };
                all.extend(found.into_iter().map(|(key, d)| (id, key, 1.0 - d)));
            }
            sort_desc(&mut all);
            all.truncate(depth);
            Ok(all)
        })
        .await
        .map_err(|e| KbError::Internal(e.to_string()))?
        .map_err(KbError::Internal)
    }

    /// Loads the ranked chunks with their documents and snippets.
    async fn hits(
        &self,
        targets: &[Target],
        query: &str,
        ranked: Vec<Ranked>,
    ) -> Result<Vec<Hit>, KbError> {
        if ranked.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ranked.iter().map(|r| r.chunk as i64).collect();
        let rows = self
            .store
            .run(move |conn| -> Result<HashMap<i64, Row>, KbError> {
                let marks = vec!["?"; ids.len()].join(",");
                let mut stmt = conn.prepare(&format!(
                    "SELECT ch.id, ch.document_id, ch.seq, ch.text, ch.heading, ch.page_start,
                         ch.page_end, ch.char_start, ch.char_end, d.title, d.filename, c.name
                     FROM chunks ch JOIN documents d ON d.id = ch.document_id
                     JOIN collections c ON c.id = d.collection_id
                     WHERE ch.id IN ({marks})"
                ))?;
                let rows = stmt
                    .query_map(params_from_iter(ids.iter()), |r| {
                        Ok(Row {
                            id: r.get(0)?,
                            document: r.get(1)?,
                            seq: r.get(2)?,
                            text: r.get(3)?,
                            heading: r.get(4)?,
                            page_start: r.get(5)?,
                            page_end: r.get(6)?,
                            chars: [r.get(7)?, r.get(8)?],
                            title: r.get(9)?,
                            filename: r.get(10)?,
                            collection: r.get(11)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<Row>>>()?;
                Ok(rows.into_iter().map(|r| (r.id, r)).collect())
            })
            .await?;
        let mut highlighters = HashMap::new();
        for t in targets {
            if ranked.iter().any(|r| r.collection == t.id)
                && let Ok(q) = t.index.text.parse(query)
                && let Ok(h) = t.index.text.highlighter(&q)
            {
                highlighters.insert(t.id, h);
            }
        }
        let mut hits = Vec::with_capacity(ranked.len());
        let mut rows = rows;
        for r in ranked {
            // A chunk deleted since the indexes answered is skipped.
            let Some(row) = rows.remove(&(r.chunk as i64)) else {
                continue;
            };
            let snippet = highlighters
                .get(&r.collection)
                .map(|h| h.snippet(&row.text))
                .filter(|s| !s.is_empty())
                .map_or_else(
                    || Snippet {
                        text: row.text.chars().take(240).collect(),
                        highlights: Vec::new(),
                    },
                    |s| Snippet {
                        text: s.fragment().to_string(),
                        highlights: s.highlighted().iter().map(|h| [h.start, h.end]).collect(),
                    },
                );
            hits.push(Hit {
                rank: hits.len() + 1,
                score: r.score,
                collection: row.collection,
                document: row.document,
                title: row.title,
                filename: row.filename,
                page_start: row.page_start,
                page_end: row.page_end,
                chunk: HitChunk {
                    id: row.id,
                    seq: row.seq,
                    text: row.text,
                    heading: row.heading,
                    chars: row.chars,
                },
                snippet,
                text_rank: r.text_rank,
                vector_rank: r.vector_rank,
            });
        }
        Ok(hits)
    }
}

/// A stored chunk with its document, for a hit.
struct Row {
    id: i64,
    document: i64,
    seq: i64,
    text: String,
    heading: Option<String>,
    page_start: Option<i64>,
    page_end: Option<i64>,
    chars: [i64; 2],
    title: Option<String>,
    filename: String,
    collection: String,
}

/// The collections of a search (id, embedding model) and what its filters allow.
type Scope = (Vec<(i64, String)>, Option<AllowedChunks>);

/// Chunks and documents a filter allows.
struct AllowedChunks {
    documents: Vec<u64>,
    chunks: std::collections::HashSet<u64>,
}

fn allowed_chunks(
    conn: &rusqlite::Connection,
    collections: &[i64],
    filters: &Filters,
) -> Result<AllowedChunks, KbError> {
    let mut sql = format!(
        "SELECT id FROM documents WHERE collection_id IN ({})",
        vec!["?"; collections.len()].join(",")
    );
    let mut args: Vec<rusqlite::types::Value> = collections.iter().map(|c| (*c).into()).collect();
    if let Some(docs) = &filters.documents {
        sql.push_str(&format!(" AND id IN ({})", vec!["?"; docs.len()].join(",")));
        args.extend(docs.iter().map(|d| rusqlite::types::Value::from(*d)));
    }
    if let Some(formats) = &filters.formats {
        sql.push_str(&format!(
            " AND format IN ({})",
            vec!["?"; formats.len()].join(",")
        ));
        args.extend(
            formats
                .iter()
                .map(|f| rusqlite::types::Value::from(f.clone())),
        );
    }
    let documents: Vec<u64> = {
        let mut stmt = conn.prepare(&sql)?;
        stmt.query_map(params_from_iter(args.iter()), |r| r.get::<_, i64>(0))?
            .map(|r| r.map(|v| v as u64))
            .collect::<rusqlite::Result<_>>()?
    };
    let mut chunks = std::collections::HashSet::new();
    let mut stmt = conn.prepare_cached("SELECT id FROM chunks WHERE document_id = ?1")?;
    for d in &documents {
        for id in stmt.query_map([*d as i64], |r| r.get::<_, i64>(0))? {
            chunks.insert(id? as u64);
        }
    }
    Ok(AllowedChunks { documents, chunks })
}

fn text_candidates(
    targets: &[(i64, Arc<CollectionIndex>)],
    query: &str,
    depth: usize,
    allowed: Option<&Arc<AllowedChunks>>,
) -> Result<Vec<Candidate>, String> {
    let mut all = Vec::new();
    for (id, index) in targets {
        let q = index.text.parse(query)?;
        let docs = allowed.map(|a| a.documents.as_slice());
        all.extend(
            index
                .text
                .search(&q, depth, docs)?
                .into_iter()
                .map(|(chunk, score)| (*id, chunk, score)),
        );
    }
    sort_desc(&mut all);
    all.truncate(depth);
    Ok(all)
}

fn sort_desc(list: &mut [Candidate]) {
    list.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.1.cmp(&b.1)));
}

/// A chunk after fusion.
#[derive(Debug, Clone, PartialEq)]
struct Ranked {
    collection: i64,
    chunk: u64,
    score: f64,
    text_rank: Option<usize>,
    vector_rank: Option<usize>,
}

/// Reciprocal-rank fusion: each list adds `weight / (k + rank)` (1-based rank) to a chunk's
/// score. With one list, its own scores and order are kept.
fn fuse(
    text: Option<&[Candidate]>,
    vector: Option<&[Candidate]>,
    top_k: usize,
    k: f64,
    text_weight: f64,
    vector_weight: f64,
) -> Vec<Ranked> {
    let mut fused: HashMap<u64, Ranked> = HashMap::new();
    let both = text.is_some() && vector.is_some();
    for (list, weight, is_text) in [(text, text_weight, true), (vector, vector_weight, false)] {
        let Some(list) = list else { continue };
        for (i, &(collection, chunk, score)) in list.iter().enumerate() {
            let entry = fused.entry(chunk).or_insert(Ranked {
                collection,
                chunk,
                score: 0.0,
                text_rank: None,
                vector_rank: None,
            });
            if is_text {
                entry.text_rank = Some(i + 1);
            } else {
                entry.vector_rank = Some(i + 1);
            }
            entry.score += if both {
                weight / (k + (i + 1) as f64)
            } else {
                f64::from(score)
            };
        }
    }
    let mut out: Vec<Ranked> = fused.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.chunk.cmp(&b.chunk)));
    out.truncate(top_k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement_and_keeps_single_lists_as_they_are() {
        let text = [(1, 10, 9.0), (1, 11, 8.0), (1, 12, 7.0)];
        let vector = [(1, 12, 0.9), (1, 13, 0.8), (1, 10, 0.7)];
        let fused = fuse(Some(&text), Some(&vector), 10, 60.0, 1.0, 1.0);
        let order: Vec<u64> = fused.iter().map(|r| r.chunk).collect();
        // 10: 1/61 + 1/63; 12: 1/63 + 1/61 (a tie, broken by id); then 11 (1/62) and 13 (1/62).
        assert_eq!(order, vec![10, 12, 11, 13]);
        assert_eq!(fused[0].text_rank, Some(1));
        assert_eq!(fused[0].vector_rank, Some(3));
        let only_text = fuse(Some(&text), None, 2, 60.0, 1.0, 1.0);
        assert_eq!(
            only_text.iter().map(|r| r.chunk).collect::<Vec<_>>(),
            vec![10, 11]
        );
        assert!((only_text[0].score - 9.0).abs() < 1e-9);
    }

    #[test]
    fn weights_shift_the_fused_order() {
        let text = [(1, 1, 5.0), (1, 2, 4.0)];
        let vector = [(1, 2, 0.9), (1, 1, 0.8)];
        let favour_vectors = fuse(Some(&text), Some(&vector), 2, 60.0, 0.5, 1.0);
        assert_eq!(favour_vectors[0].chunk, 2);
        let favour_text = fuse(Some(&text), Some(&vector), 2, 60.0, 1.0, 0.5);
        assert_eq!(favour_text[0].chunk, 1);
    }
}
