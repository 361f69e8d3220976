//! Generation settings: what the spec says, else what exporters write beside the model, else
//! the tokenizer's conventional special tokens.
//!
//! | setting | spec field | then | then | then |
//! |---|---|---|---|---|
//! | BOS | `bos_token_id` | `generation_config.json` `bos_token_id` | `config.json` `bos_token_id` | `tokenizer_config.json` `bos_token`, else the tokenizer's `<s>` |
//! | EOS | `eos_token_ids` | `generation_config.json` `eos_token_id` (a number or a list) | `config.json` `eos_token_id` | `tokenizer_config.json` `eos_token`, else `</s>` |
//! | context | `context_length` | `config.json` `max_position_embeddings` (or GPT-2's `n_positions`) | — | an error naming the setting |
//! | chat template | `chat_template` | `tokenizer_config.json` `chat_template` | — | the plain fallback |

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::{GenerateError, OnnxGeneratorSpec};

/// The resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    /// Beginning-of-sequence token, put before text prompts.
    pub bos: Option<u32>,
    /// Tokens that end a completion.
    pub eos: Vec<u32>,
    /// Positions the model can attend to.
    pub context_length: usize,
    /// The Jinja chat template, when the model has one.
    pub chat_template: Option<String>,
    /// BOS and EOS as text, for chat templates (`{{ bos_token }}`).
    pub bos_token: Option<String>,
    /// The first EOS token as text (`{{ eos_token }}`).
    pub eos_token: Option<String>,
}

/// Resolves the settings for a spec whose tokenizer is loaded.
pub(super) fn resolve(
    spec: &OnnxGeneratorSpec,
    tokenizer: &Tokenizer,
) -> Result<Settings, GenerateError> {
    let dir = spec.model.parent().unwrap_or(Path::new("."));
    let generation = read_json(&dir.join("generation_config.json"))?;
    let config = read_json(&dir.join("config.json"))?;
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?;
    let field = |file: &Option<Value>, key: &str| file.as_ref().and_then(|v| v.get(key)).cloned();

    let bos_text = field(&tokenizer_config, "bos_token").and_then(|v| token_text(&v));
    let eos_text = field(&tokenizer_config, "eos_token").and_then(|v| token_text(&v));
    let bos = match spec.bos_token_id {
        Some(id) => Some(id),
        None => field(&generation, "bos_token_id")
            .and_then(|v| ids(&v).into_iter().next())
            .or_else(|| field(&config, "bos_token_id").and_then(|v| ids(&v).into_iter().next()))
            .or_else(|| bos_text.as_deref().and_then(|t| tokenizer.token_to_id(t)))
            .or_else(|| tokenizer.token_to_id("<s>")),
    };
    let eos = match &spec.eos_token_ids {
        Some(ids) => ids.clone(),
        None => field(&generation, "eos_token_id")
            .map(|v| ids(&v))
            .filter(|v| !v.is_empty())
            .or_else(|| {
                field(&config, "eos_token_id")
                    .map(|v| ids(&v))
                    .filter(|v| !v.is_empty())
            })
            .or_else(|| {
                eos_text
                    .as_deref()
                    .and_then(|t| tokenizer.token_to_id(t))
                    .map(|id| vec![id])
            })
            .or_else(|| tokenizer.token_to_id("</s>").map(|id| vec![id]))
            .unwrap_or_default(),
    };
    let vocab = tokenizer.get_vocab_size(true);
    for (what, id) in bos
        .iter()
        .map(|id| ("bos_token_id", *id))
        .chain(eos.iter().map(|id| ("eos_token_ids", *id)))
    {
        if id as usize >= vocab {
            return Err(GenerateError::Invalid(format!(
                "{what}: token {id} is outside the tokenizer's vocabulary of {vocab} tokens"
            )));
        }
    }

    let context_length = match spec.context_length {
        Some(n) => Some(n),
        None => ["max_position_embeddings", "n_positions"]
            .iter()
            .find_map(|key| field(&config, key).and_then(|v| v.as_u64()))
            .and_then(|n| usize::try_from(n).ok()),
    };
    let context_length = match context_length {
        Some(0) => {
            return Err(GenerateError::Invalid(
                "context_length must be at least 1".into(),
            ));
        }
        Some(n) => n,
        None => {
            return Err(GenerateError::Invalid(format!(
                "the context length of {} is unknown: set the generator's context_length, or \
                 put max_position_embeddings in a config.json beside the model",
                spec.model.display()
            )));
        }
    };

    let chat_template = match &spec.chat_template {
        Some(t) => Some(t.clone()),
        None => field(&tokenizer_config, "chat_template").and_then(|v| template_text(&v)),
    };
    Ok(Settings {
        bos,
        eos: eos.clone(),
        context_length,
        chat_template,
        bos_token: bos_text.or_else(|| bos.and_then(|id| tokenizer.id_to_token(id))),
        eos_token: eos_text.or_else(|| eos.first().and_then(|id| tokenizer.id_to_token(*id))),
    })
}

