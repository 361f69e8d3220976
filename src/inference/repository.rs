//! The model repository on disk, in Triton's layout:
//! `<root>/<model>/config.pbtxt` (optional) and `<root>/<model>/<version>/model.onnx`.
//!
//! This module finds models and versions, reads their configuration, picks the versions a
//! version policy serves, and completes or checks a configuration against the tensors the ONNX
//! model itself declares (as Triton's auto-complete does for models without `config.pbtxt`).

use std::path::{Path, PathBuf};

use super::model_config::{DataType, ModelConfig, ModelConfigError, Tensor, VersionPolicy};

/// Name of a model's configuration file.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// Model file inside a version folder unless `default_model_filename` says otherwise.
pub const DEFAULT_MODEL_FILE: &str = "model.onnx";

/// Largest batch given to a model without `config.pbtxt` whose inputs all start with a
/// variable dimension (Triton's `default-max-batch-size`).
pub const DERIVED_MAX_BATCH_SIZE: i32 = 4;

/// Problems with the repository or one model in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepositoryError {
    /// The repository folder cannot be read.
    #[error("cannot read the model repository {}: {message}", path.display())]
    Unreadable {
        /// The folder.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// No such model folder.
    #[error("no model named {0:?} in the repository")]
    UnknownModel(String),
    /// `config.pbtxt` is not valid.
    #[error("{}: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column for syntax errors.
        source: ModelConfigError,
    },
    /// The configuration does not fit the model or the folder.
    #[error("model {model:?}: {message}")]
    Mismatch {
        /// The model.
        model: String,
        /// What does not fit.
        message: String,
    },
}

/// A model folder and the version folders that hold a model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// The folder name, which is the model's name.
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
    /// Version numbers with a model file, ascending.
    pub versions: Vec<u64>,
}

impl ModelSource {
    /// Path of `config.pbtxt`, whether or not it exists.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    /// The model file of a version.
    pub fn model_file(&self, config: &ModelConfig, version: u64) -> PathBuf {
        let file = if config.default_model_filename.is_empty() {
            DEFAULT_MODEL_FILE
        } else {
            &config.default_model_filename
        };
        self.dir.join(version.to_string()).join(file)
    }

    /// Reads `config.pbtxt` if there is one.
    pub fn read_config(&self) -> Result<Option<ModelConfig>, RepositoryError> {
        let path = self.config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RepositoryError::Config {
                    path,
                    source: ModelConfigError::Unsupported(format!("cannot read the file: {e}")),
                });
            }
        };
        let config = ModelConfig::parse(&text).map_err(|source| RepositoryError::Config {
            path: path.clone(),
            source,
        })?;
        config
            .check_platform()
            .map_err(|source| RepositoryError::Config { path, source })?;
        Ok(Some(config))
    }
}

