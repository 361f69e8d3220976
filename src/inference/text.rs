//! Text tasks on top of a served model: tokenise with the model's `tokenizer.json`, run the
//! model in batches of similar length, and pool or classify.
//!
//! A model declares its task in `config.pbtxt`:
//! `parameters { key: "task" value: { string_value: "embedding" } }` (with optional
//! `pooling` = `mean`|`cls`, `normalize` = `true`|`false`, `max_length`), or `"classification"`
//! with an output that names its labels through `label_filename`.

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
}

/// Texts encoded and ready to run: tensors per batch, with the original position of each row.
pub struct Batch {
    /// The model inputs.
    pub inputs: Vec<NamedTensor>,
    /// For each row, its index in the request.
    pub rows: Vec<usize>,
    /// For each row, its real token count.
    pub lengths: Vec<usize>,
}

fn parameter<'a>(config: &'a ModelConfig, key: &str) -> Option<&'a str> {
    config.parameters.get(key).map(|p| p.string_value.as_str())
}

impl TextTask {
    /// The model's text task, if its configuration declares one. `model_dir` is the model's
    /// folder and `version_dir` the version's; `tokenizer.json` is looked for in the version
    /// folder first.
    pub fn from_config(
        model_dir: &Path,
        version_dir: &Path,
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
        let path: PathBuf = [
            version_dir.join("tokenizer.json"),
            model_dir.join("tokenizer.json"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "task {kind:?} needs tokenizer.json in {} or {}",
                version_dir.display(),
                model_dir.display()
            )
        })?;
        let mut tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let (pad_id, pad_type_id) = tokenizer
            .get_padding()
            .map_or((0, 0), |p| (i64::from(p.pad_id), i64::from(p.pad_type_id)));
        // Padding is done per batch here, to the batch's longest text.
        tokenizer.with_padding(None);
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
        }))
    }

    /// Tokenises `texts` and groups them into batches of similar length (padding costs real
    /// compute: random batches carry far more padding than real tokens).
    /// `max_length`, when given, keeps fewer tokens than the model's setting (never more).
    pub fn encode(
        &self,
        texts: &[String],
        max_length: Option<usize>,
    ) -> Result<Vec<Batch>, String> {
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
        let encodings = tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| format!("tokenizer: {e}"))?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|i| encodings[*i].get_ids().len());
        // Runs of at most max_batch texts and max_batch_tokens padded tokens; texts are in
        // length order, so a run's width is its last text's length.
        let mut runs: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        for end in 1..=order.len() {
            let width = encodings[order[end - 1]].get_ids().len().max(1);
            let rows = end - start;
            if rows > self.max_batch || (rows > 1 && rows * width > self.max_batch_tokens) {
                runs.push(&order[start..end - 1]);
                start = end - 1;
            }
        }
        if start < order.len() {
            runs.push(&order[start..]);
        }
        let mut batches = Vec::new();
        for rows in runs {
            let lengths: Vec<usize> = rows.iter().map(|i| encodings[*i].get_ids().len()).collect();
            let width = lengths.iter().copied().max().unwrap_or(0).max(1);
            let mut ids = Vec::with_capacity(rows.len() * width);
            let mut mask = Vec::with_capacity(rows.len() * width);
            let mut types = Vec::with_capacity(rows.len() * width);
            for i in rows {
                let e = &encodings[*i];
                let n = e.get_ids().len();
                ids.extend(e.get_ids().iter().map(|v| i64::from(*v)));
                mask.extend(e.get_attention_mask().iter().map(|v| i64::from(*v)));
                types.extend(e.get_type_ids().iter().map(|v| i64::from(*v)));
                ids.extend(std::iter::repeat_n(self.pad_id, width - n));
                mask.extend(std::iter::repeat_n(0, width - n));
                types.extend(std::iter::repeat_n(self.pad_type_id, width - n));
            }
            let shape = vec![rows.len() as i64, width as i64];
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
            batches.push(Batch {
                inputs,
                rows: rows.to_vec(),
                lengths,
            });
        }
        Ok(batches)
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

    #[test]
    fn runs_respect_the_batch_size_and_the_token_budget() {
        let vendor = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/models/all-MiniLM-L6-v2");
        let config = ModelConfig::parse(
            r#"max_batch_size: 4
               input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] } ]
               output [ { name: "h" data_type: TYPE_FP32 dims: [ -1, 384 ] } ]
               parameters { key: "task" value: { string_value: "embedding" } }
               parameters { key: "max_batch_tokens" value: { string_value: "300" } }"#,
        )
        .unwrap();
        let task = TextTask::from_config(&vendor, &vendor, &config)
            .unwrap()
            .unwrap();
        let texts: Vec<String> = (1..=10).map(|n| "word ".repeat(n * 8)).collect();
        let batches = task.encode(&texts, None).unwrap();
        let mut seen: Vec<usize> = Vec::new();
        for b in &batches {
            let width = b.inputs[0].shape[1] as usize;
            assert!(b.rows.len() <= 4, "{} rows", b.rows.len());
            assert!(
                b.rows.len() == 1 || b.rows.len() * width <= 300,
                "{} x {width}",
                b.rows.len()
            );
            assert_eq!(b.inputs.len(), 1, "the model takes input_ids only");
            seen.extend(&b.rows);
        }
        // Every text once, shortest first.
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(task.encode(&texts, Some(1000)).is_err());
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
