//! Text tasks on top of a served model: tokenise with the model's `tokenizer.json`, run the
//! model in batches of similar length, and pool or classify.
//!
//! A model declares its task in `config.pbtxt`:
//! `parameters { key: "task" value: { string_value: "embedding" } }` (with optional
//! `pooling` = `mean`|`cls`, `normalize` = `true`|`false`, `max_length`), or `"classification"`
//! with an output that names its labels through `label_filename`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationParams};

use super::model_config::ModelConfig;
use super::tensor::{NamedTensor, TensorData};

/// Tokens kept per text unless the model says otherwise (sentence-transformers' setting for
/// MiniLM; the `tokenizer.json` shipped with it pads and truncates to 128 instead).
pub const DEFAULT_MAX_LENGTH: usize = 256;

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real (unpadded) tokens.
    Mean,
    /// The first token's vector.
    Cls,
}

/// What the model does with text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Sentence embeddings from a `[batch, tokens, dim]` output.
    Embedding {
        /// The output holding token vectors.
        output: String,
        /// Pooling.
        pooling: Pooling,
        /// L2-normalise the result.
        normalize: bool,
    },
    /// Class scores from a `[batch, classes]` output.
    Classification {
        /// The output holding the scores.
        output: String,
        /// Label of each class, in index order.
        labels: Vec<String>,
    },
}

/// A model's text task and tokenizer.
pub struct TextTask {
    /// The task.
    pub task: Task,
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, to measure and split long texts.
    untruncated: Tokenizer,
    pad_id: i64,
    pad_type_id: i64,
    /// Inputs the model takes, among `input_ids`, `attention_mask`, `token_type_ids`.
    takes_mask: bool,
    takes_types: bool,
    /// Largest batch per model run.
    max_batch: usize,
    /// Tokens kept per text.
    max_length: usize,
    /// Most padded tokens (rows × longest text) in one model run.
    max_batch_tokens: usize,
    /// What one more model run costs, in padded tokens (see [`TextTask::plan`]).
    run_overhead_tokens: usize,
}

/// One tokenised text, padded later to its run's longest text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    ids: Vec<i64>,
    mask: Vec<i64>,
    types: Vec<i64>,
}

impl Encoded {
    /// Its tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it has no tokens (a tokenizer without special tokens on an empty text).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Padded tokens one model run costs on the CPU beyond its real work, measured with
/// all-MiniLM-L6-v2 on 2 threads: a run takes about 1 ms plus 0.12 to 0.18 ms per padded token.
const DEFAULT_RUN_OVERHEAD_TOKENS: usize = 8;

fn parameter<'a>(config: &'a ModelConfig, key: &str) -> Option<&'a str> {
    config.parameters.get(key).map(|p| p.string_value.as_str())
}

