//! The vector index of one collection: usearch HNSW with cosine distance, keyed by chunk id.
//!
//! The file on disk is `vectors-<seq>.usearch`, where `<seq>` is the last change of the
//! `index_changes` log it holds: written to a temporary name, synced and renamed, so the file
//! and the position it records can never disagree.
//!
//! At start the file is memory-mapped read-only, so opening a million vectors costs
//! milliseconds and searches page in only what they touch. The first change loads a writable
//! copy beside it (searches keep using the mapping meanwhile) and swaps it in.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

use usearch::ffi::Matches;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::exact::ExactNeighbours;
use crate::config::VectorScalar;

/// Settings of a vector index.
#[derive(Debug, Clone, Copy)]
pub struct VectorSettings {
    /// Vector size.
    pub dimensions: usize,
    /// Stored scalar kind.
    pub scalar: VectorScalar,
    /// HNSW M.
    pub connectivity: usize,
    /// Candidates while adding.
    pub expansion_add: usize,
    /// Candidates while searching, at least (calibration may raise it).
    pub expansion_search: usize,
    /// Most candidates calibration may choose while searching.
    pub expansion_search_max: usize,
    /// Recall@10 calibration aims at; 0 keeps `expansion_search` as it is.
    pub recall_target: f64,
}

/// What the last recall calibration of an index measured and chose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Vectors the index held.
    pub vectors: usize,
    /// Recall@10 it aimed at.
    pub target: f64,
    /// Search candidate list size chosen.
    pub expansion_search: usize,
    /// Recall@10 against exact search measured at that size.
    pub recall: f64,
    /// Probe queries measured.
    pub probes: usize,
    /// How many of them were real queries.
    pub queries: usize,
}

/// One collection's vectors.
pub struct VectorIndex {
    dir: PathBuf,
    settings: VectorSettings,
    /// Read-locked to search, add and remove (usearch allows those concurrently); write-locked
    /// only to grow its capacity or swap a mapped index for a writable one.
    index: RwLock<Index>,
    /// The saved file the index is a read-only mapping of, until its first change.
    mapped: Mutex<Option<PathBuf>>,
    /// Search candidate list size in use: the configured one, or what calibration chose.
    expansion: AtomicUsize,
    /// The last calibration, kept beside the saved index so a restart searches at once with
    /// the size it chose.
    calibration: Mutex<Option<Calibration>>,
    /// The latest query vectors: calibration measures recall on what people ask.
    recent: Mutex<VecDeque<Vec<f32>>>,
}

/// Query vectors kept as calibration probes.
const RECENT_QUERIES: usize = 32;
/// Probes of one calibration: recent queries first, then points between stored vectors.
pub const CALIBRATION_PROBES: usize = 64;
/// Neighbours compared per probe.
const RECALL_AT: usize = 10;
/// The calibration's file in the index folder.
const CALIBRATION_FILE: &str = "calibration.json";
/// Below this many vectors a search list of the configured size finds nearly all of them:
/// nothing to calibrate.
const CALIBRATION_MIN_VECTORS: usize = 1000;

const PREFIX: &str = "vectors-";
/// Vectors added at once from which the insert is spread over threads.
const PARALLEL_ADD: usize = 256;
const SUFFIX: &str = ".usearch";

fn options(s: &VectorSettings) -> IndexOptions {
    IndexOptions {
        dimensions: s.dimensions,
        metric: metric(s.scalar),
        quantization: match s.scalar {
            VectorScalar::F32 => ScalarKind::F32,
            VectorScalar::Bf16 => ScalarKind::BF16,
            VectorScalar::F16 => ScalarKind::F16,
            VectorScalar::I8 => ScalarKind::I8,
        },
        connectivity: s.connectivity,
        expansion_add: s.expansion_add,
        expansion_search: s.expansion_search,
        multi: false,
    }
}

/// The saved files in `dir`, newest last, with the change each holds.
fn saved(dir: &Path) -> Vec<(i64, PathBuf)> {
    let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let seq = name
                .strip_prefix(PREFIX)?
                .strip_suffix(SUFFIX)?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort();
    found
}

