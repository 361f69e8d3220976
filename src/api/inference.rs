//! `POST /api/v1/inference`: text in, a label or a vector out, per input.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, Caller};
use crate::daemon::App;
use crate::error::Problem;
use crate::inference::text::Task;

/// Most texts in one request.
const MAX_TEXTS: usize = 2048;

/// The request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    text: Option<String>,
    texts: Option<Vec<String>>,
    model_name: String,
    max_length: Option<usize>,
}

/// Classifies or embeds `text` or `texts` with `model_name`; each result carries the label (or
/// vector), its confidence (classification) and the request's latency.
pub async fn infer(
    State(app): State<Arc<App>>,
    _c: Caller,
    ApiJson(req): ApiJson<InferenceRequest>,
) -> Result<Json<InferenceResponse>, Problem> {
    let texts = match (req.text, req.texts) {
        (Some(t), None) => vec![t],
        (None, Some(ts)) if !ts.is_empty() => ts,
        (None, Some(_)) => return Err(Problem::unprocessable("texts must not be empty")),
        _ => return Err(Problem::unprocessable("give either text or texts")),
    };
    if texts.len() > MAX_TEXTS {
        return Err(Problem::unprocessable(format!(
            "{} texts; at most {MAX_TEXTS} per request",
            texts.len()
        )));
    }
    if texts.iter().any(|t| t.trim().is_empty()) {
        return Err(Problem::unprocessable("texts must not be empty or blank"));
    }
    let models = app.models().ok_or_else(|| {
        Problem::unavailable(
            "model serving is not available: ONNX Runtime is not loaded (see /readyz)",
        )
    })?;
    let model = models.get(&req.model_name, None)?;
    let classifies = matches!(model.text_task()?.task, Task::Classification { .. });
    let started = Instant::now();
    let max_length = req.max_length;
    let outputs: Vec<Output> = if classifies {
        model
            .classify(&texts, max_length)
            .await?
            .0
            .into_iter()
            .map(|c| Output {
                result: Answer::Label(c.label),
                confidence: Some(c.confidence),
                scores: Some(c.scores.into_iter().collect()),
            })
            .collect()
    } else {
        model
            .embed(&texts, max_length)
            .await?
            .0
            .into_iter()
            .map(|v| Output {
                result: Answer::Vector(v),
                confidence: None,
                scores: None,
            })
            .collect()
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Json(InferenceResponse {
        model_name: model.name.clone(),
        model_version: model.version.to_string(),
        results: outputs
            .into_iter()
            .map(|output| TextResult { output, latency_ms })
            .collect(),
    }))
}

/// The answer, serialised as it is built; vectors and scores keep their `f32` precision.
#[derive(Serialize)]
pub struct InferenceResponse {
    model_name: String,
    model_version: String,
    results: Vec<TextResult>,
}

#[derive(Serialize)]
struct TextResult {
    #[serde(flatten)]
    output: Output,
    latency_ms: f64,
}

#[derive(Serialize)]
struct Output {
    result: Answer,
    confidence: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scores: Option<BTreeMap<String, f32>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Label(String),
    Vector(Vec<f32>),
}
