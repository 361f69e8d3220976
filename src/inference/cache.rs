//! The inference response cache: outputs kept by model, version, requested outputs and the
//! exact input bytes, bounded in total size and in age, least recently used evicted first.
//! A model opts in with Triton's `response_cache { enable: true }`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::tensor::NamedTensor;

type Key = [u8; 32];

struct Entry {
    outputs: Vec<NamedTensor>,
    bytes: usize,
    stored: Instant,
    tick: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    by_age: BTreeMap<u64, Key>,
    bytes: usize,
    tick: u64,
}

/// A size- and age-bounded LRU cache of inference outputs.
pub struct ResponseCache {
    max_bytes: usize,
    ttl: Duration,
    state: Mutex<State>,
}

/// The cache key of a request.
pub fn key(model: &str, version: u64, inputs: &[NamedTensor], wanted: &[String]) -> Key {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(model.as_bytes());
    field(&version.to_le_bytes());
    for name in wanted {
        field(name.as_bytes());
    }
    let mut sorted: Vec<&NamedTensor> = inputs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for t in sorted {
        field(t.name.as_bytes());
        field(super::tensor::protocol_name(t.data.data_type()).as_bytes());
        let shape: Vec<u8> = t.shape.iter().flat_map(|d| d.to_le_bytes()).collect();
        field(&shape);
        field(&t.data.to_le_bytes());
    }
    h.finalize().into()
}

impl ResponseCache {
    /// A cache holding at most `max_bytes` of outputs, each for at most `ttl`.
    pub fn new(max_bytes: usize, ttl: Duration) -> ResponseCache {
        ResponseCache {
            max_bytes,
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    /// The outputs stored under `key`, if present and fresh.
    pub fn get(&self, key: &Key) -> Option<Vec<NamedTensor>> {
        let mut s = self.state.lock().ok()?;
        let fresh = s.entries.get(key).map(|e| e.stored.elapsed() < self.ttl)?;
        if !fresh {
            remove(&mut s, key);
            return None;
        }
        s.tick += 1;
        let tick = s.tick;
        let entry = s.entries.get_mut(key)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let outputs = entry.outputs.clone();
        s.by_age.remove(&old);
        s.by_age.insert(tick, *key);
        Some(outputs)
    }

    /// Stores outputs; evicts the least recently used entries to stay within the size bound.
    /// Outputs larger than the whole cache are not stored.
    pub fn put(&self, key: Key, outputs: Vec<NamedTensor>) {
        let bytes: usize = outputs
            .iter()
            .map(|t| t.data.len() * 8 + t.name.len())
            .sum();
        if bytes > self.max_bytes {
            return;
        }
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        remove(&mut s, &key);
        while s.bytes + bytes > self.max_bytes {
            let Some((_, oldest)) = s.by_age.pop_first() else {
                break;
            };
            if let Some(e) = s.entries.remove(&oldest) {
                s.bytes -= e.bytes;
            }
        }
        s.tick += 1;
        let tick = s.tick;
        s.by_age.insert(tick, key);
        s.bytes += bytes;
        s.entries.insert(
            key,
            Entry {
                outputs,
                bytes,
                stored: Instant::now(),
                tick,
            },
        );
    }
}

fn remove(s: &mut State, key: &Key) {
    if let Some(e) = s.entries.remove(key) {
        s.bytes -= e.bytes;
        s.by_age.remove(&e.tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::tensor::TensorData;

    fn tensor(v: f32) -> NamedTensor {
        NamedTensor {
            name: "y".into(),
            shape: vec![1],
            data: TensorData::F32(vec![v]),
        }
    }

    #[test]
    fn keys_depend_on_everything_that_changes_the_answer() {
        let a = key("m", 1, &[tensor(1.0)], &[]);
        assert_eq!(a, key("m", 1, &[tensor(1.0)], &[]));
        assert_ne!(a, key("m", 2, &[tensor(1.0)], &[]));
        assert_ne!(a, key("n", 1, &[tensor(1.0)], &[]));
        assert_ne!(a, key("m", 1, &[tensor(2.0)], &[]));
        assert_ne!(a, key("m", 1, &[tensor(1.0)], &["y".into()]));
    }

    #[test]
    fn evicts_least_recently_used_and_expires() {
        // Each entry is 1 element * 8 + 1 byte of name = 9 bytes; room for two.
        let cache = ResponseCache::new(18, Duration::from_millis(80));
        let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        cache.put(k1, vec![tensor(1.0)]);
        cache.put(k2, vec![tensor(2.0)]);
        assert!(cache.get(&k1).is_some()); // k1 is now the most recent
        cache.put(k3, vec![tensor(3.0)]);
        assert!(
            cache.get(&k2).is_none(),
            "the least recently used entry is evicted"
        );
        assert_eq!(cache.get(&k1), Some(vec![tensor(1.0)]));
        std::thread::sleep(Duration::from_millis(100));
        assert!(cache.get(&k3).is_none(), "entries expire");
    }
}
