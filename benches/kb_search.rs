//! In-process knowledge-base search figures for `just bench-kb`, on a data directory the
//! daemon has filled (the daemon must be stopped: this opens the store itself).
//!
//! 1. Latency of `KnowledgeBase::search` (query embedding included) per mode, p50/p99.
//! 2. The vector path alone: the collection's saved usearch file, searched one query at a time
//!    on one thread at several `ef`, queries/s and recall@10 against exact search. The query
//!    and base vectors and the exact answers are written beside, for the FAISS baseline.
//!
//! Usage: cargo bench --bench kb_search -- CONFIG COLLECTION QUERIES_JSON OUT_DIR
//! Prints one JSON object.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use sparkbrain::auth::{Principal, Role};
use sparkbrain::config::{FileChoice, Overrides};
use sparkbrain::inference::{ModelManager, Runtime};
use sparkbrain::kb::{KnowledgeBase, Mode, SearchRequest};
use sparkbrain::store::{BlobStore, Store};
use sparkbrain::telemetry::metrics::Metrics;

type Error = Box<dyn std::error::Error>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [config, collection, queries, out] = args.as_slice() else {
        return Err("usage: kb_search CONFIG COLLECTION QUERIES_JSON OUT_DIR".into());
    };
    let out = PathBuf::from(out);
    let queries: Vec<String> = serde_json::from_str(&std::fs::read_to_string(queries)?)?;
    let config =
        sparkbrain::config::load(&FileChoice::Explicit(config.into()), &Overrides::default())?
            .config;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let metrics = Metrics::new()?;
    let store = Store::open(&config.data_dir)?;
    let blobs = BlobStore::open(&config.data_dir)?;
    let runtime = Arc::new(Runtime::load(&config.runtime)?);
    let models = Arc::new(ModelManager::new(runtime, &config, metrics.serving()));
    models.load_builtin(
        &config.models.embedding_name,
        &config.models,
        config.runtime.memory_mode,
    )?;
    let opened = Instant::now();
    let kb = KnowledgeBase::open(&config, store.clone(), blobs, metrics.kb())?;
    let open_ms = opened.elapsed().as_secs_f64() * 1000.0;
    kb.start(Some(models.clone()), rt.handle());
    let admin = Principal {
        user_id: 1,
        name: "admin".into(),
        role: Role::Admin,
        api_key_id: None,
    };

    // 1. Search latency, in process.
    let mut latency = serde_json::Map::new();
    for (name, mode) in [
        ("text", Mode::Text),
        ("vector", Mode::Vector),
        ("hybrid", Mode::Hybrid),
    ] {
        let mut times = Vec::with_capacity(queries.len());
        for (i, q) in queries.iter().enumerate() {
            let req = SearchRequest {
                query: q.clone(),
                collections: Some(vec![collection.clone()]),
                top_k: Some(10),
                mode,
                filters: None,
            };
            let t = Instant::now();
            rt.block_on(kb.search(&admin, req))?;
            if i >= 10 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        latency.insert(
            name.into(),
            json!({"p50_ms": percentile(&times, 0.5), "p99_ms": percentile(&times, 0.99)}),
        );
    }
    kb.shutdown();

    // 2. The vector path alone against exact search.
    let served = models.get(&config.models.embedding_name, None)?;
    let mut qv: Vec<Vec<f32>> = Vec::with_capacity(queries.len());
    for group in queries.chunks(32) {
        qv.extend(rt.block_on(served.embed(group, None))?.0);
    }
    let dims = qv[0].len();
    let base = store.with_conn(
        |c| -> Result<Vec<(u64, Vec<f32>)>, sparkbrain::store::StoreError> {
            let mut stmt = c.prepare(
                "SELECT ch.id, ch.vector FROM chunks ch JOIN documents d ON d.id = ch.document_id
             JOIN collections c ON c.id = d.collection_id WHERE c.name = ?1 ORDER BY ch.id",
            )?;
            let rows = stmt.query_map([collection], |r| {
                let bytes: Vec<u8> = r.get(1)?;
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        },
    )?;
    let truth = exact_top10(&base, &qv);
    write_f32(&out.join("queries.f32"), qv.iter().flatten())?;
    write_f32(&out.join("base.f32"), base.iter().flat_map(|(_, v)| v))?;
    let mut ids = std::fs::File::create(out.join("base.ids"))?;
    for (id, _) in &base {
        ids.write_all(&id.to_le_bytes())?;
    }
    let mut t = std::fs::File::create(out.join("truth.ids"))?;
    for row in &truth {
        for id in row {
            t.write_all(&id.to_le_bytes())?;
        }
    }
    let file = newest_vector_file(&config.data_dir, &store, collection)?;
    let index = usearch::Index::restore(&file.to_string_lossy())?;
    let mut sweep = Vec::new();
    for ef in [16, 32, 64, 128, 256, 384, 512, 768, 1024, 2048] {
        index.change_expansion_search(ef);
        let t = Instant::now();
        let mut hit = 0usize;
        for (q, truth) in qv.iter().zip(&truth) {
            let found = index.search(q, 10)?;
            hit += found.keys.iter().filter(|k| truth.contains(k)).count();
        }
        let secs = t.elapsed().as_secs_f64();
        sweep.push(json!({"ef": ef, "recall_at_10": hit as f64 / (10 * qv.len()) as f64, "queries_per_s": qv.len() as f64 / secs}));
    }
    println!(
        "{}",
        json!({
            "chunks": base.len(),
            "dimensions": dims,
            "queries": queries.len(),
            "open_ms": open_ms,
            "latency_in_process": latency,
            "usearch": {"scalar": format!("{:?}", config.kb.vector_scalar), "acceleration": index.hardware_acceleration(), "sweep": sweep},
        })
    );
    Ok(())
}

/// The 10 nearest base vectors of each query by inner product (the vectors are unit length,
/// so this is cosine), on all cores.
fn exact_top10(base: &[(u64, Vec<f32>)], queries: &[Vec<f32>]) -> Vec<Vec<u64>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let part = queries.len().div_ceil(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = queries
            .chunks(part)
            .map(|qs| {
                s.spawn(move || {
                    qs.iter()
                        .map(|q| {
                            let mut best: Vec<(f32, u64)> = Vec::with_capacity(11);
                            for (id, v) in base {
                                let d: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
                                if best.len() < 10 || d > best[best.len() - 1].0 {
                                    best.push((d, *id));
                                    best.sort_by(|a, b| b.0.total_cmp(&a.0));
                                    best.truncate(10);
                                }
                            }
                            best.into_iter().map(|(_, id)| id).collect()
                        })
                        .collect::<Vec<Vec<u64>>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

fn write_f32<'a>(path: &Path, values: impl Iterator<Item = &'a f32>) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in values {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()
}

fn newest_vector_file(data_dir: &Path, store: &Store, collection: &str) -> Result<PathBuf, Error> {
    let id: i64 = store.with_conn(|c| {
        c.query_row(
            "SELECT id FROM collections WHERE name = ?1",
            [collection],
            |r| r.get(0),
        )
        .map_err(sparkbrain::store::StoreError::from)
    })?;
    let dir = data_dir
        .join("kb/collections")
        .join(id.to_string())
        .join("vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "usearch"))
        .collect();
    files.sort();
    files
        .pop()
        .ok_or_else(|| format!("no saved vector index in {}", dir.display()).into())
}