/// Lists the models under `root`, by name. Hidden folders and plain files are skipped.
pub fn scan(root: &Path) -> Result<Vec<ModelSource>, RepositoryError> {
    let unreadable = |e: std::io::Error| RepositoryError::Unreadable {
        path: root.to_path_buf(),
        message: e.to_string(),
    };
    let mut models = Vec::new();
    for entry in std::fs::read_dir(root).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        models.push(source_at(root, &name)?);
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// The model folder `root/name`.
pub fn find(root: &Path, name: &str) -> Result<ModelSource, RepositoryError> {
    // A name is one path component: no separators, no parent references.
    let safe = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']);
    if !safe || !root.join(name).is_dir() {
        return Err(RepositoryError::UnknownModel(name.to_string()));
    }
    source_at(root, name)
}

fn source_at(root: &Path, name: &str) -> Result<ModelSource, RepositoryError> {
    let dir = root.join(name);
    let entries = std::fs::read_dir(&dir).map_err(|e| RepositoryError::Unreadable {
        path: dir.clone(),
        message: e.to_string(),
    })?;
    let mut versions: Vec<u64> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
        .filter(|v| *v > 0)
        .collect();
    versions.sort_unstable();
    Ok(ModelSource {
        name: name.to_string(),
        dir,
        versions,
    })
}

/// The versions a policy serves out of those available (ascending). A `specific` version that
/// does not exist is an error, as in Triton.
pub fn select_versions(
    model: &str,
    policy: &VersionPolicy,
    available: &[u64],
) -> Result<Vec<u64>, RepositoryError> {
    let chosen: Vec<u64> = match policy {
        VersionPolicy::All {} => available.to_vec(),
        VersionPolicy::Latest { num_versions } => {
            let n = (*num_versions).max(1) as usize;
            available[available.len().saturating_sub(n)..].to_vec()
        }
        VersionPolicy::Specific { versions } => {
            let mut chosen = Vec::new();
            for v in versions {
                let found = u64::try_from(*v).ok().filter(|v| available.contains(v));
                match found {
                    Some(v) => chosen.push(v),
                    None => {
                        return Err(RepositoryError::Mismatch {
                            model: model.to_string(),
                            message: format!(
                                "version_policy asks for version {v}, which has no model file"
                            ),
                        });
                    }
                }
            }
            chosen.sort_unstable();
            chosen.dedup();
            chosen
        }
    };
    if chosen.is_empty() {
        return Err(RepositoryError::Mismatch {
            model: model.to_string(),
            message: "no version folder with a model file (expected <model>/1/model.onnx)".into(),
        });
    }
    Ok(chosen)
}

/// A tensor as the ONNX model declares it: full shape, batch dimension included, -1 for
/// variable dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTensor {
    /// Name.
    pub name: String,
    /// Element type (`Invalid` for types the protocol cannot carry).
    pub data_type: DataType,
    /// Full shape.
    pub shape: Vec<i64>,
}

/// Completes a configuration from the model's own tensors (when it lists none) and checks one
/// that does: every configured tensor must exist with the same type and a compatible shape.
pub fn complete(
    model: &str,
    config: Option<ModelConfig>,
    inputs: &[ModelTensor],
    outputs: &[ModelTensor],
) -> Result<ModelConfig, RepositoryError> {
    let mismatch = |message: String| RepositoryError::Mismatch {
        model: model.to_string(),
        message,
    };
    let mut config = config.unwrap_or_default();
    if config.name.is_empty() {
        config.name = model.to_string();
    } else if config.name != model {
        return Err(mismatch(format!(
            "config.pbtxt names the model {:?}, but its folder is {model:?}; they must match",
            config.name
        )));
    }
    if config.platform.is_empty() && config.backend.is_empty() {
        config.platform = "onnxruntime_onnx".into();
    }
    let batchable = inputs
        .iter()
        .chain(outputs)
        .all(|t| t.shape.first() == Some(&-1));
    if config.input.is_empty()
        && config.output.is_empty()
        && config.max_batch_size == 0
        && batchable
    {
        config.max_batch_size = DERIVED_MAX_BATCH_SIZE;
    }
    if config.max_batch_size < 0 {
        return Err(mismatch(format!(
            "max_batch_size is {}; it must be 0 (no batching) or more",
            config.max_batch_size
        )));
    }
    if config.max_batch_size > 0 && !batchable {
        return Err(mismatch(format!(
            "max_batch_size is {} but the model's tensors do not all start with a variable batch \
             dimension; set max_batch_size: 0",
            config.max_batch_size
        )));
    }
    let batched = config.max_batch_size > 0;
    let derive = |tensors: &[ModelTensor]| -> Vec<Tensor> {
        tensors
            .iter()
            .map(|t| Tensor {
                name: t.name.clone(),
                data_type: t.data_type,
                dims: if batched {
                    t.shape[1..].to_vec()
                } else {
                    t.shape.clone()
                },
                ..Tensor::default()
            })
            .collect()
    };
    if config.input.is_empty() {
        config.input = derive(inputs);
    }
    if config.output.is_empty() {
        config.output = derive(outputs);
    }
    for (kind, configured, declared) in [
        ("input", &config.input, inputs),
        ("output", &config.output, outputs),
    ] {
        for tensor in configured {
            check_tensor(kind, tensor, declared, batched).map_err(&mismatch)?;
        }
    }
    for declared in inputs {
        if !config.input.iter().any(|t| t.name == declared.name) {
            return Err(mismatch(format!(
                "the model takes input {:?}, which config.pbtxt does not list",
                declared.name
            )));
        }
    }
    Ok(config)
}

