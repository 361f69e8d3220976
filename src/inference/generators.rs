//! The configured language models (`[generators.NAME]`), each a built-in ONNX decoder or an
//! upstream OpenAI-compatible server, behind one call that streams text.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::Runtime;
use super::generate::{
    GenerateError, GenerateRequest, Generation, OnnxGenerator, OnnxGeneratorSpec,
};
use super::upstream::UpstreamGenerator;
use crate::config::{Config, GeneratorConfig};

/// One configured generator.
enum Backend {
    Onnx(Arc<OnnxGenerator>),
    Upstream(UpstreamGenerator),
}

/// What `/readyz`, `status` and `GET /api/v1/generators` show of a generator.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorStatus {
    /// The name clients use.
    pub name: String,
    /// `onnx` or `upstream`, as configured.
    pub kind: &'static str,
    /// Whether it can generate now.
    pub ready: bool,
    /// Where it runs, or why it cannot.
    pub detail: String,
    /// Positions it can attend to, when known.
    pub context_length: Option<usize>,
    /// Whether requests that name no generator get this one.
    pub default: bool,
}

/// Every configured generator, opened at start.
pub struct Generators {
    /// Each generator's kind as configured, and the opened generator or why it did not open.
    open: BTreeMap<String, (&'static str, Result<Backend, String>)>,
    default: Option<String>,
}

impl Generators {
    /// Opens the configured generators. One that cannot open (no ONNX Runtime, a missing file)
    /// is kept with its reason, so requests for it get that reason and the others still work.
    pub fn open(config: &Config, runtime: Option<&Runtime>) -> Generators {
        let mut open = BTreeMap::new();
        for (name, generator) in &config.generators {
            let kind = match generator {
                GeneratorConfig::Upstream(_) => "upstream",
                GeneratorConfig::Onnx(_) => "onnx",
            };
            let backend = match generator {
                GeneratorConfig::Upstream(u) => UpstreamGenerator::new(name, u)
                    .map(Backend::Upstream)
                    .map_err(|e| e.to_string()),
                GeneratorConfig::Onnx(o) => match runtime {
                    None => Err("ONNX Runtime is not loaded (see /readyz)".to_string()),
                    Some(runtime) => {
                        let spec = OnnxGeneratorSpec {
                            model: o.model.clone(),
                            tokenizer: o
                                .tokenizer
                                .clone()
                                .unwrap_or_else(|| o.model.with_file_name("tokenizer.json")),
                            bos_token_id: o.bos_token_id,
                            eos_token_ids: o.eos_token_ids.clone(),
                            context_length: o.context_length,
                            chat_template: o.chat_template.clone(),
                            threads: o.threads,
                            max_batch: o.max_batch,
                            sessions: o.sessions,
                            memory_mode: config.runtime.memory_mode,
                        };
                        OnnxGenerator::open(runtime, &spec)
                            .map(|g| Backend::Onnx(Arc::new(g)))
                            .map_err(|e| e.to_string())
                    }
                },
            };
            match &backend {
                Ok(_) => tracing::info!(generator = %name, "generator ready"),
                Err(e) => tracing::warn!(generator = %name, error = %e, "generator unavailable"),
            }
            open.insert(name.clone(), (kind, backend));
        }
        let default = if config.answers.default_generator.is_empty() {
            (open.len() == 1)
                .then(|| open.keys().next().cloned())
                .flatten()
        } else {
            Some(config.answers.default_generator.clone())
        };
        Generators { open, default }
    }

    /// Whether any generator is configured.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Names of the generators, sorted.
    pub fn names(&self) -> Vec<String> {
        self.open.keys().cloned().collect()
    }

    /// The name a request means: the one it gives, or the default.
    pub fn resolve(&self, name: Option<&str>) -> Result<String, GenerateError> {
        match name {
            Some(n) if self.open.contains_key(n) => Ok(n.to_string()),
            Some(n) => Err(GenerateError::NotFound(format!(
                "no generator {n:?} (configured: {})",
                self.listed()
            ))),
            None => self.default.clone().ok_or_else(|| {
                GenerateError::NotFound(if self.open.is_empty() {
                    "no language model is configured".to_string()
                } else {
                    format!(
                        "several generators are configured and none is the default: name one \
                         ({}) or set answers.default_generator",
                        self.listed()
                    )
                })
            }),
        }
    }

    fn listed(&self) -> String {
        if self.open.is_empty() {
            "none".to_string()
        } else {
            self.names().join(", ")
        }
    }

    fn backend(&self, name: &str) -> Result<&Backend, GenerateError> {
        match self.open.get(name) {
            None => Err(GenerateError::NotFound(format!(
                "no generator {name:?} (configured: {})",
                self.listed()
            ))),
            Some((_, Err(why))) => Err(GenerateError::Unavailable(format!(
                "generator {name:?} is not available: {why}"
            ))),
            Some((_, Ok(b))) => Ok(b),
        }
    }

    /// A prompt's token ids on a built-in model and its context length; `None` for an
    /// upstream, whose tokenizer sparkbrain does not have. The ids can be handed back in
    /// [`GenerateRequest::prompt_ids`] to the same generator.
    pub fn measure(
        &self,
        name: &str,
        prompt: &super::generate::Prompt,
    ) -> Result<Option<(Vec<u32>, usize)>, GenerateError> {
        match self.backend(name)? {
            Backend::Onnx(g) => Ok(Some((g.tokenize(prompt)?, g.info().context_length))),
            Backend::Upstream(_) => Ok(None),
        }
    }

    /// Starts a generation on the named generator.
    pub async fn generate(
        &self,
        name: &str,
        req: GenerateRequest,
    ) -> Result<Generation, GenerateError> {
        match self.backend(name)? {
            Backend::Onnx(g) => g.generate(req),
            Backend::Upstream(u) => u.generate(req).await,
        }
    }

    /// The state of each generator.
    pub fn status(&self) -> Vec<GeneratorStatus> {
        self.open
            .iter()
            .map(|(name, (kind, backend))| {
                let default = self.default.as_deref() == Some(name);
                match backend {
                    Ok(Backend::Onnx(g)) => {
                        let info = g.info();
                        GeneratorStatus {
                            name: name.clone(),
                            kind: "onnx",
                            ready: true,
                            detail: format!(
                                "built-in ONNX decoder on {}",
                                info.provider.ort_name()
                            ),
                            context_length: Some(info.context_length),
                            default,
                        }
                    }
                    Ok(Backend::Upstream(u)) => GeneratorStatus {
                        name: name.clone(),
                        kind: "upstream",
                        ready: true,
                        detail: format!("model {:?} at {}", u.model(), u.base_url()),
                        context_length: None,
                        default,
                    },
                    Err(why) => GeneratorStatus {
                        name: name.clone(),
                        kind,
                        ready: false,
                        detail: why.clone(),
                        context_length: None,
                        default,
                    },
                }
            })
            .collect()
    }
}
