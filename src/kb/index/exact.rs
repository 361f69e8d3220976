//! Exact nearest neighbours of many probes in one pass over the stored vectors: the yardstick
//! a vector index's recall is measured against.
//!
//! usearch's own exact search reads every vector once per probe, and through the index's
//! memory mapping at that: at a million chunks, 64 probes took minutes of a core. One pass
//! that scores every vector against all probes at once takes seconds, and it scores the f32
//! vectors the database keeps, so the truth does not depend on the index's scalar kind.

use std::collections::HashSet;

/// The `k` best stored vectors, by cosine similarity, for each of several probes.
pub struct ExactNeighbours {
    /// Probes scaled to unit length, so a dot product over a stored vector's norm is the cosine.
    probes: Vec<Vec<f32>>,
    k: usize,
    /// Per probe, up to `k` (similarity, key), best first.
    best: Vec<Vec<(f32, u64)>>,
}

impl ExactNeighbours {
    /// Starts a pass for `probes`; a probe of zero length has no neighbours.
    pub fn new(probes: &[Vec<f32>], k: usize) -> ExactNeighbours {
        let probes = probes
            .iter()
            .map(|p| {
                let norm = dot(p, p).sqrt();
                // An empty probe matches no stored vector's size.
                if norm > 0.0 && norm.is_finite() {
                    p.iter().map(|x| x / norm).collect()
                } else {
                    Vec::new()
                }
            })
            .collect::<Vec<Vec<f32>>>();
        let best = vec![Vec::with_capacity(k + 1); probes.len()];
        ExactNeighbours { probes, k, best }
    }

    /// Scores one stored vector against every probe. A vector of another size than a probe,
    /// or of zero length, is no one's neighbour.
    pub fn offer(&mut self, key: u64, vector: &[f32]) {
        let norm = dot(vector, vector).sqrt();
        if norm <= 0.0 || !norm.is_finite() {
            return;
        }
        for (probe, best) in self.probes.iter().zip(&mut self.best) {
            if probe.len() != vector.len() {
                continue;
            }
            let similarity = dot(probe, vector) / norm;
            if best.len() == self.k && best.last().is_none_or(|w| similarity <= w.0) {
                continue;
            }
            let at = best.partition_point(|b| b.0 >= similarity);
            best.insert(at, (similarity, key));
            best.truncate(self.k);
        }
    }

    /// The keys of each probe's `k` nearest, in probe order.
    pub fn into_keys(self) -> Vec<HashSet<u64>> {
        self.best
            .into_iter()
            .map(|b| b.into_iter().map(|(_, key)| key).collect())
            .collect()
    }
}

/// A dot product in sixteen independent sums: the compiler may not reorder one float sum,
/// and sixteen lanes let it use vector registers.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut sums = [0f32; LANES];
    let (wide_a, wide_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = wide_a
        .remainder()
        .iter()
        .zip(wide_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in wide_a.zip(wide_b) {
        for lane in 0..LANES {
            sums[lane] += x[lane] * y[lane];
        }
    }
    sums.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_most_similar_directions_whatever_their_length() {
        // Keys 0..40: directions at growing angles from the x axis in the plane, lengths varied
        // so that a dot product alone would rank them differently from cosine; 19 dimensions
        // exercise the lanes and the tail.
        let at = |degrees: f32, length: f32| {
            let mut v = vec![0f32; 19];
            v[0] = degrees.to_radians().cos() * length;
            v[18] = degrees.to_radians().sin() * length;
            v
        };
        let probes = vec![at(0.0, 1.0), at(89.0, 3.0), vec![0.0; 19], vec![1.0; 3]];
        let mut exact = ExactNeighbours::new(&probes, 3);
        for key in (0..40u64).rev() {
            exact.offer(key, &at(key as f32 * 4.0, 1.0 + (key % 5) as f32 * 10.0));
        }
        exact.offer(99, &[0.0; 19]);
        let keys = exact.into_keys();
        assert_eq!(keys[0], HashSet::from([0, 1, 2]), "nearest to 0 degrees");
        assert_eq!(
            keys[1],
            HashSet::from([22, 23, 21]),
            "nearest to 89 degrees"
        );
        assert!(keys[2].is_empty(), "a zero probe has no neighbours");
        assert!(keys[3].is_empty(), "a probe of another size has none");
    }

    #[test]
    fn sixteen_lane_dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 7) as f32 - 2.5).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(
            (dot(&a, &b) - plain).abs() < 1e-3,
            "{} {plain}",
            dot(&a, &b)
        );
    }
}