impl VectorIndex {
    /// Opens the newest saved index in `dir` (or an empty one) and returns it with the last
    /// change it holds (0 for none). A file that cannot be read is set aside and the index
    /// starts empty, to be rebuilt from the database.
    pub fn open(dir: &Path, settings: VectorSettings) -> Result<(VectorIndex, i64), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let index = Index::new(&options(&settings)).map_err(|e| e.to_string())?;
        let mut applied = 0;
        let mut mapped = None;
        if let Some((seq, path)) = saved(dir).pop() {
            match index.view(&path.to_string_lossy()) {
                Ok(()) if index.dimensions() == settings.dimensions => {
                    applied = seq;
                    mapped = Some(path);
                }
                outcome => {
                    let why = outcome.err().map_or_else(
                        || {
                            format!(
                                "it holds {}-d vectors, not {}",
                                index.dimensions(),
                                settings.dimensions
                            )
                        },
                        |e| e.to_string(),
                    );
                    tracing::warn!(path = %path.display(), error = %why, "vector index unreadable; rebuilding it from the database");
                    let _ = std::fs::rename(&path, path.with_extension("broken"));
                    index.reset().map_err(|e| e.to_string())?;
                }
            }
        }
        let calibration = read_calibration(dir).filter(|c| c.target == settings.recall_target);
        let expansion = calibration.map_or(settings.expansion_search, |c| {
            c.expansion_search
                .min(settings.expansion_search_max)
                .max(settings.expansion_search)
        });
        index.change_expansion_search(expansion);
        Ok((
            VectorIndex {
                dir: dir.to_path_buf(),
                settings,
                index: RwLock::new(index),
                mapped: Mutex::new(mapped),
                expansion: AtomicUsize::new(expansion),
                calibration: Mutex::new(calibration),
                recent: Mutex::new(VecDeque::with_capacity(RECENT_QUERIES)),
            },
            applied,
        ))
    }

    /// Makes the index writable: a mapped one is replaced by a copy loaded into memory. The
    /// load runs without the lock, so searches go on against the mapping until the swap.
    fn writable(&self) -> Result<(), String> {
        let mut mapped = self
            .mapped
            .lock()
            .map_err(|_| "vector index lock poisoned")?;
        let Some(path) = mapped.as_ref() else {
            return Ok(());
        };
        let loaded = Index::new(&options(&self.settings)).map_err(|e| e.to_string())?;
        loaded
            .load(&path.to_string_lossy())
            .map_err(|e| format!("cannot load the vector index for writing: {e}"))?;
        loaded.change_expansion_search(self.expansion.load(Ordering::Acquire));
        *self
            .index
            .write()
            .map_err(|_| "vector index lock poisoned")? = loaded;
        *mapped = None;
        Ok(())
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.index.read().map_or(0, |i| i.size())
    }

    /// Adds vectors under their chunk ids; an id already present is left as it is (replaying
    /// a change twice is harmless).
    pub fn add(&self, items: &[(u64, &[f32])]) -> Result<(), String> {
        self.writable()?;
        {
            let index = self
                .index
                .read()
                .map_err(|_| "vector index lock poisoned")?;
            if index.size() + items.len() > index.capacity() {
                drop(index);
                let index = self
                    .index
                    .write()
                    .map_err(|_| "vector index lock poisoned")?;
                let wanted = (index.size() + items.len())
                    .max(index.capacity() * 2)
                    .max(1024);
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
                index
                    .reserve_capacity_and_threads(wanted, threads)
                    .map_err(|e| format!("cannot grow the vector index: {e}"))?;
            }
        }
        if let Some((key, v)) = items
            .iter()
            .find(|(_, v)| v.len() != self.settings.dimensions)
        {
            return Err(format!(
                "chunk {key} has a {}-d vector; the collection's index holds {}-d vectors",
                v.len(),
                self.settings.dimensions
            ));
        }
        let index = self
            .index
            .read()
            .map_err(|_| "vector index lock poisoned")?;
        let add_all = |part: &[(u64, &[f32])]| -> Result<(), String> {
            for (key, vector) in part {
                if index.contains(*key) {
                    continue;
                }
                Encoded::new(self.settings.scalar, vector)
                    .add(&index, *key)
                    .map_err(|e| format!("cannot add chunk {key} to the vector index: {e}"))?;
            }
            Ok(())
        };
        // HNSW inserts dominate a rebuild or a large replay; usearch takes them from several
        // threads at once.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if items.len() < PARALLEL_ADD || threads < 2 {
            return add_all(items);
        }
        let part = items.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = items
                .chunks(part)
                .map(|p| scope.spawn(move || add_all(p)))
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a vector insert thread panicked".into()))
            })
        })
    }

    /// Removes every vector.
    pub fn clear(&self) -> Result<(), String> {
        let mut mapped = self
            .mapped
            .lock()
            .map_err(|_| "vector index lock poisoned")?;
        let empty = Index::new(&options(&self.settings))
            .map_err(|e| format!("cannot clear the vector index: {e}"))?;
        empty.change_expansion_search(self.expansion.load(Ordering::Acquire));
        *self
            .index
            .write()
            .map_err(|_| "vector index lock poisoned")? = empty;
        *mapped = None;
        Ok(())
    }

    /// Removes chunk ids (absent ones are ignored).
    pub fn remove(&self, keys: &[u64]) -> Result<(), String> {
        self.writable()?;
        let index = self
            .index
            .read()
            .map_err(|_| "vector index lock poisoned")?;
        for key in keys {
            index
                .remove(*key)
                .map_err(|e| format!("cannot remove chunk {key} from the vector index: {e}"))?;
        }
        Ok(())
    }

    /// The `k` nearest chunks to `query`, nearest first, with cosine distances; `keep` limits
    /// the candidates.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<(u64, f32)>, String> {
        if query.len() != self.settings.dimensions {
            return Err(format!(
                "the query vector has {} dimensions; the index holds {}-d vectors",
                query.len(),
                self.settings.dimensions
            ));
        }
        let index = self
            .index
            .read()
            .map_err(|_| "vector index lock poisoned")?;
        if index.size() == 0 || k == 0 {
            return Ok(Vec::new());
        }
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_QUERIES {
                recent.pop_front();
            }
            recent.push_back(query.to_vec());
        }
        let query = Encoded::new(self.settings.scalar, query);
        let matches = match keep {
            None => query.search(&index, k),
            Some(f) => query.filtered_search(&index, k, f),
        }
        .map_err(|e| format!("vector search failed: {e}"))?;
        Ok(matches.keys.into_iter().zip(matches.distances).collect())
    }

    /// Whether the index's recall should be measured again: it never was, it has a tenth
    /// more or fewer vectors since, or it was measured with fewer real queries than are
    /// now at hand.
    pub fn calibration_due(&self) -> bool {
        if self.settings.recall_target <= 0.0 {
            return false;
        }
        let size = self.len();
        if size < CALIBRATION_MIN_VECTORS {
            return false;
        }
        let queries = self.recent.lock().map_or(0, |r| r.len());
        match self.calibration.lock().ok().and_then(|c| *c) {
            Some(c) => {
                size.abs_diff(c.vectors) * 10 > c.vectors
                    || (c.queries < RECENT_QUERIES && queries == RECENT_QUERIES)
            }
            None => true,
        }
    }

    /// The last calibration, if any.
    pub fn calibration(&self) -> Option<Calibration> {
        self.calibration.lock().ok().and_then(|c| *c)
    }

    /// Search candidate list size in use.
    pub fn expansion_search(&self) -> usize {
        self.expansion.load(Ordering::Acquire)
    }

    /// Measures recall@10 against exact search on probe queries and keeps the smallest
    /// search list size, between the configured one and the configured most, that reaches
    /// the target (see [`shortest_list`]). Probes are the latest queries, then the midpoints
    /// of pairs of `pairs` vectors. A stored vector itself would not do: it is a node of the
    /// graph, so a search reaches its neighbours far more easily than a query's (at a million
    /// chunks, 0.998 against 0.79 for real queries at the same size).
    ///
    /// The exact answers come from one pass over `all`, every stored (key, vector); keys the
    /// index does not hold (yet) are skipped. While it runs, concurrent searches use the
    /// sizes it tries.
    pub fn calibrate<I>(&self, pairs: &[Vec<f32>], all: I) -> Result<Calibration, String>
    where
        I: IntoIterator<Item = Result<(u64, Vec<f32>), String>>,
    {
        let mut probes: Vec<Vec<f32>> = self
            .recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let queries = probes.len();
        let room = CALIBRATION_PROBES.saturating_sub(queries);
        probes.extend(
            pairs
                .chunks_exact(2)
                .filter(|p| p.iter().all(|v| v.len() == self.settings.dimensions))
                .take(room)
                .map(|p| p[0].iter().zip(&p[1]).map(|(a, b)| a + b).collect()),
        );
        let index = self
            .index
            .read()
            .map_err(|_| "vector index lock poisoned")?;
        let size = index.size();
        if probes.is_empty() || size <= RECALL_AT {
            return Err("too few vectors or probes to measure recall".into());
        }
        let scalar = self.settings.scalar;
        let mut exact = ExactNeighbours::new(&probes, RECALL_AT);
        for item in all {
            let (key, vector) = item?;
            if index.contains(key) {
                exact.offer(key, &vector);
            }
        }
        let truths = exact.into_keys();
        let (target, most) = (
            self.settings.recall_target,
            self.settings.expansion_search_max,
        );
        let (expansion, recall) = shortest_list(
            self.settings.expansion_search.min(most),
            most,
            target,
            |expansion| {
                index.change_expansion_search(expansion);
                let mut hits = 0usize;
                let mut wanted = 0usize;
                for (q, truth) in probes.iter().zip(&truths) {
                    let found = Encoded::new(scalar, q)
                        .search(&index, RECALL_AT)
                        .map_err(|e| format!("vector search failed: {e}"))?;
                    hits += found.keys.iter().filter(|k| truth.contains(k)).count();
                    wanted += truth.len();
                }
                Ok(hits as f64 / wanted.max(1) as f64)
            },
        )?;
        index.change_expansion_search(expansion);
        self.expansion.store(expansion, Ordering::Release);
        let calibration = Calibration {
            vectors: size,
            target,
            expansion_search: expansion,
            recall,
            probes: probes.len(),
            queries,
        };
        if recall < target {
            tracing::warn!(
                vectors = size,
                recall,
                target,
                expansion_search = expansion,
                "vector recall stays below the target at kb.hnsw_expansion_search_max; raise it to buy recall with time"
            );
        }
        write_calibration(&self.dir, &calibration)?;
        if let Ok(mut slot) = self.calibration.lock() {
            *slot = Some(calibration);
        }
        Ok(calibration)
    }

    /// Writes the index as holding changes up to `seq` and removes older files.
    pub fn save(&self, seq: i64) -> Result<(), String> {
        let index = self
            .index
            .read()
            .map_err(|_| "vector index lock poisoned")?;
        let path = self.dir.join(format!("{PREFIX}{seq:020}{SUFFIX}"));
        let tmp = self.dir.join(format!("{PREFIX}{seq:020}.tmp"));
        index
            .save(&tmp.to_string_lossy())
            .map_err(|e| format!("cannot save the vector index: {e}"))?;
        drop(index);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| std::fs::File::open(&self.dir).and_then(|d| d.sync_all()))
            .map_err(|e| format!("cannot save the vector index: {e}"))?;
        for (old, file) in saved(&self.dir) {
            if old < seq {
                let _ = std::fs::remove_file(file);
            }
        }
        Ok(())
    }

    /// The SIMD kernels usearch uses on this machine.
    pub fn acceleration(&self) -> String {
        self.index
            .read()
            .map_or_else(|_| String::new(), |i| i.hardware_acceleration())
    }
}

