//! A model's `config.pbtxt`, in Triton's protobuf text format.
//!
//! The text is parsed against the schema in `model_config.proto` (compiled by `build.rs`) by
//! [`pbtxt`], then mapped through the proto3 JSON form into typed structs holding what
//! sparkbrain acts on. Fields sparkbrain does not act on are accepted and left out of the typed
//! view, so a repository written for Triton loads unchanged; unknown fields are errors, as in
//! Triton.

mod pbtxt;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use serde::{Deserialize, Serialize};

/// The descriptor set compiled from `model_config.proto` by `build.rs`.
const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model_config.bin"));

/// Why a `config.pbtxt` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelConfigError {
    /// The text is not a valid ModelConfig in protobuf text format.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (characters).
        column: usize,
        /// What the parser expected or found.
        message: String,
    },
    /// Well-formed, but something sparkbrain cannot serve.
    #[error("{0}")]
    Unsupported(String),
    /// The embedded schema or the mapping to the typed view failed (a defect, not bad input).
    #[error("{0}")]
    Internal(String),
}

/// A tensor element type (Triton's `TYPE_*` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DataType {
    /// Not set.
    #[serde(rename = "TYPE_INVALID")]
    #[default]
    Invalid,
    /// Boolean.
    #[serde(rename = "TYPE_BOOL")]
    Bool,
    /// Unsigned 8-bit.
    #[serde(rename = "TYPE_UINT8")]
    Uint8,
    /// Unsigned 16-bit.
    #[serde(rename = "TYPE_UINT16")]
    Uint16,
    /// Unsigned 32-bit.
    #[serde(rename = "TYPE_UINT32")]
    Uint32,
    /// Unsigned 64-bit.
    #[serde(rename = "TYPE_UINT64")]
    Uint64,
    /// Signed 8-bit.
    #[serde(rename = "TYPE_INT8")]
    Int8,
    /// Signed 16-bit.
    #[serde(rename = "TYPE_INT16")]
    Int16,
    /// Signed 32-bit.
    #[serde(rename = "TYPE_INT32")]
    Int32,
    /// Signed 64-bit.
    #[serde(rename = "TYPE_INT64")]
    Int64,
    /// IEEE half.
    #[serde(rename = "TYPE_FP16")]
    Fp16,
    /// IEEE single.
    #[serde(rename = "TYPE_FP32")]
    Fp32,
    /// IEEE double.
    #[serde(rename = "TYPE_FP64")]
    Fp64,
    /// Bytes / string.
    #[serde(rename = "TYPE_STRING")]
    String,
    /// bfloat16.
    #[serde(rename = "TYPE_BF16")]
    Bf16,
}

/// An input or output tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Tensor {
    /// Tensor name in the model.
    pub name: String,
    /// Element type.
    pub data_type: DataType,
    /// Shape without the batch dimension; -1 is variable.
    pub dims: Vec<i64>,
    /// The shape the model itself expects, when it differs from `dims`.
    pub reshape: Option<Reshape>,
    /// For classification outputs: a file of labels, one per line.
    pub label_filename: String,
    /// The input may be left out of a request.
    pub optional: bool,
}

/// `reshape { shape: […] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Reshape {
    /// The shape the model expects.
    pub shape: Vec<i64>,
}

/// Which versions of a model are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionPolicy {
    /// Every version found.
    All {},
    /// The newest `num_versions` versions.
    Latest {
        /// How many.
        #[serde(default)]
        num_versions: u32,
    },
    /// Exactly these versions.
    Specific {
        /// The version numbers.
        #[serde(default)]
        versions: Vec<i64>,
    },
}

impl Default for VersionPolicy {
    /// Triton's default: the newest version only.
    fn default() -> Self {
        VersionPolicy::Latest { num_versions: 1 }
    }
}

/// `dynamic_batching { … }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DynamicBatching {
    /// Batch sizes the batcher should aim for.
    pub preferred_batch_size: Vec<i32>,
    /// How long a request may wait for a batch to fill.
    pub max_queue_delay_microseconds: u64,
    /// Queue limits.
    pub default_queue_policy: Option<QueuePolicy>,
}

