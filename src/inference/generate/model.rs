//! The decoder session: its input and output layout, read from the session, a prefill run for
//! one prompt, and one decoding step for a batch of sequences whose caches are padded on the
//! left to a common length.

use std::borrow::Cow;
use std::path::Path;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use super::GenerateError;

/// Names and sizes of the model's inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// `past_key_values.N.key` / `.value`, layer by layer.
    pub past: Vec<String>,
    /// The matching `present.N.key` / `.value`.
    pub present: Vec<String>,
    /// Key/value heads of each cache tensor (dimension 1).
    pub kv_heads: usize,
    /// Size of a head (dimension 3).
    pub head_dim: usize,
    /// The model takes `position_ids` (older exports derive positions themselves).
    pub position_ids: bool,
    /// The logits' last dimension, when the model fixes it.
    pub vocab: Option<usize>,
}

/// A cache row's place in a set of cache tensors.
pub(super) struct CacheRow<'a> {
    /// The cache tensors (one per past input), `[rows, kv_heads, width, head_dim]`.
    pub cache: &'a [DynValue],
    /// The row in them.
    pub row: usize,
    /// Real (unpadded) positions at the end of the row.
    pub len: usize,
}

/// The sessions and their layout.
pub(super) struct Model {
    /// Runs prompts and batched steps, with ONNX Runtime's memory pattern off: their shapes
    /// seldom repeat, and a pattern is planned again for each new shape.
    session: Session,
    /// Runs the steps of a lone sequence, with the memory pattern on, when the model is small
    /// enough to load twice. A lone sequence's shapes do repeat (one per cache length), and for
    /// a small model the planned allocation is a noticeable part of a step (stories260K: ~15%).
    single: Option<Session>,
    layout: Layout,
}

/// Reads the layout from the session's declared inputs and outputs.
fn layout(session: &Session) -> Result<Layout, String> {
    let inputs = session.inputs();
    let outputs = session.outputs();
    let has_input = |name: &str| inputs.iter().any(|i| i.name() == name);
    for required in ["input_ids", "attention_mask"] {
        if !has_input(required) {
            return Err(format!("it has no input {required:?}"));
        }
    }
    let mut layers: Vec<usize> = Vec::new();
    let mut shape: Option<(i64, i64)> = None;
    for input in inputs {
        let name = input.name();
        if ["input_ids", "attention_mask", "position_ids"].contains(&name) {
            continue;
        }
        let layer = name
            .strip_prefix("past_key_values.")
            .and_then(|rest| {
                rest.strip_suffix(".key")
                    .or_else(|| rest.strip_suffix(".value"))
            })
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                format!(
                    "it takes an input {name:?}, which is none of input_ids, attention_mask, \
                     position_ids, past_key_values.N.key/value"
                )
            })?;
        let ValueType::Tensor {
            ty, shape: dims, ..
        } = input.dtype()
        else {
            return Err(format!("its input {name:?} is not a tensor"));
        };
        if *ty != TensorElementType::Float32 {
            return Err(format!(
                "its cache input {name:?} holds {ty}; only float32 caches are supported"
            ));
        }
        let (heads, dim) = match dims.as_ref() {
            [_, heads, _, dim] if *heads > 0 && *dim > 0 => (*heads, *dim),
            _ => {
                return Err(format!(
                    "its cache input {name:?} has shape {dims}; [batch, kv_heads, past, head_dim] \
                     with fixed kv_heads and head_dim is expected"
                ));
            }
        };
        if *shape.get_or_insert((heads, dim)) != (heads, dim) {
            return Err(format!(
                "its cache inputs disagree on kv_heads and head_dim ({name:?} has {dims})"
            ));
        }
        if !layers.contains(&layer) {
            layers.push(layer);
        }
    }
    layers.sort_unstable();
    let Some((heads, dim)) = shape else {
        return Err(
            "it has no past_key_values inputs (a model exported with a KV cache is needed)".into(),
        );
    };
    let mut past = Vec::new();
    let mut present = Vec::new();
    for layer in layers {
        for part in ["key", "value"] {
            let p = format!("past_key_values.{layer}.{part}");
            let q = format!("present.{layer}.{part}");
            if !has_input(&p) {
                return Err(format!("it has no input {p:?}"));
            }
            if !outputs.iter().any(|o| o.name() == q) {
                return Err(format!("it has no output {q:?} to go with {p:?}"));
            }
            past.push(p);
            present.push(q);
        }
    }
    let logits = outputs
        .iter()
        .find(|o| o.name() == "logits")
        .ok_or("it has no output \"logits\"")?;
    let vocab = logits
        .dtype()
        .tensor_shape()
        .and_then(|s| s.last().copied())
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0);
    Ok(Layout {
        past,
        present,
        kv_heads: usize::try_from(heads).map_err(|e| e.to_string())?,
        head_dim: usize::try_from(dim).map_err(|e| e.to_string())?,
        position_ids: has_input("position_ids"),
        vocab,
    })
}

fn ort_err(e: ort::Error) -> String {
    format!("the model run failed: {e}")
}