/// The shortest search list, from `start` up to `most`, whose `recall` reaches `target`,
/// with the recall measured there; `most` when none does. The list doubles until it reaches
/// the target, then the gap to the last one short of it is halved until it is an eighth of
/// the list: at a million vectors recall grows slowly with the list (0.940 at 512, 0.970 at
/// 1024), so doubling alone would search with up to twice the list needed.
fn shortest_list(
    start: usize,
    most: usize,
    target: f64,
    mut recall: impl FnMut(usize) -> Result<f64, String>,
) -> Result<(usize, f64), String> {
    let mut list = start.max(1);
    let mut reached = recall(list)?;
    let mut short = None;
    while reached < target && list < most {
        short = Some(list);
        list = (list * 2).min(most);
        reached = recall(list)?;
    }
    if let (Some(mut low), true) = (short, reached >= target) {
        while list - low > list / 8 {
            let middle = low + (list - low) / 2;
            let r = recall(middle)?;
            if r >= target {
                (list, reached) = (middle, r);
            } else {
                low = middle;
            }
        }
    }
    Ok((list, reached))
}

fn read_calibration(dir: &Path) -> Option<Calibration> {
    let bytes = std::fs::read(dir.join(CALIBRATION_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Written to a temporary name and renamed: a crash leaves the old file or the new one.
fn write_calibration(dir: &Path, calibration: &Calibration) -> Result<(), String> {
    let tmp = dir.join(format!("{CALIBRATION_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(calibration).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, dir.join(CALIBRATION_FILE)))
        .map_err(|e| format!("cannot save the vector index's calibration: {e}"))
}

/// The distance the index measures for a scalar kind. The float kinds hold vectors scaled to
/// unit length, whose inner product is their cosine: usearch's cosine would compute both
/// norms again at every distance, and inner product searched 1.3–1.5× the queries per second
/// at a million vectors for the same neighbours. i8 vectors are scaled to their largest
/// component, not to unit length, so they keep cosine.
fn metric(scalar: VectorScalar) -> MetricKind {
    match scalar {
        VectorScalar::I8 => MetricKind::Cos,
        VectorScalar::F32 | VectorScalar::Bf16 | VectorScalar::F16 => MetricKind::IP,
    }
}

/// A vector as the index stores and compares it (see [`metric`]).
enum Encoded {
    Unit(Vec<f32>),
    Quantised(Vec<i8>),
}

impl Encoded {
    fn new(scalar: VectorScalar, v: &[f32]) -> Encoded {
        match scalar {
            VectorScalar::I8 => Encoded::Quantised(quantise(v)),
            VectorScalar::F32 | VectorScalar::Bf16 | VectorScalar::F16 => {
                Encoded::Unit(unit_length(v))
            }
        }
    }

    fn add(&self, index: &Index, key: u64) -> Result<(), String> {
        match self {
            Encoded::Unit(v) => index.add(key, v),
            Encoded::Quantised(v) => index.add(key, v),
        }
        .map_err(|e| e.to_string())
    }

    fn search(&self, index: &Index, k: usize) -> Result<Matches, String> {
        match self {
            Encoded::Unit(v) => index.search(v, k),
            Encoded::Quantised(v) => index.search(v, k),
        }
        .map_err(|e| e.to_string())
    }

    fn filtered_search(
        &self,
        index: &Index,
        k: usize,
        keep: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<Matches, String> {
        match self {
            Encoded::Unit(v) => index.filtered_search(v, k, keep),
            Encoded::Quantised(v) => index.filtered_search(v, k, keep),
        }
        .map_err(|e| e.to_string())
    }
}

/// The vector scaled to unit length; one of zero or non-finite length is kept as it is.
fn unit_length(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

/// Scales a vector so its largest component is ±127: usearch's own conversion assumes unit
/// components and keeps only a few bits of an embedding's small values.
fn quantise(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
    v.iter().map(|x| (x * scale).round() as i8).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashSet;

    use super::*;

    fn settings() -> VectorSettings {
        VectorSettings {
            dimensions: 4,
            scalar: VectorScalar::F32,
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 64,
            expansion_search_max: 64,
            recall_target: 0.0,
        }
    }

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.1f32; 4];
        v[i % 4] = 1.0;
        v
    }

    #[test]
    fn a_reopened_index_is_mapped_and_becomes_writable_on_its_first_change() {
        let dir = tempfile::tempdir().unwrap();
        let (index, applied) = VectorIndex::open(dir.path(), settings()).unwrap();
        assert_eq!(applied, 0);
        let (a, b) = (unit(0), unit(1));
        index.add(&[(1, &a), (2, &b)]).unwrap();
        index.save(7).unwrap();
        drop(index);

        let (index, applied) = VectorIndex::open(dir.path(), settings()).unwrap();
        assert_eq!(applied, 7);
        assert!(index.mapped.lock().unwrap().is_some());
        assert_eq!(index.search(&a, 1, None).unwrap()[0].0, 1);

        let c = unit(2);
        index.add(&[(3, &c)]).unwrap();
        assert!(index.mapped.lock().unwrap().is_none());
        assert_eq!(index.len(), 3);
        assert_eq!(index.search(&c, 1, None).unwrap()[0].0, 3);
        assert_eq!(index.search(&b, 1, None).unwrap()[0].0, 2);
        index.remove(&[1]).unwrap();
        index.save(8).unwrap();
        drop(index);

        let (index, applied) = VectorIndex::open(dir.path(), settings()).unwrap();
        assert_eq!(applied, 8);
        assert_eq!(saved(dir.path()).len(), 1, "older files are removed");
        assert_eq!(index.search(&c, 1, None).unwrap()[0].0, 3);
        index.clear().unwrap();
        assert_eq!(index.len(), 0);
        index.add(&[(4, &a)]).unwrap();
        assert_eq!(index.search(&a, 1, None).unwrap()[0].0, 4);
    }

    /// Random directions in 32 dimensions: no structure for the graph to lean on, so a small
    /// search list misses many true neighbours, as a large collection of embeddings does.
    pub(in crate::kb::index) fn random_vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
        use rand_chacha::ChaCha8Rng;
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..32)
                    .map(|_| {
                        // A sum of uniforms is close enough to a normal draw.
                        (0..4)
                            .map(|_| rng.next_u32() as f32 / u32::MAX as f32)
                            .sum::<f32>()
                            - 2.0
                    })
                    .collect()
            })
            .collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    }

    #[test]
    fn vectors_of_any_length_are_ranked_by_cosine_and_answer_cosine_distances() {
        for scalar in [VectorScalar::F32, VectorScalar::Bf16, VectorScalar::F16] {
            let dir = tempfile::tempdir().unwrap();
            let settings = VectorSettings {
                connectivity: 16,
                expansion_add: 64,
                ..sparse(scalar, 300, 300, 0.0)
            };
            let (index, _) = VectorIndex::open(dir.path(), settings).unwrap();
            // Lengths from 0.01 to 100: an inner product of the raw vectors would put the
            // longest first whatever their direction.
            let base: Vec<Vec<f32>> = random_vectors(300, 11)
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let scale = 10f32.powi(i as i32 % 5 - 2);
                    v.iter().map(|x| x * scale).collect()
                })
                .collect();
            add_numbered(&index, &base);
            for q in random_vectors(20, 12) {
                let q: Vec<f32> = q.iter().map(|x| x * 7.0).collect();
                let best = (0..base.len())
                    .max_by(|&a, &b| cosine(&q, &base[a]).total_cmp(&cosine(&q, &base[b])))
                    .unwrap();
                let found = index.search(&q, 5, None).unwrap();
                assert_eq!(found[0].0, best as u64, "{scalar:?}");
                for (key, distance) in found {
                    let want = 1.0 - cosine(&q, &base[key as usize]);
                    assert!(
                        (distance - want).abs() < 0.02,
                        "{scalar:?}: chunk {key} at {distance}, cosine distance {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_index_saved_with_cosine_distances_opens_and_answers_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let settings = sparse(VectorScalar::Bf16, 64, 64, 0.0);
        let base = random_vectors(200, 21);
        let old = Index::new(&IndexOptions {
            metric: MetricKind::Cos,
            ..options(&settings)
        })
        .unwrap();
        old.reserve(base.len()).unwrap();
        for (i, v) in base.iter().enumerate() {
            old.add(i as u64, v).unwrap();
        }
        let file = dir.path().join(format!("{PREFIX}{:020}{SUFFIX}", 7));
        old.save(&file.to_string_lossy()).unwrap();

        let (index, applied) = VectorIndex::open(dir.path(), settings).unwrap();
        assert_eq!((applied, index.len()), (7, 200));
        for (i, v) in base.iter().enumerate().step_by(20) {
            let found = index.search(v, 1, None).unwrap();
            assert_eq!(found[0].0, i as u64);
            assert!(found[0].1.abs() < 0.01, "{found:?}");
        }
        let new = random_vectors(1, 22).remove(0);
        index.add(&[(1000, &new)]).unwrap();
        assert_eq!(index.search(&new, 1, None).unwrap()[0].0, 1000);
    }

    /// Recall@10 of the index's answers to fresh queries, against a brute force written here.
    fn measured_recall(index: &VectorIndex, base: &[Vec<f32>], queries: &[Vec<f32>]) -> f64 {
        let mut hits = 0;
        for q in queries {
            let mut exact: Vec<(f32, u64)> = base
                .iter()
                .enumerate()
                .map(|(i, v)| (cosine(q, v), i as u64))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: HashSet<u64> = exact.iter().take(10).map(|e| e.1).collect();
            let found = index.search(q, 10, None).unwrap();
            hits += found.iter().filter(|(k, _)| truth.contains(k)).count();
        }
        hits as f64 / (queries.len() * 10) as f64
    }

    /// Every stored vector under its key, as calibration reads them from the database.
    fn all(base: &[Vec<f32>]) -> impl Iterator<Item = Result<(u64, Vec<f32>), String>> + '_ {
        base.iter()
            .enumerate()
            .map(|(i, v)| Ok((i as u64, v.clone())))
    }

    /// A thin graph (M = 4) over 32-d vectors, searched from `least` up to `most`.
    fn sparse(scalar: VectorScalar, least: usize, most: usize, target: f64) -> VectorSettings {
        VectorSettings {
            dimensions: 32,
            scalar,
            connectivity: 4,
            expansion_add: 16,
            expansion_search: least,
            expansion_search_max: most,
            recall_target: target,
        }
    }

    /// An index in `dir` holding `n` random vectors under keys 0..n, and the vectors.
    fn filled(
        dir: &Path,
        settings: VectorSettings,
        n: usize,
        seed: u64,
    ) -> (VectorIndex, Vec<Vec<f32>>) {
        let (index, _) = VectorIndex::open(dir, settings).unwrap();
        let base = random_vectors(n, seed);
        add_numbered(&index, &base);
        (index, base)
    }

    /// Adds `base` under keys 0..n.
    fn add_numbered(index: &VectorIndex, base: &[Vec<f32>]) {
        let items: Vec<(u64, &[f32])> = base
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice()))
            .collect();
        index.add(&items).unwrap();
    }

    #[test]
    fn calibration_raises_the_search_list_until_recall_reaches_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let settings = sparse(VectorScalar::F32, 4, 1024, 0.95);
        let (index, base) = filled(dir.path(), settings, 4000, 1);
        let fresh = random_vectors(100, 2);
        let before = measured_recall(&index, &base, &fresh);
        assert!(
            before < 0.9,
            "the test needs a hard index: recall {before} at 4"
        );
        assert!(index.calibration_due());

        // Probes: the fresh queries above, the latest now as real ones would be, then points
        // between the stored vectors of every 50th key.
        let stored: Vec<Vec<f32>> = base.iter().step_by(50).cloned().collect();
        let c = index.calibrate(&stored, all(&base)).unwrap();
        assert_eq!(c.probes, CALIBRATION_PROBES);
        assert_eq!(c.queries, RECENT_QUERIES);
        assert_eq!(c.vectors, 4000);
        assert!(c.recall >= 0.95, "{c:?}");
        assert!(
            c.expansion_search > 4 && c.expansion_search <= 1024,
            "{c:?}"
        );
        assert_eq!(index.expansion_search(), c.expansion_search);
        assert!(!index.calibration_due());
        let other = random_vectors(100, 3);
        let after = measured_recall(&index, &base, &other);
        assert!(after >= 0.9, "recall on unseen queries {after} at {c:?}");

        // Saved beside the index: a restart searches with the chosen size at once.
        index.save(1).unwrap();
        drop(index);
        let (index, _) = VectorIndex::open(dir.path(), settings).unwrap();
        assert_eq!(index.expansion_search(), c.expansion_search);
        assert_eq!(index.calibration(), Some(c));
        assert!(!index.calibration_due());

        // Growing by more than a tenth makes it due again.
        let more = random_vectors(500, 4);
        let items: Vec<(u64, &[f32])> = more
            .iter()
            .enumerate()
            .map(|(i, v)| (10_000 + i as u64, v.as_slice()))
            .collect();
        index.add(&items).unwrap();
        assert!(index.calibration_due());

        // Another target forgets the old choice; 0 turns calibration off.
        drop(index);
        let off = VectorSettings {
            recall_target: 0.0,
            ..settings
        };
        let (index, _) = VectorIndex::open(dir.path(), off).unwrap();
        assert_eq!(index.expansion_search(), 4);
        assert!(!index.calibration_due());
    }

    #[test]
    fn the_search_list_stops_within_an_eighth_of_the_shortest_that_reaches_the_target() {
        // Recall as the 1M collection measured it: 0.940 at 512, 0.970 at 1024.
        let curve = |list: usize| (0.94 + 0.03 * (list as f64 / 512.0).log2()).min(1.0);
        let needed = (1..4096).find(|&l| curve(l) >= 0.95).unwrap();
        let mut tried = Vec::new();
        let (list, recall) = shortest_list(128, 2048, 0.95, |l| {
            tried.push(l);
            Ok(curve(l))
        })
        .unwrap();
        assert!(recall >= 0.95 && recall == curve(list), "{list} {recall}");
        assert!(
            list >= needed && list - needed <= list / 8,
            "{list} for {needed}, tried {tried:?}"
        );
        assert!(tried.len() <= 8, "{tried:?}");

        // Reached at the start: nothing longer is tried.
        assert_eq!(
            shortest_list(128, 2048, 0.5, |_| Ok(0.9)).unwrap(),
            (128, 0.9)
        );
        // Never reached: the longest list allowed, and its recall.
        let (list, recall) = shortest_list(100, 1000, 0.99, |l| Ok(l as f64 / 2000.0)).unwrap();
        assert_eq!((list, recall), (1000, 0.5));
        // A failed measurement is the calibration's error.
        assert!(shortest_list(8, 64, 0.9, |_| Err("probe failed".into())).is_err());
    }

    #[test]
    fn a_target_out_of_reach_stops_at_the_largest_search_list() {
        let dir = tempfile::tempdir().unwrap();
        let (index, base) = filled(dir.path(), sparse(VectorScalar::Bf16, 2, 6, 1.0), 3000, 5);
        let stored: Vec<Vec<f32>> = base.iter().step_by(30).cloned().collect();
        let c = index.calibrate(&stored, all(&base)).unwrap();
        assert_eq!((c.probes, c.queries), (50, 0), "{c:?}");
        assert_eq!(c.expansion_search, 6, "2, 4, then capped at 6: {c:?}");
        assert!(c.recall < 1.0, "{c:?}");
        assert_eq!(index.expansion_search(), 6);

        // Measured without real queries, it is measured again once enough have been asked.
        assert!(!index.calibration_due());
        for q in random_vectors(RECENT_QUERIES, 6) {
            index.search(&q, 10, None).unwrap();
        }
        assert!(index.calibration_due());
        assert_eq!(
            index.calibrate(&stored, all(&base)).unwrap().queries,
            RECENT_QUERIES
        );
        assert!(!index.calibration_due());
    }

    #[test]
    fn exact_answers_count_only_what_the_index_holds() {
        let dir = tempfile::tempdir().unwrap();
        // A list a quarter of the collection: the index finds nearly every true neighbour.
        let (index, base) = filled(
            dir.path(),
            sparse(VectorScalar::F32, 512, 512, 0.9),
            2000,
            7,
        );
        let stored: Vec<Vec<f32>> = base.iter().step_by(20).cloned().collect();
        // Rows the index has not applied yet, each the very point of one probe: were they
        // counted, every probe would miss one true neighbour and recall could not pass 0.9.
        let pending: Vec<Vec<f32>> = stored
            .chunks_exact(2)
            .map(|p| p[0].iter().zip(&p[1]).map(|(a, b)| a + b).collect())
            .collect();
        let rows = all(&base).chain(
            pending
                .iter()
                .enumerate()
                .map(|(i, v)| Ok((90_000 + i as u64, v.clone()))),
        );
        let c = index.calibrate(&stored, rows).unwrap();
        assert_eq!(c.probes, 50);
        assert!(c.recall > 0.95, "{c:?}");

        // A row that cannot be read stops the calibration and keeps the choice before it.
        let failed = index.calibrate(&stored, std::iter::once(Err("disk read failed".into())));
        assert_eq!(failed.unwrap_err(), "disk read failed");
        assert_eq!(index.calibration(), Some(c));
    }
}