/// `default_queue_policy { … }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct QueuePolicy {
    /// Requests allowed to wait; 0 leaves the bound to sparkbrain's own limit.
    pub max_queue_size: u32,
    /// How long a request may wait, 0 for no limit.
    pub default_timeout_microseconds: u64,
    /// What happens to a request that waited longer.
    pub timeout_action: TimeoutAction,
    /// Whether a request may set its own timeout (KServe parameter `timeout`, µs).
    pub allow_timeout_override: bool,
}

/// What the queue does with a request past its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TimeoutAction {
    /// Refuse it.
    #[serde(rename = "REJECT")]
    #[default]
    Reject,
    /// Serve it after every request still in time.
    #[serde(rename = "DELAY")]
    Delay,
}

/// Where instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum InstanceKind {
    /// GPU when there is one, else CPU.
    #[serde(rename = "KIND_AUTO")]
    #[default]
    Auto,
    /// On the listed GPUs.
    #[serde(rename = "KIND_GPU")]
    Gpu,
    /// On the CPU.
    #[serde(rename = "KIND_CPU")]
    Cpu,
    /// Where the model decides.
    #[serde(rename = "KIND_MODEL")]
    Model,
}

/// `instance_group [ … ]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct InstanceGroup {
    /// Group name.
    pub name: String,
    /// Where its instances run.
    pub kind: InstanceKind,
    /// Instances per device; 0 (unset) means Triton's default of 1.
    pub count: i32,
    /// GPUs to place instances on (all when empty).
    pub gpus: Vec<i32>,
}

/// `optimization { … }` (the parts sparkbrain acts on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Optimization {
    /// Execution accelerators for GPU and CPU instances.
    pub execution_accelerators: Option<ExecutionAccelerators>,
}

/// `execution_accelerators { … }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ExecutionAccelerators {
    /// E.g. `{ name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } }`.
    pub gpu_execution_accelerator: Vec<Accelerator>,
    /// CPU accelerators.
    pub cpu_execution_accelerator: Vec<Accelerator>,
}

/// One accelerator with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Accelerator {
    /// Accelerator name, e.g. `tensorrt`.
    pub name: String,
    /// Its parameters, e.g. `precision_mode` → `FP16`.
    pub parameters: BTreeMap<String, String>,
}

/// `parameters { key: … value: { string_value: … } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Parameter {
    /// The value.
    pub string_value: String,
}

/// The typed view of a `config.pbtxt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ModelConfig {
    /// Model name; must match its folder.
    pub name: String,
    /// `onnxruntime_onnx`, `tensorrt_plan`, …
    pub platform: String,
    /// `onnxruntime`, …
    pub backend: String,
    /// Largest batch; 0 means the model takes no batch dimension.
    pub max_batch_size: i32,
    /// Which versions are served (Triton's default when absent: the latest one).
    pub version_policy: Option<VersionPolicy>,
    /// Inputs.
    pub input: Vec<Tensor>,
    /// Outputs.
    pub output: Vec<Tensor>,
    /// Dynamic batching, when enabled.
    pub dynamic_batching: Option<DynamicBatching>,
    /// Instance placement.
    pub instance_group: Vec<InstanceGroup>,
    /// Accelerators.
    pub optimization: Option<Optimization>,
    /// File name of the model inside a version folder (default `model.onnx`).
    pub default_model_filename: String,
    /// Free-form parameters (sparkbrain's text-task settings live here).
    pub parameters: BTreeMap<String, Parameter>,
    /// Whether responses may be served from the inference cache.
    pub response_cache: Option<ResponseCacheConfig>,
}

/// `response_cache { enable: true }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ResponseCacheConfig {
    /// Serve repeated requests from the cache.
    pub enable: bool,
}

fn descriptor() -> Result<MessageDescriptor, ModelConfigError> {
    static DESCRIPTOR: OnceLock<Result<MessageDescriptor, String>> = OnceLock::new();
    DESCRIPTOR
        .get_or_init(|| {
            DescriptorPool::decode(DESCRIPTOR_SET)
                .map_err(|e| e.to_string())?
                .get_message_by_name("inference.ModelConfig")
                .ok_or_else(|| "inference.ModelConfig is missing from the embedded schema".into())
        })
        .clone()
        .map_err(|e| ModelConfigError::Internal(format!("model configuration schema: {e}")))
}