impl TextTask {
    /// The model's text task, if its configuration declares one. `model_dir` is the model's
    /// folder (labels files are read from it); the tokenizer is the first of `tokenizers` that
    /// exists.
    pub fn from_config(
        model_dir: &Path,
        tokenizers: &[PathBuf],
        config: &ModelConfig,
    ) -> Result<Option<TextTask>, String> {
        let Some(kind) = parameter(config, "task") else {
            return Ok(None);
        };
        let output_of = |wanted: Option<&str>| -> Result<String, String> {
            match wanted {
                Some(name) => Ok(name.to_string()),
                None => config
                    .output
                    .first()
                    .map(|o| o.name.clone())
                    .ok_or_else(|| "the model has no outputs".to_string()),
            }
        };
        let task = match kind {
            "embedding" => Task::Embedding {
                output: output_of(parameter(config, "output"))?,
                pooling: match parameter(config, "pooling").unwrap_or("mean") {
                    "mean" => Pooling::Mean,
                    "cls" => Pooling::Cls,
                    other => {
                        return Err(format!(
                            "parameter pooling is {other:?}; expected \"mean\" or \"cls\""
                        ));
                    }
                },
                normalize: match parameter(config, "normalize").unwrap_or("true") {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(format!(
                            "parameter normalize is {other:?}; expected \"true\" or \"false\""
                        ));
                    }
                },
            },
            "classification" => {
                let output = config
                    .output
                    .iter()
                    .find(|o| !o.label_filename.is_empty())
                    .ok_or("a classification model needs an output with label_filename")?;
                let labels_path = model_dir.join(&output.label_filename);
                let labels: Vec<String> = std::fs::read_to_string(&labels_path)
                    .map_err(|e| format!("cannot read {}: {e}", labels_path.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                if labels.is_empty() {
                    return Err(format!("{} holds no labels", labels_path.display()));
                }
                Task::Classification {
                    output: output.name.clone(),
                    labels,
                }
            }
            other => {
                return Err(format!(
                    "parameter task is {other:?}; expected \"embedding\" or \"classification\""
                ));
            }
        };
        let max_length = match parameter(config, "max_length") {
            None => DEFAULT_MAX_LENGTH,
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("parameter max_length is {v:?}; expected a positive integer")
            })?,
        };
        let path = tokenizers.iter().find(|p| p.is_file()).ok_or_else(|| {
            let tried: Vec<String> = tokenizers.iter().map(|p| p.display().to_string()).collect();
            format!(
                "task {kind:?} needs a tokenizer: none of {} exists",
                tried.join(", ")
            )
        })?;
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let (pad_id, pad_type_id) = tokenizer
            .get_padding()
            .map_or((0, 0), |p| (i64::from(p.pad_id), i64::from(p.pad_type_id)));
        // Padding is done per batch here, to the batch's longest text.
        tokenizer.with_padding(None);
        let mut untruncated = tokenizer.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| format!("tokenizer truncation: {e}"))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("tokenizer truncation: {e}"))?;
        if config.max_batch_size <= 0 {
            return Err("text tasks need a model that batches (max_batch_size > 0)".into());
        }
        let has = |name: &str| config.input.iter().any(|i| i.name == name);
        if !has("input_ids") {
            return Err("text tasks need an input named input_ids".into());
        }
        Ok(Some(TextTask {
            task,
            tokenizer,
            untruncated,
            pad_id,
            pad_type_id,
            takes_mask: has("attention_mask"),
            takes_types: has("token_type_ids"),
            max_batch: usize::try_from(config.max_batch_size).unwrap_or(1),
            max_batch_tokens: match parameter(config, "max_batch_tokens") {
                None => usize::MAX,
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= max_length)
                    .ok_or_else(|| format!("parameter max_batch_tokens is {v:?}; expected an integer of at least max_length ({max_length})"))?,
            },
            max_length,
            run_overhead_tokens: match parameter(config, "run_overhead_tokens") {
                None => DEFAULT_RUN_OVERHEAD_TOKENS,
                Some(v) => v.parse::<usize>().map_err(|_| {
                    format!("parameter run_overhead_tokens is {v:?}; expected a whole number of tokens")
                })?,
            },
        }))
    }

    /// Tokens kept per text, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokens the model adds around every text (such as `[CLS]` and `[SEP]`).
    pub fn special_tokens(&self) -> usize {
        use tokenizers::PostProcessor;
        self.tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false))
    }

    /// Byte ranges of the tokens of `text`, without special tokens and without truncation.
    pub fn token_spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        self.untruncated
            .encode(text, false)
            .map(|e| e.get_offsets().iter().map(|(a, b)| *a..*b).collect())
            .unwrap_or_default()
    }

    /// Tokenises `texts`, truncated to the model's `max_length`, or to `max_length` when it is
    /// given (fewer tokens, never more).
    pub fn tokenize(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<Vec<Encoded>, String> {
        let shorter;
        let tokenizer = match max_length {
            Some(n) if n == 0 || n > self.max_length => {
                return Err(format!(
                    "max_length is {n}; this model takes 1 to {} tokens per text",
                    self.max_length
                ));
            }
            Some(n) if n < self.max_length => {
                let mut t = self.tokenizer.clone();
                t.with_truncation(Some(TruncationParams {
                    max_length: n,
                    ..TruncationParams::default()
                }))
                .map_err(|e| format!("tokenizer truncation: {e}"))?;
                shorter = t;
                &shorter
            }
            _ => &self.tokenizer,
        };
        let widen = |v: &[u32]| v.iter().map(|x| i64::from(*x)).collect::<Vec<i64>>();
        let encodings = match texts {
            // One text (the common request) skips the batch call's thread pool.
            [one] => tokenizer.encode(one.as_str(), true).map(|e| vec![e]),
            _ => tokenizer.encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true),
        }
        .map_err(|e| format!("tokenizer: {e}"))?;
        Ok(encodings
            .iter()
            .map(|e| Encoded {
                ids: widen(e.get_ids()),
                mask: widen(e.get_attention_mask()),
                types: widen(e.get_type_ids()),
            })
            .collect())
    }

    /// Cuts texts of `lengths` tokens, shortest first, into model runs at the least estimated
    /// cost: each run costs its padded tokens (rows × its longest text) plus a fixed overhead.
    /// Padding is real compute, so texts of very different lengths go to different runs; the
    /// overhead keeps runs from getting needlessly small. Runs hold at most `max_batch_size`
    /// texts and `max_batch_tokens` padded tokens.
    pub fn plan(&self, lengths: &[usize]) -> Vec<Range<usize>> {
        let n = lengths.len();
        // best[end]: the cheapest plan for the first `end` texts; from[end]: its last run's start.
        let mut best = vec![usize::MAX; n + 1];
        let mut from = vec![0; n + 1];
        best[0] = 0;
        for end in 1..=n {
            let width = lengths[end - 1].max(1);
            for start in (0..end).rev() {
                let rows = end - start;
                if rows > self.max_batch || (rows > 1 && rows * width > self.max_batch_tokens) {
                    break;
                }
                let cost = best[start]
                    .saturating_add(self.run_overhead_tokens)
                    .saturating_add(rows * width);
                if cost < best[end] {
                    best[end] = cost;
                    from[end] = start;
                }
            }
        }
        let mut runs = Vec::new();
        let mut end = n;
        while end > 0 {
            runs.push(from[end]..end);
            end = from[end];
        }
        runs.reverse();
        runs
    }

    /// Which of several requests' texts to run now, the oldest request first: plans runs
    /// over all their texts and takes the runs that hold the oldest request's texts, with the
    /// single-text requests that share them. The others wait for a run of their own length
    /// instead of padding this one; a request of many texts is only planned when it is the
    /// oldest, so none is ever answered in part.
    pub fn select(&self, requests: &[&[Encoded]]) -> Vec<usize> {
        let mut order: Vec<(usize, usize)> = requests
            .iter()
            .enumerate()
            .filter(|(i, texts)| *i == 0 || texts.len() == 1)
            .flat_map(|(i, texts)| texts.iter().map(move |e| (i, e.len())))
            .collect();
        order.sort_by_key(|(_, len)| *len);
        let lengths: Vec<usize> = order.iter().map(|(_, len)| *len).collect();
        let mut chosen = vec![0];
        for run in self.plan(&lengths) {
            let members = &order[run];
            if members.iter().any(|(i, _)| *i == 0) {
                chosen.extend(members.iter().map(|(i, _)| *i));
            }
        }
        chosen.sort_unstable();
        chosen.dedup();
        chosen
    }

    /// The model inputs for one run: `texts` padded to the longest of them.
    pub fn assemble(&self, texts: &[&Encoded]) -> Vec<NamedTensor> {
        let width = texts.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(texts.len() * width);
        let mut mask = Vec::with_capacity(texts.len() * width);
        let mut types = Vec::with_capacity(texts.len() * width);
        for e in texts {
            let pad = width - e.len();
            ids.extend_from_slice(&e.ids);
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            mask.extend_from_slice(&e.mask);
            mask.extend(std::iter::repeat_n(0, pad));
            types.extend_from_slice(&e.types);
            types.extend(std::iter::repeat_n(self.pad_type_id, pad));
        }
        let shape = vec![texts.len() as i64, width as i64];
        let tensor = |name: &str, data: Vec<i64>| NamedTensor {
            name: name.to_string(),
            shape: shape.clone(),
            data: TensorData::I64(data),
        };
        let mut inputs = vec![tensor("input_ids", ids)];
        if self.takes_mask {
            inputs.push(tensor("attention_mask", mask));
        }
        if self.takes_types {
            inputs.push(tensor("token_type_ids", types));
        }
        inputs
    }
}

