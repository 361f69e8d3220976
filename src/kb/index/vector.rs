//! The vector index of one collection: usearch HNSW with cosine distance, keyed by chunk id.
//!
//! The file on disk is `vectors-<seq>.usearch`, where `<seq>` is the last change of the
//! `index_changes` log it holds: written to a temporary name, synced and renamed, so the file
//! and the position it records can never disagree.
//!
//! At start the file is memory-mapped read-only, so opening a million vectors costs
//! milliseconds and searches page in only what they touch. The first change loads a writable
//! copy beside it (searches keep using the mapping meanwhile) and swaps it in.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

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
    /// Candidates while searching.
    pub expansion_search: usize,
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
}

const PREFIX: &str = "vectors-";
/// Vectors added at once from which the insert is spread over threads.
const PARALLEL_ADD: usize = 256;
const SUFFIX: &str = ".usearch";

fn options(s: &VectorSettings) -> IndexOptions {
    IndexOptions {
        dimensions: s.dimensions,
        metric: MetricKind::Cos,
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
        index.change_expansion_search(settings.expansion_search);
        Ok((
            VectorIndex {
                dir: dir.to_path_buf(),
                settings,
                index: RwLock::new(index),
                mapped: Mutex::new(mapped),
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
        loaded.change_expansion_search(self.settings.expansion_search);
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
                let added = match self.settings.scalar {
                    VectorScalar::I8 => index.add(*key, &quantise(vector)),
                    _ => index.add(*key, vector),
                };
                added.map_err(|e| format!("cannot add chunk {key} to the vector index: {e}"))?;
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
        empty.change_expansion_search(self.settings.expansion_search);
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
        let matches = match (self.settings.scalar, keep) {
            (VectorScalar::I8, None) => index.search(&quantise(query), k),
            (VectorScalar::I8, Some(f)) => index.filtered_search(&quantise(query), k, f),
            (_, None) => index.search(query, k),
            (_, Some(f)) => index.filtered_search(query, k, f),
        }
        .map_err(|e| format!("vector search failed: {e}"))?;
        Ok(matches.keys.into_iter().zip(matches.distances).collect())
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

/// Scales a vector so its largest component is ±127: usearch's own conversion assumes unit
/// components and keeps only a few bits of an embedding's small values.
fn quantise(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
    v.iter().map(|x| (x * scale).round() as i8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> VectorSettings {
        VectorSettings {
            dimensions: 4,
            scalar: VectorScalar::F32,
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 64,
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
}