impl ModelConfig {
    /// Parses `config.pbtxt` text. Syntax errors carry the line and column.
    pub fn parse(text: &str) -> Result<ModelConfig, ModelConfigError> {
        let message = pbtxt::parse(descriptor()?, text).map_err(|e| ModelConfigError::Syntax {
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        Self::from_message(&message)
    }

    /// Parses a configuration in Triton's JSON form (as the repository API's load request
    /// carries it). Unknown fields are errors.
    pub fn from_json(text: &str) -> Result<ModelConfig, ModelConfigError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let message = DynamicMessage::deserialize_with_options(
            descriptor()?,
            &mut deserializer,
            &DeserializeOptions::new().deny_unknown_fields(true),
        )
        .map_err(|e| ModelConfigError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Self::from_message(&message)
    }

    fn from_message(message: &DynamicMessage) -> Result<ModelConfig, ModelConfigError> {
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(false)
            .skip_default_fields(true);
        let json = message
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| ModelConfigError::Internal(e.to_string()))?;
        serde_json::from_value(json).map_err(|e| ModelConfigError::Internal(e.to_string()))
    }

    /// Refuses platforms sparkbrain cannot serve, with what to do instead.
    pub fn check_platform(&self) -> Result<(), ModelConfigError> {
        match (self.platform.as_str(), self.backend.as_str()) {
            ("onnxruntime_onnx", "" | "onnxruntime") | ("", "onnxruntime" | "") => Ok(()),
            ("tensorrt_plan", _) | (_, "tensorrt") => Err(ModelConfigError::Unsupported(
                "platform tensorrt_plan is not supported yet: serve the ONNX model with platform \
                 \"onnxruntime_onnx\" and enable TensorRT in \
                 optimization.execution_accelerators"
                    .into(),
            )),
            (platform, backend) => Err(ModelConfigError::Unsupported(format!(
                "platform {platform:?} / backend {backend:?} is not supported: sparkbrain serves \
                 ONNX models (platform \"onnxruntime_onnx\" or backend \"onnxruntime\")"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a typical Triton ONNX configuration: list syntax with and without colons,
    /// `<>` and `{}` messages, maps, comments, and fields sparkbrain does not act on.
    const TRITON_STYLE: &str = r#"
# An embedding model.
name: "minilm"
platform: "onnxruntime_onnx"
max_batch_size: 32
version_policy: { latest: { num_versions: 2 } }
input [
  {
    name: "input_ids"
    data_type: TYPE_INT64
    dims: [ -1 ]
  },
  {
    name: "attention_mask"
    data_type: TYPE_INT64
    dims: [ -1 ]
    optional: true
  }
]
output [
  <
    name: "last_hidden_state"
    data_type: TYPE_FP32
    dims: [ -1, 384 ]
    reshape { shape: [ -1, 384 ] }
  >
]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 2000
  default_queue_policy { max_queue_size: 64 timeout_action: REJECT }
}
instance_group [ { count: 2, kind: KIND_CPU } ]
optimization { execution_accelerators {
  gpu_execution_accelerator : [ {
    name : "tensorrt"
    parameters { key: "precision_mode" value: "FP16" }
    parameters { key: "trt_engine_cache_enable" value: "1" }
  } ]
} }
parameters { key: "task" value: { string_value: "embedding" } }
model_warmup [ { name: "w" batch_size: 1 inputs { key: "input_ids" value: { data_type: TYPE_INT64 dims: [ 4 ] zero_data: true } } } ]
"#;

    #[test]
    fn parses_a_triton_style_config() {
        let c = ModelConfig::parse(TRITON_STYLE).unwrap();
        assert_eq!(c.name, "minilm");
        assert_eq!(c.max_batch_size, 32);
        assert_eq!(
            c.version_policy,
            Some(VersionPolicy::Latest { num_versions: 2 })
        );
        assert_eq!(c.input.len(), 2);
        assert_eq!(c.input[0].data_type, DataType::Int64);
        assert_eq!(c.input[0].dims, vec![-1]);
        assert!(c.input[1].optional);
        assert_eq!(c.output[0].dims, vec![-1, 384]);
        assert_eq!(c.output[0].reshape.as_ref().unwrap().shape, vec![-1, 384]);
        let batching = c.dynamic_batching.as_ref().unwrap();
        assert_eq!(batching.preferred_batch_size, vec![8, 16]);
        assert_eq!(batching.max_queue_delay_microseconds, 2000);
        assert_eq!(
            batching
                .default_queue_policy
                .as_ref()
                .unwrap()
                .max_queue_size,
            64
        );
        assert_eq!(c.instance_group[0].count, 2);
        assert_eq!(c.instance_group[0].kind, InstanceKind::Cpu);
        let accelerators = c
            .optimization
            .as_ref()
            .unwrap()
            .execution_accelerators
            .as_ref()
            .unwrap();
        let trt = &accelerators.gpu_execution_accelerator[0];
        assert_eq!(trt.name, "tensorrt");
        assert_eq!(trt.parameters["precision_mode"], "FP16");
        assert_eq!(c.parameters["task"].string_value, "embedding");
        c.check_platform().unwrap();
    }

    #[test]
    fn version_policies() {
        let all = ModelConfig::parse("version_policy: { all { } }").unwrap();
        assert_eq!(all.version_policy, Some(VersionPolicy::All {}));
        let specific =
            ModelConfig::parse("version_policy { specific { versions: [1, 3] } }").unwrap();
        assert_eq!(
            specific.version_policy,
            Some(VersionPolicy::Specific {
                versions: vec![1, 3]
            })
        );
        assert_eq!(ModelConfig::parse("").unwrap().version_policy, None);
        let both = ModelConfig::parse("version_policy { all {} latest {} }").unwrap_err();
        assert!(both.to_string().contains("exclude each other"), "{both}");
    }

    fn syntax(text: &str) -> (usize, usize, String) {
        match ModelConfig::parse(text) {
            Err(ModelConfigError::Syntax {
                line,
                column,
                message,
            }) => (line, column, message),
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_place_and_the_problem() {
        let (line, column, message) = syntax(
            "name: \"m\"\nmax_batch_size: 8\ninput [ { name: \"x\" data_type: TYPE_FP99 } ]\n",
        );
        assert_eq!((line, column), (3, 32), "{message}");
        assert!(
            message.contains("unknown value `TYPE_FP99`") && message.contains("TYPE_FP32"),
            "{message}"
        );

        let (line, column, message) = syntax("name: \"m\"\nmax_batchsize: 8\n");
        assert_eq!((line, column), (2, 1));
        assert_eq!(
            message,
            "unknown field `max_batchsize` in inference.ModelConfig"
        );

        let (line, _, message) = syntax("input [ { name: \"x\"");
        assert_eq!(line, 1);
        assert!(message.contains("the end of the file"), "{message}");

        let (_, _, message) = syntax("max_batch_size: \"8\"");
        assert!(message.contains("expects an integer"), "{message}");
        let (_, _, message) = syntax("max_batch_size: 99999999999");
        assert!(message.contains("out of range"), "{message}");
        let (_, _, message) = syntax("name: \"a\" name: \"b\"");
        assert!(message.contains("set more than once"), "{message}");
        let (_, _, message) = syntax("max_batch_size: [1, 2]");
        assert!(message.contains("not a repeated field"), "{message}");
        let (_, _, message) = syntax("name \"x\"");
        assert!(message.contains("expected ':'"), "{message}");
        let (_, _, message) = syntax("name: \"unterminated\n");
        assert!(message.contains("not closed"), "{message}");
    }

    #[test]
    fn json_form_is_strict_too() {
        let c = ModelConfig::from_json(r#"{"max_batch_size": 4, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}]}"#)
            .unwrap();
        assert_eq!(c.max_batch_size, 4);
        assert_eq!(c.input[0].dims, vec![3]);
        let err = ModelConfig::from_json(r#"{"max_batchsize": 4}"#).unwrap_err();
        assert!(err.to_string().contains("max_batchsize"), "{err}");
    }

    #[test]
    fn tensorrt_plans_are_refused_clearly() {
        let c = ModelConfig::parse("platform: \"tensorrt_plan\"").unwrap();
        let err = c.check_platform().unwrap_err().to_string();
        assert!(err.contains("tensorrt_plan is not supported yet"), "{err}");
        let c = ModelConfig::parse("backend: \"python\"").unwrap();
        assert!(c.check_platform().is_err());
        ModelConfig::parse("backend: \"onnxruntime\"")
            .unwrap()
            .check_platform()
            .unwrap();
    }
}