/// Pools token vectors `[rows, tokens, dim]` into one vector per row.
pub fn pool(
    hidden: &NamedTensor,
    lengths: &[usize],
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<Vec<f32>>, String> {
    let TensorData::F32(values) = &hidden.data else {
        return Err(format!("output {:?} is not FP32", hidden.name));
    };
    let [rows, tokens, dim] = hidden.shape[..] else {
        return Err(format!(
            "output {:?} has shape {:?}, not [batch, tokens, dim]",
            hidden.name, hidden.shape
        ));
    };
    let (rows, tokens, dim) = (rows as usize, tokens as usize, dim as usize);
    let mut out = Vec::with_capacity(rows);
    for (row, len) in lengths.iter().enumerate().take(rows) {
        let base = row * tokens * dim;
        let mut v = vec![0f32; dim];
        match pooling {
            Pooling::Cls => v.copy_from_slice(&values[base..base + dim]),
            Pooling::Mean => {
                let n = (*len).clamp(1, tokens);
                for t in 0..n {
                    let at = base + t * dim;
                    v.iter_mut()
                        .zip(&values[at..at + dim])
                        .for_each(|(a, b)| *a += b);
                }
                v.iter_mut().for_each(|a| *a /= n as f32);
            }
        }
        if normalize {
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
        }
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::model_config::ModelConfig;

    fn minilm_task(extra: &str) -> TextTask {
        let vendor = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/models/all-MiniLM-L6-v2");
        let config = ModelConfig::parse(&format!(
            r#"max_batch_size: 4
               input [ {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }} ]
               output [ {{ name: "h" data_type: TYPE_FP32 dims: [ -1, 384 ] }} ]
               parameters {{ key: "task" value: {{ string_value: "embedding" }} }}
               {extra}"#
        ))
        .unwrap();
        TextTask::from_config(&vendor, &[vendor.join("tokenizer.json")], &config)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn runs_respect_the_batch_size_and_the_token_budget() {
        let task =
            minilm_task(r#"parameters { key: "max_batch_tokens" value: { string_value: "300" } }"#);
        let texts: Vec<String> = (1..=10).map(|n| "word ".repeat(n * 8)).collect();
        let encoded = task.tokenize(&texts, None).unwrap();
        let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
        assert!(lengths.windows(2).all(|w| w[0] < w[1]), "{lengths:?}");
        let runs = task.plan(&lengths);
        let mut seen = Vec::new();
        for run in &runs {
            let members: Vec<&Encoded> = encoded[run.clone()].iter().collect();
            let inputs = task.assemble(&members);
            assert_eq!(inputs.len(), 1, "the model takes input_ids only");
            let [rows, width] = inputs[0].shape[..] else {
                panic!("shape {:?}", inputs[0].shape)
            };
            assert!(rows <= 4, "{rows} rows");
            assert!(rows == 1 || rows * width <= 300, "{rows} x {width}");
            seen.extend(run.clone());
        }
        // Every text once, in order.
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(task.tokenize(&texts, Some(1000)).is_err());
    }

    #[test]
    fn plans_keep_short_and_long_texts_apart_but_runs_not_needlessly_small() {
        let task = minilm_task("");
        // Similar lengths share one run: the overhead outweighs a little padding.
        assert_eq!(task.plan(&[10, 11, 12, 12]), vec![0..4]);
        // Three short texts and one long one: padding the short ones to 200 would cost far
        // more than a second run.
        assert_eq!(task.plan(&[8, 9, 10, 200]), vec![0..3, 3..4]);
        // More texts than max_batch_size: runs of at most 4.
        let plan = task.plan(&[5; 10]);
        assert!(plan.iter().all(|r| r.len() <= 4), "{plan:?}");
        assert_eq!(plan.iter().map(|r| r.len()).sum::<usize>(), 10);
        assert!(task.plan(&[]).is_empty());
    }

    #[test]
    fn the_oldest_request_runs_with_requests_of_its_length() {
        let task = minilm_task("");
        let words = |n: usize| vec!["word ".repeat(n)];
        let encoded: Vec<Vec<Encoded>> = [10, 60, 11, 2, 12]
            .iter()
            .map(|n| task.tokenize(&words(*n), None).unwrap())
            .collect();
        let requests: Vec<&[Encoded]> = encoded.iter().map(Vec::as_slice).collect();
        // The 10-word request runs with the 11- and 12-word ones, not the 60- or 2-word ones.
        assert_eq!(task.select(&requests), vec![0, 2, 4]);
        // A request of several texts joins only as the oldest.
        let many = task
            .tokenize(&[words(10), words(11)].concat(), None)
            .unwrap();
        let requests: Vec<&[Encoded]> = vec![&encoded[0], &many];
        assert_eq!(task.select(&requests), vec![0]);
    }

    #[test]
    fn mean_pooling_ignores_padding_and_normalises() {
        // Two rows, three token slots, dim 2; row 0 has 2 real tokens, row 1 has 1.
        let hidden = NamedTensor {
            name: "h".into(),
            shape: vec![2, 3, 2],
            data: TensorData::F32(vec![
                1.0, 0.0, 3.0, 0.0, 99.0, 99.0, 0.0, 2.0, 99.0, 99.0, 99.0, 99.0,
            ]),
        };
        let v = pool(&hidden, &[2, 1], Pooling::Mean, false).unwrap();
        assert_eq!(v, vec![vec![2.0, 0.0], vec![0.0, 2.0]]);
        let v = pool(&hidden, &[2, 1], Pooling::Mean, true).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let v = pool(&hidden, &[2, 1], Pooling::Cls, false).unwrap();
        assert_eq!(v[0], vec![1.0, 0.0]);
    }
}
