//! Choosing the next token from logits: greedy, or temperature sampling narrowed by top-k and
//! top-p, drawn from a seeded ChaCha generator so that a seed reproduces a completion.

use std::cmp::Ordering;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::{GenerateError, Sampling};

/// One request's token chooser.
pub(super) struct Sampler {
    /// `None`: greedy.
    random: Option<Random>,
}

struct Random {
    inverse_temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    rng: ChaCha8Rng,
    /// (scaled logit, then weight; token id), reused between steps.
    candidates: Vec<(f64, u32)>,
}

impl Sampler {
    /// Checks the parameters and seeds the generator.
    pub fn new(s: &Sampling) -> Result<Sampler, GenerateError> {
        if !s.temperature.is_finite() || s.temperature < 0.0 {
            return Err(GenerateError::Invalid(format!(
                "temperature must be a number of at least 0, not {}",
                s.temperature
            )));
        }
        if let Some(p) = s.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(GenerateError::Invalid(format!(
                "top_p must be above 0 and at most 1, not {p}"
            )));
        }
        if s.temperature == 0.0 {
            return Ok(Sampler { random: None });
        }
        let seed = match s.seed {
            Some(seed) => seed,
            None => {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).map_err(|e| {
                    GenerateError::Internal(format!("no randomness available: {e}"))
                })?;
                u64::from_le_bytes(bytes)
            }
        };
        Ok(Sampler {
            random: Some(Random {
                inverse_temperature: 1.0 / f64::from(s.temperature),
                top_k: s.top_k.filter(|k| *k > 0),
                top_p: s.top_p.map(f64::from).filter(|p| *p < 1.0),
                rng: ChaCha8Rng::seed_from_u64(seed),
                candidates: Vec::new(),
            }),
        })
    }

    /// The next token, or `None` when no logit is a number.
    pub fn sample(&mut self, logits: &[f32]) -> Option<u32> {
        match &mut self.random {
            None => argmax(logits),
            Some(random) => random.sample(logits),
        }
    }
}

/// The most likely token; the lowest id among equals. NaN never wins.
pub(super) fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.and_then(|(i, _)| u32::try_from(i).ok())
}

/// Higher score first, then the lower id: a total order, so that the same logits always give
/// the same candidate list and the same seed the same draw.
fn by_score(a: &(f64, u32), b: &(f64, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl Random {
    fn sample(&mut self, logits: &[f32]) -> Option<u32> {
        let c = &mut self.candidates;
        c.clear();
        // -inf (a masked token) has probability 0; NaN is nobody's.
        c.extend(
            logits
                .iter()
                .zip(0u32..)
                .filter(|(l, _)| l.is_finite())
                .map(|(l, i)| (f64::from(*l) * self.inverse_temperature, i)),
        );
        if c.is_empty() {
            return None;
        }
        let mut sorted = false;
        if let Some(k) = self.top_k
            && k < c.len()
        {
            c.select_nth_unstable_by(k - 1, by_score);
            c.truncate(k);
            c.sort_unstable_by(by_score);
            sorted = true;
        }
        if self.top_p.is_some() && !sorted {
            c.sort_unstable_by(by_score);
        }
        let max = c.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for x in c.iter_mut() {
            x.0 = (x.0 - max).exp();
            total += x.0;
        }
        if let Some(p) = self.top_p {
            // The smallest set of the most likely tokens holding at least p of the mass.
            let want = p * total;
            let mut mass = 0.0;
            let mut keep = c.len();
            for (i, x) in c.iter().enumerate() {
                mass += x.0;
                if mass >= want {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
            total = c.iter().map(|x| x.0).sum();
        }
        // 53 random bits: a uniform draw in [0, 1).
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let target = u * total;
        let mut acc = 0.0;
        for x in c.iter() {
            acc += x.0;
            if target < acc {
                return Some(x.1);
            }
        }
        // Rounding left the draw past the last sum: the last candidate.
        c.last().map(|x| x.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64) -> Sampling {
        Sampling {
            temperature,
            top_k,
            top_p,
            seed: Some(seed),
        }
    }

    #[test]
    fn greedy_takes_the_lowest_id_among_equal_maxima() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, -1.0, f32::NAN]), Some(1));
        assert_eq!(argmax(&[f32::NAN]), None);
        let mut s = Sampler::new(&Sampling::greedy()).expect("sampler");
        assert_eq!(s.sample(&[0.5, 0.1, 0.9, 0.9]), Some(2));
    }

    #[test]
    fn parameters_are_checked() {
        for bad in [
            sampling(-1.0, None, None, 0),
            sampling(f32::NAN, None, None, 0),
            sampling(1.0, None, Some(0.0), 0),
            sampling(1.0, None, Some(1.5), 0),
        ] {
            assert!(
                matches!(Sampler::new(&bad), Err(GenerateError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let logits: Vec<f32> = (0..64).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(&sampling(1.0, None, None, seed)).expect("sampler");
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_and_top_p_keep_only_the_likely_tokens() {
        let logits = [0.0, 5.0, 4.9, 1.0, 4.8];
        let mut s = Sampler::new(&sampling(1.0, Some(2), None, 1)).expect("sampler");
        for _ in 0..200 {
            let t = s.sample(&logits).expect("token");
            assert!(t == 1 || t == 2, "{t}");
        }
        // Token 1 alone holds ~37% of the mass, 1 and 2 ~70%: p = 0.5 keeps those two.
        let mut s = Sampler::new(&sampling(1.0, None, Some(0.5), 1)).expect("sampler");
        let mut seen = [0; 5];
        for _ in 0..400 {
            seen[s.sample(&logits).expect("token") as usize] += 1;
        }
        assert_eq!(seen[0] + seen[3] + seen[4], 0, "{seen:?}");
        assert!(seen[1] > 0 && seen[2] > 0, "{seen:?}");
    }

    #[test]
    fn low_temperature_approaches_greedy_and_masked_tokens_never_come() {
        let logits = [1.0, 2.0, f32::NEG_INFINITY, 1.5];
        let mut s = Sampler::new(&sampling(1e-6, None, None, 3)).expect("sampler");
        for _ in 0..100 {
            assert_eq!(s.sample(&logits), Some(1));
        }
        let mut s = Sampler::new(&sampling(5.0, None, None, 3)).expect("sampler");
        for _ in 0..500 {
            assert_ne!(s.sample(&logits), Some(2));
        }
    }

    #[test]
    fn distribution_follows_softmax() {
        // p(0) = 1 / (1 + e) ≈ 0.269 at temperature 1.
        let logits = [0.0, 1.0];
        let mut s = Sampler::new(&sampling(1.0, None, None, 11)).expect("sampler");
        let n = 20_000;
        let zeros = (0..n).filter(|_| s.sample(&logits) == Some(0)).count();
        let share = zeros as f64 / n as f64;
        assert!((share - 0.2689).abs() < 0.02, "{share}");
    }
}