fn check_tensor(
    kind: &str,
    tensor: &Tensor,
    declared: &[ModelTensor],
    batched: bool,
) -> Result<(), String> {
    let Some(actual) = declared.iter().find(|t| t.name == tensor.name) else {
        let names: Vec<&str> = declared.iter().map(|t| t.name.as_str()).collect();
        return Err(format!(
            "{kind} {:?} is not in the model, whose {kind}s are {}",
            tensor.name,
            names.join(", ")
        ));
    };
    if tensor.data_type != actual.data_type {
        return Err(format!(
            "{kind} {:?}: config.pbtxt says {}, the model declares {}",
            tensor.name,
            type_name(tensor.data_type),
            type_name(actual.data_type)
        ));
    }
    let mut expected = tensor
        .reshape
        .as_ref()
        .map_or_else(|| tensor.dims.clone(), |r| r.shape.clone());
    if batched {
        expected.insert(0, -1);
    }
    let fits = expected.len() == actual.shape.len()
        && expected
            .iter()
            .zip(&actual.shape)
            .all(|(e, a)| *e == *a || *e == -1 || *a == -1);
    if !fits {
        return Err(format!(
            "{kind} {:?}: config.pbtxt gives shape {expected:?} (batch dimension included), the \
             model declares {:?}",
            tensor.name, actual.shape
        ));
    }
    Ok(())
}