/// A settings file's JSON, or `None` when there is no such file.
fn read_json(path: &Path) -> Result<Option<Value>, GenerateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(GenerateError::Unavailable(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| GenerateError::Invalid(format!("{} is not valid JSON: {e}", path.display())))
}

/// Token ids from a number or a list of numbers (`eos_token_id` may be either).
fn ids(value: &Value) -> Vec<u32> {
    let one = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match value {
        Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

/// A special token's text: a string, or an added-token object with `content`.
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

/// The chat template: a string, or (newer exporters) a list of named templates, of which the
/// one named `default` is the chat template.
fn template_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(String::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryMode;

    fn fixture_tokenizer() -> Tokenizer {
        let path = super::super::tests::fixture_dir().join("tokenizer.json");
        Tokenizer::from_file(&path).expect("fixture tokenizer")
    }

    fn spec(dir: &Path) -> OnnxGeneratorSpec {
        OnnxGeneratorSpec {
            model: dir.join("model.onnx"),
            tokenizer: dir.join("tokenizer.json"),
            bos_token_id: None,
            eos_token_ids: None,
            context_length: None,
            chat_template: None,
            threads: 1,
            max_batch: 1,
            sessions: 1,
            memory_mode: MemoryMode::Fast,
        }
    }

    #[test]
    fn tokenizer_tokens_when_no_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec(dir.path());
        s.context_length = Some(512);
        let got = resolve(&s, &fixture_tokenizer()).expect("resolve");
        assert_eq!(got.bos, Some(1));
        assert_eq!(got.eos, vec![2]);
        assert_eq!(got.context_length, 512);
        assert_eq!(got.bos_token.as_deref(), Some("<s>"));
        assert_eq!(got.eos_token.as_deref(), Some("</s>"));
        assert_eq!(got.chat_template, None);
    }

    #[test]
    fn missing_context_length_names_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = resolve(&spec(dir.path()), &fixture_tokenizer()).unwrap_err();
        let GenerateError::Invalid(message) = err else {
            panic!("{err:?}")
        };
        assert!(message.contains("context_length"), "{message}");
        assert!(message.contains("max_position_embeddings"), "{message}");
    }

    #[test]
    fn exporter_files_fill_the_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write");
        };
        write(
            "generation_config.json",
            r#"{"bos_token_id": 1, "eos_token_id": [2, 0]}"#,
        );
        write(
            "config.json",
            r#"{"max_position_embeddings": 256, "bos_token_id": 5}"#,
        );
        write(
            "tokenizer_config.json",
            r#"{"bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
                "chat_template": [{"name": "tool_use", "template": "x"},
                                  {"name": "default", "template": "{{ messages }}"}]}"#,
        );
        let got = resolve(&spec(dir.path()), &fixture_tokenizer()).expect("resolve");
        assert_eq!(got.bos, Some(1));
        assert_eq!(got.eos, vec![2, 0]);
        assert_eq!(got.context_length, 256);
        assert_eq!(got.chat_template.as_deref(), Some("{{ messages }}"));

        // The spec wins over the files.
        let mut s = spec(dir.path());
        s.bos_token_id = Some(3);
        s.eos_token_ids = Some(vec![4]);
        s.context_length = Some(100);
        s.chat_template = Some("t".into());
        let got = resolve(&s, &fixture_tokenizer()).expect("resolve");
        assert_eq!(
            (got.bos, got.eos, got.context_length),
            (Some(3), vec![4], 100)
        );
        assert_eq!(got.chat_template.as_deref(), Some("t"));
    }

    #[test]
    fn out_of_vocabulary_ids_and_bad_json_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec(dir.path());
        s.context_length = Some(8);
        s.eos_token_ids = Some(vec![100_000]);
        let err = resolve(&s, &fixture_tokenizer()).unwrap_err();
        assert!(err.to_string().contains("eos_token_ids"), "{err}");

        std::fs::write(dir.path().join("config.json"), "{").expect("write");
        let err = resolve(&spec(dir.path()), &fixture_tokenizer()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