fn i64_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Model {
    /// Checks that the sessions are a decoder in the exporter layout. `session` has the memory
    /// pattern off; `single`, when given, is the same model with it on.
    pub fn new(
        session: Session,
        single: Option<Session>,
        path: &Path,
    ) -> Result<Model, GenerateError> {
        let layout = layout(&session).map_err(|why| {
            GenerateError::Invalid(format!(
                "{} is not a decoder in the exporter layout with a KV cache: {why}",
                path.display()
            ))
        })?;
        Ok(Model {
            session,
            single,
            layout,
        })
    }

    /// The vocabulary size, when the model declares it.
    pub fn vocab(&self) -> Option<usize> {
        self.layout.vocab
    }

    /// Runs a whole prompt with an empty cache: returns the last position's logits and the
    /// cache, `[1, kv_heads, len, head_dim]` per past input.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<(Vec<f32>, Vec<DynValue>), String> {
        let n = ids.len();
        let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let positions: Vec<i64> = (0..i64_of(n)).collect();
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        inputs.push(("input_ids".into(), tensor_i64([1, n], ids)?));
        inputs.push(("attention_mask".into(), tensor_i64([1, n], vec![1; n])?));
        if self.layout.position_ids {
            inputs.push(("position_ids".into(), tensor_i64([1, n], positions)?));
        }
        let empty = [1, self.layout.kv_heads, 0, self.layout.head_dim];
        for name in &self.layout.past {
            let value = Tensor::<f32>::from_array((empty, Vec::new())).map_err(ort_err)?;
            inputs.push((name.as_str().into(), value.into_dyn().into()));
        }
        let (logits, cache) = run(&mut self.session, &self.layout, inputs, 1)?;
        // The prompt's logits are [1, n, vocab]: only the last position's predicts a token.
        let vocab = logits.len() / n.max(1);
        Ok((logits[logits.len() - vocab..].to_vec(), cache))
    }

    /// Runs one token for every row of a batch. `width` is the cache length (padding included),
    /// `pads[r]` the padding at the start of row `r`, `positions[r]` its next position.
    /// Returns the logits, `[rows, vocab]`, and the cache one position wider.
    pub fn step(
        &mut self,
        cache: &[DynValue],
        width: usize,
        tokens: &[u32],
        positions: &[usize],
        pads: &[usize],
    ) -> Result<(Vec<f32>, Vec<DynValue>), String> {
        let rows = tokens.len();
        let mut mask = vec![1i64; rows * (width + 1)];
        for (r, &pad) in pads.iter().enumerate() {
            mask[r * (width + 1)..r * (width + 1) + pad].fill(0);
        }
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        inputs.push((
            "input_ids".into(),
            tensor_i64([rows, 1], tokens.iter().map(|&t| i64::from(t)).collect())?,
        ));
        inputs.push((
            "attention_mask".into(),
            tensor_i64([rows, width + 1], mask)?,
        ));
        if self.layout.position_ids {
            inputs.push((
                "position_ids".into(),
                tensor_i64([rows, 1], positions.iter().map(|&p| i64_of(p)).collect())?,
            ));
        }
        for (name, value) in self.layout.past.iter().zip(cache) {
            inputs.push((name.as_str().into(), value.into()));
        }
        let session = match &mut self.single {
            Some(single) if rows == 1 => single,
            _ => &mut self.session,
        };
        run(session, &self.layout, inputs, rows)
    }

    /// Builds a batch cache from rows of other caches, each padded on the left to the longest:
    /// returns the tensors, `[rows, kv_heads, width, head_dim]`, and the width.
    pub fn assemble(&self, rows: &[CacheRow<'_>]) -> Result<(Vec<DynValue>, usize), String> {
        let width = rows.iter().map(|r| r.len).max().unwrap_or(0);
        let (heads, dim) = (self.layout.kv_heads, self.layout.head_dim);
        let mut out = Vec::with_capacity(self.layout.past.len());
        for c in 0..self.layout.past.len() {
            let mut data = vec![0f32; rows.len() * heads * width * dim];
            for (r, source) in rows.iter().enumerate() {
                let value = source.cache.get(c).ok_or("a cache row lacks a layer")?;
                let (shape, src) = value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| format!("a cache tensor is not float32: {e}"))?;
                let src_width = shape
                    .get(2)
                    .and_then(|w| usize::try_from(*w).ok())
                    .ok_or("a cache tensor has no length dimension")?;
                if source.len > src_width || src.len() < (source.row + 1) * heads * src_width * dim
                {
                    return Err("a cache row is shorter than it should be".into());
                }
                for h in 0..heads {
                    // Each head's positions are contiguous: copy the real ones to the end.
                    let from =
                        ((source.row * heads + h) * src_width + src_width - source.len) * dim;
                    let to = ((r * heads + h) * width + width - source.len) * dim;
                    let n = source.len * dim;
                    data[to..to + n].copy_from_slice(&src[from..from + n]);
                }
            }
            let tensor = Tensor::<f32>::from_array(([rows.len(), heads, width, dim], data))
                .map_err(ort_err)?;
            out.push(tensor.into_dyn());
        }
        Ok((out, width))
    }
}

/// One run: the logits as a flat vector and the new cache.
fn run(
    session: &mut Session,
    layout: &Layout,
    inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)>,
    rows: usize,
) -> Result<(Vec<f32>, Vec<DynValue>), String> {
    let mut outputs = session.run(inputs).map_err(ort_err)?;
    let logits = outputs
        .get("logits")
        .ok_or("the model produced no logits")?
        .try_extract_tensor::<f32>()
        .map_err(|e| format!("the logits are not float32: {e}"))?
        .1
        .to_vec();
    if logits.is_empty() || logits.len() % rows != 0 {
        return Err(format!(
            "the model produced {} logits for {rows} rows",
            logits.len()
        ));
    }
    let cache = layout
        .present
        .iter()
        .map(|name| {
            outputs
                .remove(name)
                .ok_or_else(|| format!("the model produced no {name:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((logits, cache))
}

fn tensor_i64(shape: [usize; 2], data: Vec<i64>) -> Result<SessionInputValue<'static>, String> {
    Ok(Tensor::<i64>::from_array((shape, data))
        .map_err(ort_err)?
        .into_dyn()
        .into())
}