/// Triton's name of a data type.
pub fn type_name(t: DataType) -> &'static str {
    match t {
        DataType::Invalid => "TYPE_INVALID",
        DataType::Bool => "TYPE_BOOL",
        DataType::Uint8 => "TYPE_UINT8",
        DataType::Uint16 => "TYPE_UINT16",
        DataType::Uint32 => "TYPE_UINT32",
        DataType::Uint64 => "TYPE_UINT64",
        DataType::Int8 => "TYPE_INT8",
        DataType::Int16 => "TYPE_INT16",
        DataType::Int32 => "TYPE_INT32",
        DataType::Int64 => "TYPE_INT64",
        DataType::Fp16 => "TYPE_FP16",
        DataType::Fp32 => "TYPE_FP32",
        DataType::Fp64 => "TYPE_FP64",
        DataType::String => "TYPE_STRING",
        DataType::Bf16 => "TYPE_BF16",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, data_type: DataType, shape: &[i64]) -> ModelTensor {
        ModelTensor {
            name: name.into(),
            data_type,
            shape: shape.to_vec(),
        }
    }

    fn minilm() -> (Vec<ModelTensor>, Vec<ModelTensor>) {
        (
            ["input_ids", "attention_mask", "token_type_ids"]
                .iter()
                .map(|n| tensor(n, DataType::Int64, &[-1, -1]))
                .collect(),
            vec![tensor("last_hidden_state", DataType::Fp32, &[-1, -1, 384])],
        )
    }

    #[test]
    fn scan_finds_models_and_numeric_versions() {
        let root = tempfile::tempdir().unwrap();
        for path in ["b/1", "b/3", "b/x", "b/0", "a/2", ".hidden/1"] {
            std::fs::create_dir_all(root.path().join(path)).unwrap();
        }
        std::fs::write(root.path().join("README"), "not a model").unwrap();
        let models = scan(root.path()).unwrap();
        let summary: Vec<(&str, &[u64])> = models
            .iter()
            .map(|m| (m.name.as_str(), m.versions.as_slice()))
            .collect();
        assert_eq!(summary, vec![("a", &[2u64][..]), ("b", &[1u64, 3][..])]);
        assert!(matches!(
            find(root.path(), "../b"),
            Err(RepositoryError::UnknownModel(_))
        ));
        assert!(matches!(
            find(root.path(), "c"),
            Err(RepositoryError::UnknownModel(_))
        ));
        assert_eq!(find(root.path(), "b").unwrap().versions, vec![1, 3]);
    }

    #[test]
    fn bad_config_names_file_line_and_column() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("m/1")).unwrap();
        std::fs::write(
            root.path().join("m/config.pbtxt"),
            "name: \"m\"\nmax_batch_size: x\n",
        )
        .unwrap();
        let err = find(root.path(), "m")
            .unwrap()
            .read_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("m/config.pbtxt: line 2, column 17"), "{err}");
    }

    #[test]
    fn version_policies_pick_versions() {
        let all = [1, 2, 5];
        assert_eq!(
            select_versions("m", &VersionPolicy::default(), &all).unwrap(),
            vec![5]
        );
        assert_eq!(
            select_versions("m", &VersionPolicy::Latest { num_versions: 2 }, &all).unwrap(),
            vec![2, 5]
        );
        assert_eq!(
            select_versions("m", &VersionPolicy::All {}, &all).unwrap(),
            vec![1, 2, 5]
        );
        assert_eq!(
            select_versions(
                "m",
                &VersionPolicy::Specific {
                    versions: vec![5, 1]
                },
                &all
            )
            .unwrap(),
            vec![1, 5]
        );
        let err = select_versions("m", &VersionPolicy::Specific { versions: vec![3] }, &all)
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 3"), "{err}");
        assert!(select_versions("m", &VersionPolicy::All {}, &[]).is_err());
    }

    #[test]
    fn derives_a_config_from_the_model() {
        let (inputs, outputs) = minilm();
        let config = complete("minilm", None, &inputs, &outputs).unwrap();
        assert_eq!(config.name, "minilm");
        assert_eq!(config.platform, "onnxruntime_onnx");
        assert_eq!(config.max_batch_size, DERIVED_MAX_BATCH_SIZE);
        assert_eq!(config.input.len(), 3);
        assert_eq!(config.input[0].dims, vec![-1]);
        assert_eq!(config.output[0].dims, vec![-1, 384]);
    }

    #[test]
    fn checks_a_written_config_against_the_model() {
        let (inputs, outputs) = minilm();
        let parse = |text: &str| Some(ModelConfig::parse(text).unwrap());
        let good = "max_batch_size: 8 input [ { name: \"input_ids\" data_type: TYPE_INT64 dims: [ -1 ] }, \
                    { name: \"attention_mask\" data_type: TYPE_INT64 dims: [ -1 ] }, \
                    { name: \"token_type_ids\" data_type: TYPE_INT64 dims: [ -1 ] } ] \
                    output [ { name: \"last_hidden_state\" data_type: TYPE_FP32 dims: [ -1, 384 ] } ]";
        let config = complete("minilm", parse(good), &inputs, &outputs).unwrap();
        assert_eq!(config.max_batch_size, 8);

        let wrong_type = good.replacen("TYPE_INT64", "TYPE_INT32", 1);
        let err = complete("minilm", parse(&wrong_type), &inputs, &outputs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "input \"input_ids\": config.pbtxt says TYPE_INT32, the model declares TYPE_INT64"
            ),
            "{err}"
        );

        let wrong_shape = good.replace("[ -1, 384 ]", "[ -1, 512 ]");
        let err = complete("minilm", parse(&wrong_shape), &inputs, &outputs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape [-1, -1, 512]"), "{err}");

        let unknown = good.replace("\"attention_mask\"", "\"mask\"");
        let err = complete("minilm", parse(&unknown), &inputs, &outputs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("input \"mask\" is not in the model"), "{err}");

        let renamed = format!("name: \"other\" {good}");
        let err = complete("minilm", parse(&renamed), &inputs, &outputs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("folder is \"minilm\""), "{err}");

        let unbatched = good.replace("max_batch_size: 8", "max_batch_size: 0");
        let err = complete("minilm", parse(&unbatched), &inputs, &outputs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch dimension included"), "{err}");
    }
}
