//! Layered configuration: embedded default → file → `SPARKBRAIN_*` environment → flags.
//!
//! Every layer is merged as a TOML table onto the layers below it and the result is checked
//! against [`Config`] after each layer, so an error names the layer (file, variable or flag)
//! that introduced it, the key path, and what was expected.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The documented default configuration, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../assets/config.default.toml");

/// The system-wide configuration file read when no `--config` is given (if it exists).
pub const SYSTEM_CONFIG_PATH: &str = "/etc/sparkbrain/config.toml";

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SPARKBRAIN_";

/// The one `SPARKBRAIN_*` variable that is not configuration: the API key the command line
/// authenticates with against a running daemon.
pub const API_KEY_ENV: &str = "SPARKBRAIN_API_KEY";

/// The daemon's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding the database, blobs, keys and certificates.
    pub data_dir: PathBuf,
    /// HTTP listener settings.
    pub server: ServerConfig,
    /// TLS certificate settings for non-loopback binds.
    pub tls: TlsConfig,
    /// Authentication settings.
    pub auth: AuthConfig,
    /// `/metrics` exposure.
    pub metrics: MetricsConfig,
    /// ONNX Runtime settings.
    pub runtime: RuntimeConfig,
    /// Model files.
    pub models: ModelsConfig,
    /// The model repository and how it is served.
    pub serving: ServingConfig,
    /// The knowledge base.
    pub kb: KbConfig,
    /// Answers from the knowledge base (retrieval-augmented generation).
    pub answers: AnswersConfig,
    /// GPU supervision through NVML and the host services the GPUs depend on.
    pub gpu: GpuConfig,
    /// LUKS2-encrypted volumes and the one that holds `data_dir`.
    pub volume: VolumeConfig,
    /// Language models that write answers and chat completions, by the name clients use.
    #[serde(default)]
    pub generators: std::collections::BTreeMap<String, GeneratorConfig>,
    /// Backups: where scheduled backups go, encryption, retention.
    pub backup: BackupConfig,
    /// Logging settings.
    pub log: LogConfig,
}

/// `[backup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// A folder or `s3://bucket/prefix`; empty means no scheduled backups.
    pub target: String,
    /// File whose first line is the passphrase archives are encrypted with.
    pub passphrase_file: PathBuf,
    /// Or age public keys (`age1…`) archives are encrypted to.
    pub recipients: Vec<String>,
    /// Put model files in archives, not only the repository's configs.
    pub include_models: bool,
    /// Put the indexes in archives, or have them rebuilt at restore.
    pub indexes: IndexMode,
    /// After each backup, keep this many newest archives at the target (0: no limit).
    pub keep_last: u32,
    /// After each backup, remove archives older than this many days (0: no limit).
    pub keep_days: u32,
    /// How to reach an `s3://` target.
    pub s3: BackupS3Config,
}

/// Whether an archive carries the indexes or has them rebuilt at restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexMode {
    /// Copy the vector and text indexes into the archive.
    Include,
    /// Leave them out; the daemon rebuilds them from the database at first start.
    Rebuild,
}

/// `[backup.s3]`: empty values fall back to the standard AWS environment variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupS3Config {
    /// Endpoint URL of an S3-compatible server (MinIO, Ceph); empty means AWS.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// File holding the secret access key.
    pub secret_access_key_file: PathBuf,
    /// Allow a plain-HTTP endpoint (a server on the same trusted network).
    pub allow_http: bool,
    /// Archives larger than this go up as a multipart upload of parts this large, in MiB.
    pub part_size_mib: u32,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address, validated by [`Config::bind_addr`].
    pub bind: String,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace_seconds: u64,
    /// Largest accepted request body for JSON and form endpoints.
    pub max_body_bytes: u64,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; empty means "generate a self-signed one".
    pub certificate: String,
    /// PEM private key matching `certificate`.
    pub private_key: String,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Access-token lifetime.
    pub access_token_ttl_seconds: u64,
    /// Refresh-token lifetime.
    pub refresh_token_ttl_seconds: u64,
    /// Failed sign-ins allowed per account within the window.
    pub login_max_failures_per_account: u32,
    /// Failed sign-ins allowed per source address within the window.
    pub login_max_failures_per_address: u32,
    /// Length of the sign-in rate-limit window.
    pub login_window_seconds: u64,
    /// Shortest accepted password.
    pub min_password_length: usize,
}

/// `[gpu]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// Supervise GPUs at all; `false` runs CPU-only without loading NVML.
    pub enabled: bool,
    /// Explicit path of the NVML library; empty means the system's `libnvidia-ml.so.1`.
    pub nvml_library: String,
    /// Milliseconds between two samples of every GPU.
    pub sample_interval_ms: u64,
    /// How far back the per-sample history reaches, in seconds.
    pub history_seconds: u64,
    /// How far back the per-minute history reaches, in minutes.
    pub history_minutes: u64,
    /// A GPU instance needs this many times its model file's size in free GPU memory.
    pub placement_memory_factor: f64,
    /// systemd units the GPUs depend on, watched over D-Bus.
    pub host_services: Vec<String>,
    /// D-Bus address of the system bus; empty means the standard one, `off` watches nothing.
    pub system_bus: String,
}

/// `[volume]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Name of the volume that must hold `data_dir`; empty keeps data wherever `data_dir` is.
    pub data: String,
    /// File recording every volume `sparkbrain volume create` made (device, LUKS UUID, mount).
    pub registry: PathBuf,
    /// Root-only folder of key files, the TLS certificate and the admins allowed to unlock.
    pub keys_dir: PathBuf,
    /// argon2id memory cost of new key slots, in KiB.
    pub pbkdf_memory_kib: u32,
    /// argon2id iterations of new key slots; 0 lets cryptsetup pick them for a ~2 s unlock.
    pub pbkdf_iterations: u32,
    /// argon2id parallel threads of new key slots.
    pub pbkdf_parallel: u32,
}

impl VolumeConfig {
    /// Whether `data_dir` must live on an encrypted volume.
    pub fn required(&self) -> bool {
        !self.data.is_empty()
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` without authentication.
    pub public: bool,
}

/// `[runtime]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Explicit path of `libonnxruntime.so`; empty means search.
    pub onnxruntime_library: String,
    /// Intra-op threads per session; 0 means one per core.
    pub intra_op_threads: usize,
    /// Let intra-op threads spin while they wait for work (ONNX Runtime's default): a little
    /// lower latency on an idle machine, cores taken from every other stage on a busy one.
    pub intra_op_spinning: bool,
    /// Memory against speed for model sessions.
    pub memory_mode: MemoryMode,
}

/// How model sessions trade memory for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryMode {
    /// Quantised weights stay quantised; no CPU arena.
    Compact,
    /// ONNX Runtime's defaults: constant folding and the CPU arena.
    Fast,
}

/// `[models]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// The name the built-in embedding model is served under.
    pub embedding_name: String,
    /// The embedding model's ONNX file.
    pub embedding_model: PathBuf,
    /// The embedding model's `tokenizer.json`.
    pub embedding_tokenizer: PathBuf,
    /// The ONNX file that embeds search queries: the embedding model with int8 activations
    /// (scripts/derive-query-model.py); empty embeds queries with `embedding_model`.
    pub embedding_query_model: PathBuf,
    /// Sessions serving the built-in model, sharing `runtime.intra_op_threads` evenly.
    pub embedding_instances: usize,
}

/// `[serving]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    /// Repository folder; empty means `<data_dir>/models`.
    pub repository: String,
    /// How models are loaded and unloaded.
    pub control_mode: ControlMode,
    /// Models loaded at start in explicit mode.
    pub startup_models: Vec<String>,
    /// Rescan interval in poll mode.
    pub poll_interval_seconds: u64,
    /// Execution providers to try, in order.
    pub execution_providers: Vec<crate::inference::Provider>,
    /// Memory against speed for repository models.
    pub memory_mode: MemoryMode,
    /// Largest inference request body.
    pub max_request_bytes: u64,
    /// Total size of cached inference outputs; 0 turns the cache off.
    pub cache_bytes: u64,
    /// How long a cached answer stays valid.
    pub cache_ttl_seconds: u64,
}

/// `[kb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbConfig {
    /// Largest accepted document.
    pub max_document_bytes: u64,
    /// Documents processed at the same time.
    pub ingest_workers: usize,
    /// Wall-time bound of one extraction.
    pub extract_timeout_seconds: u64,
    /// Address-space bound of one extraction process.
    pub extract_memory_bytes: u64,
    /// Bound on the decompressed size of zip-based documents.
    pub max_decompressed_bytes: u64,
    /// Bound on the text extracted from one document.
    pub max_text_bytes: u64,
    /// Tokens per chunk (capped by the embedding model).
    pub chunk_tokens: usize,
    /// Tokens shared by neighbouring chunks of one long section.
    pub chunk_overlap_tokens: usize,
    /// Scalar kind stored in the vector index.
    pub vector_scalar: VectorScalar,
    /// HNSW graph connectivity (M).
    pub hnsw_connectivity: usize,
    /// HNSW candidate list size while adding.
    pub hnsw_expansion_add: usize,
    /// HNSW candidate list size while searching, at least.
    pub hnsw_expansion_search: usize,
    /// Most HNSW candidates recall calibration may choose while searching.
    pub hnsw_expansion_search_max: usize,
    /// Recall@10 against exact search that each vector index is calibrated to; 0 turns
    /// calibration off.
    pub vector_recall_target: f64,
    /// Full-text language of new collections.
    pub default_language: String,
    /// Reciprocal-rank fusion constant.
    pub rrf_k: f64,
    /// Weight of the full-text ranking in hybrid search.
    pub rrf_text_weight: f64,
    /// Weight of the vector ranking in hybrid search.
    pub rrf_vector_weight: f64,
    /// How often changed vector indexes are saved.
    pub index_save_interval_seconds: u64,
    /// How long a collection's text index must have committed nothing before its segments
    /// are merged.
    pub text_merge_quiet_seconds: u64,
}

/// `[answers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswersConfig {
    /// Generator used when a request names none; empty means the only one configured.
    pub default_generator: String,
    /// Passages retrieved for an answer when the request does not say.
    pub top_k: usize,
    /// Most tokens of an answer when the request does not say.
    pub max_answer_tokens: usize,
    /// Earlier question/answer pairs of a chat put before a follow-up question.
    pub history_turns: usize,
    /// Most characters of one passage put in a prompt.
    pub max_passage_chars: usize,
}

/// `[generators.NAME]`: one language model.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GeneratorConfig {
    /// A decoder-only ONNX model run in the daemon.
    Onnx(OnnxGeneratorConfig),
    /// An OpenAI-compatible server on the box.
    Upstream(UpstreamConfig),
}

/// `[generators.NAME]` with `kind = "onnx"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxGeneratorConfig {
    /// The model file (`model.onnx` in the exporter layout with a KV cache).
    pub model: PathBuf,
    /// Its `tokenizer.json`; the one beside the model when absent.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Beginning-of-sequence token id; read from the files beside the model when absent.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids; read from the files beside the model when absent.
    #[serde(default)]
    pub eos_token_ids: Option<Vec<u32>>,
    /// Positions the model can attend to; read from `config.json` when absent.
    #[serde(default)]
    pub context_length: Option<usize>,
    /// A Jinja chat template; `tokenizer_config.json`'s when absent.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Intra-op threads; 0 means one per core.
    #[serde(default)]
    pub threads: usize,
    /// Sequences decoded together, across all sessions.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Sessions decoding in parallel, each on its own thread with its share of `max_batch`
    /// (and of the cores when `threads` is 0); each holds its own copy of the weights.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
}

fn default_max_batch() -> usize {
    8
}

fn default_sessions() -> usize {
    1
}

/// `[generators.NAME]` with `kind = "upstream"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The server's OpenAI base URL, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The model name the server knows.
    pub model: String,
    /// Bearer key sent to the server (prefer `api_key_env`: a config file is often readable).
    #[serde(default)]
    pub api_key: String,
    /// Name of an environment variable holding the key.
    #[serde(default)]
    pub api_key_env: String,
    /// Bound on connecting.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Bound on a whole answer.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_seconds: u64,
}

fn default_connect_timeout() -> u64 {
    5
}

fn default_upstream_timeout() -> u64 {
    120
}

/// Scalar kind of stored vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorScalar {
    /// 32-bit floats: exact.
    F32,
    /// bfloat16: half the memory, same recall on embedding vectors.
    Bf16,
    /// IEEE half floats.
    F16,
    /// 8-bit integers, quantised per vector.
    I8,
}

/// Triton's model control modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlMode {
    /// Load everything at start; no changes.
    None,
    /// Load on request only.
    Explicit,
    /// Load everything and follow changes on disk.
    Poll,
}

impl Config {
    /// The model repository folder.
    pub fn repository(&self) -> std::path::PathBuf {
        if self.serving.repository.is_empty() {
            self.data_dir.join("models")
        } else {
            PathBuf::from(&self.serving.repository)
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter directive.
    pub level: String,
    /// Where logs go.
    pub format: LogFormat,
}

/// Log destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald under systemd, terminal otherwise.
    Auto,
    /// Always journald.
    Journald,
    /// Always the terminal (stderr).
    Terminal,
}

/// Where a setting came from; named in every error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The embedded default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "built-in default configuration"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(name) => write!(f, "command-line flag {name}"),
        }
    }
}

/// A configuration error: where, which key, and what was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: {}{message}", key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The layer that holds the bad setting.
    pub origin: Origin,
    /// Dotted key path, when the error concerns one key.
    pub key: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    fn new(origin: &Origin, key: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.clone(),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

/// Which file layer to read.
#[derive(Debug, Clone)]
pub enum FileChoice {
    /// `--config FILE`: must exist.
    Explicit(PathBuf),
    /// The system file if present.
    System,
    /// No file layer (used by `config check` on the default alone).
    None,
}

/// Command-line overrides, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bind`.
    pub bind: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

/// A loaded configuration and the file it came from, if any.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged, validated configuration.
    pub config: Config,
    /// The file layer that was read.
    pub file: Option<PathBuf>,
}

/// Loads and validates the configuration from all layers, reading the process environment.
pub fn load(file: &FileChoice, overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != API_KEY_ENV)
        .collect();
    load_with_env(file, &env, overrides)
}

/// As [`load`], with the environment given explicitly.
pub fn load_with_env(
    file: &FileChoice,
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let default_origin = Origin::Default;
    let default = parse_table(DEFAULT_CONFIG, &default_origin)?;
    let mut merged = default.clone();
    check(&merged, &default_origin)?;

    let file_path = match file {
        FileChoice::Explicit(p) => Some(p.clone()),
        FileChoice::System if Path::new(SYSTEM_CONFIG_PATH).exists() => {
            Some(PathBuf::from(SYSTEM_CONFIG_PATH))
        }
        _ => None,
    };
    if let Some(path) = &file_path {
        let origin = Origin::File(path.clone());
        let text = std::fs::read_to_string(path).map_err(|e| {
            let what = match e.kind() {
                std::io::ErrorKind::NotFound => "file not found".to_string(),
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied reading the file (run as root or the sparkbrain user)"
                        .to_string()
                }
                _ => format!("cannot read the file: {e}"),
            };
            ConfigError::new(&origin, None, what)
        })?;
        let table = parse_table(&text, &origin)?;
        merge(&mut merged, table);
        check(&merged, &origin)?;
    }

    let mut env_sorted: Vec<&(String, String)> = env.iter().collect();
    env_sorted.sort();
    for (name, value) in env_sorted {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let origin = Origin::Env(name.clone());
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let key = path.join(".");
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::new(
                &origin,
                Some(&key),
                "malformed variable name: use SPARKBRAIN_SECTION__KEY, e.g. SPARKBRAIN_SERVER__BIND",
            ));
        }
        let typed = env_value(&default, &path, value)
            .map_err(|m| ConfigError::new(&origin, Some(&key), m))?;
        set_path(&mut merged, &path, typed);
        check(&merged, &origin)?;
    }

    let flags: [(&str, &[&str], Option<toml::Value>); 3] = [
        (
            "--bind",
            &["server", "bind"],
            overrides.bind.clone().map(toml::Value::String),
        ),
        (
            "--data-dir",
            &["data_dir"],
            overrides
                .data_dir
                .as_ref()
                .map(|p| toml::Value::String(p.display().to_string())),
        ),
        (
            "--log-level",
            &["log", "level"],
            overrides.log_level.clone().map(toml::Value::String),
        ),
    ];
    for (flag, path, value) in flags {
        if let Some(value) = value {
            let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            set_path(&mut merged, &path, value);
            check(&merged, &Origin::Flag(flag.to_string()))?;
        }
    }

    let config = check(&merged, &Origin::Default)?;
    Ok(Loaded {
        config,
        file: file_path,
    })
}

fn parse_table(text: &str, origin: &Origin) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let message = e.message().to_string();
        let location = e
            .span()
            .map(|span| {
                let (line, col) = line_col(text, span.start);
                format!("line {line}, column {col}: ")
            })
            .unwrap_or_default();
        ConfigError::new(origin, None, format!("not valid TOML: {location}{message}"))
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

/// Converts an environment string to the TOML type the default has at that key.
fn env_value(default: &toml::Table, path: &[String], raw: &str) -> Result<toml::Value, String> {
    let mut current = default;
    let mut found = None;
    for (i, part) in path.iter().enumerate() {
        match current.get(part) {
            Some(toml::Value::Table(t)) if i + 1 < path.len() => current = t,
            Some(v) if i + 1 == path.len() => found = Some(v),
            _ => return Err("unknown configuration key".to_string()),
        }
    }
    match found {
        Some(toml::Value::String(_)) => Ok(toml::Value::String(raw.to_string())),
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("invalid value {raw:?}: expected an integer")),
        Some(toml::Value::Boolean(_)) => match raw.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("invalid value {raw:?}: expected true or false")),
        },
        Some(toml::Value::Array(_)) => {
            // Either a TOML array (`["a", "b"]`) or a comma-separated list of strings.
            let trimmed = raw.trim();
            if trimmed.starts_with('[') {
                format!("v = {trimmed}")
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut t| t.remove("v"))
                    .ok_or_else(|| {
                        format!("invalid value {raw:?}: expected a list like [\"a\", \"b\"]")
                    })
            } else {
                Ok(toml::Value::Array(
                    trimmed
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ))
            }
        }
        Some(toml::Value::Float(_)) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("invalid value {raw:?}: expected a number")),
        _ => Err("this key is a section, not a value".to_string()),
    }
}

/// Deserializes and validates a merged table; errors are attributed to `origin`.
fn check(table: &toml::Table, origin: &Origin) -> Result<Config, ConfigError> {
    let value = toml::Value::Table(table.clone());
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let full = e.into_inner().to_string();
        // The TOML value deserializer appends "\nin `table`"; the key path already says where.
        let inner = full.split("\nin `").next().unwrap_or(&full).trim();
        let (key, message) = describe_serde_error(&path, inner);
        ConfigError::new(origin, key.as_deref(), message)
    })?;
    config
        .validate()
        .map_err(|(key, message)| ConfigError::new(origin, Some(key), message))?;
    Ok(config)
}

/// Turns serde's wording into a key path and a message a person can act on.
fn describe_serde_error(path: &str, inner: &str) -> (Option<String>, String) {
    let path = (path != ".").then(|| path.to_string());
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let key = match &path {
            Some(p) if !p.ends_with(field) => format!("{p}.{field}"),
            Some(p) => p.clone(),
            None => field.to_string(),
        };
        let expected = expected.trim_start_matches(", ");
        return (Some(key), format!("unknown key ({expected})"));
    }
    if let Some(rest) = inner.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        let key = match &path {
            Some(p) => format!("{p}.{field}"),
            None => field.to_string(),
        };
        return (Some(key), "missing key".to_string());
    }
    let message = ["u64", "u32", "usize"]
        .iter()
        .fold(inner.to_string(), |m, t| {
            m.replace(
                &format!("expected {t}"),
                "expected a whole number (0 or more)",
            )
        });
    (path, message)
}

impl Config {
    /// The listen address (validated at load time).
    pub fn bind_addr(&self) -> SocketAddr {
        // Validation guarantees this parses; the fallback is the documented default.
        self.server
            .bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8470)))
    }

    /// Whether the listener must use TLS (any non-loopback address).
    pub fn uses_tls(&self) -> bool {
        !self.bind_addr().ip().is_loopback()
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.server.bind.parse::<SocketAddr>().is_err() {
            return Err((
                "server.bind",
                format!(
                    "invalid address {:?}: expected IP:PORT, e.g. 127.0.0.1:8470 or [::1]:8470",
                    self.server.bind
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(("data_dir", "must not be empty".to_string()));
        }
        if self.models.embedding_name.trim().is_empty() || self.models.embedding_name.contains('/')
        {
            return Err((
                "models.embedding_name",
                format!(
                    "{:?} cannot name a model: use a non-empty name without '/'",
                    self.models.embedding_name
                ),
            ));
        }
        if self.tls.certificate.is_empty() != self.tls.private_key.is_empty() {
            return Err((
                "tls.certificate",
                "set both tls.certificate and tls.private_key, or neither".to_string(),
            ));
        }
        self.validate_answers()?;
        self.validate_gpu()?;
        self.validate_backup()?;
        self.validate_volume()?;
        let positive: [(&'static str, u64); 18] = [
            (
                "auth.access_token_ttl_seconds",
                self.auth.access_token_ttl_seconds,
            ),
            (
                "auth.refresh_token_ttl_seconds",
                self.auth.refresh_token_ttl_seconds,
            ),
            ("auth.login_window_seconds", self.auth.login_window_seconds),
            ("server.max_body_bytes", self.server.max_body_bytes),
            ("serving.max_request_bytes", self.serving.max_request_bytes),
            ("serving.cache_ttl_seconds", self.serving.cache_ttl_seconds),
            (
                "models.embedding_instances",
                self.models.embedding_instances as u64,
            ),
            ("kb.max_document_bytes", self.kb.max_document_bytes),
            ("kb.ingest_workers", self.kb.ingest_workers as u64),
            (
                "kb.extract_timeout_seconds",
                self.kb.extract_timeout_seconds,
            ),
            ("kb.extract_memory_bytes", self.kb.extract_memory_bytes),
            ("kb.max_decompressed_bytes", self.kb.max_decompressed_bytes),
            ("kb.max_text_bytes", self.kb.max_text_bytes),
            ("kb.chunk_tokens", self.kb.chunk_tokens as u64),
            ("kb.hnsw_connectivity", self.kb.hnsw_connectivity as u64),
            (
                "kb.hnsw_expansion_search",
                self.kb.hnsw_expansion_search as u64,
            ),
            (
                "kb.index_save_interval_seconds",
                self.kb.index_save_interval_seconds,
            ),
            (
                "kb.text_merge_quiet_seconds",
                self.kb.text_merge_quiet_seconds,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key, "must be greater than 0".to_string()));
            }
        }
        if self.auth.login_max_failures_per_account == 0
            || self.auth.login_max_failures_per_address == 0
        {
            return Err((
                "auth.login_max_failures_per_account",
                "sign-in limits must be greater than 0".to_string(),
            ));
        }
        if self.serving.execution_providers.is_empty() {
            return Err((
                "serving.execution_providers",
                "list at least one provider, e.g. [\"cpu\"]".to_string(),
            ));
        }
        if self.serving.poll_interval_seconds == 0 {
            return Err((
                "serving.poll_interval_seconds",
                "must be greater than 0".to_string(),
            ));
        }
        if self.kb.chunk_overlap_tokens * 2 > self.kb.chunk_tokens {
            return Err((
                "kb.chunk_overlap_tokens",
                format!(
                    "{} is more than half of kb.chunk_tokens ({}): chunks would repeat more than they add",
                    self.kb.chunk_overlap_tokens, self.kb.chunk_tokens
                ),
            ));
        }
        if self.kb.hnsw_expansion_search_max < self.kb.hnsw_expansion_search {
            return Err((
                "kb.hnsw_expansion_search_max",
                format!(
                    "{} is less than kb.hnsw_expansion_search ({})",
                    self.kb.hnsw_expansion_search_max, self.kb.hnsw_expansion_search
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.kb.vector_recall_target) {
            return Err((
                "kb.vector_recall_target",
                "must be between 0 (calibration off) and 1, e.g. 0.95".to_string(),
            ));
        }
        if crate::kb::Language::parse(&self.kb.default_language).is_none() {
            return Err((
                "kb.default_language",
                format!(
                    "unknown language {:?}: use one of {}",
                    self.kb.default_language,
                    crate::kb::Language::NAMES.join(", ")
                ),
            ));
        }
        for (key, value) in [
            ("kb.rrf_k", self.kb.rrf_k),
            ("kb.rrf_text_weight", self.kb.rrf_text_weight),
            ("kb.rrf_vector_weight", self.kb.rrf_vector_weight),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err((key, "must be a number of 0 or more".to_string()));
            }
        }
        if self.auth.min_password_length < 8 {
            return Err(("auth.min_password_length", "must be at least 8".to_string()));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err((
                "log.level",
                format!(
                    "invalid filter {:?}: expected error, warn, info, debug, trace or a filter like \"info,sparkbrain=debug\"",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Checks `[gpu]`.
    fn validate_backup(&self) -> Result<(), (&'static str, String)> {
        let b = &self.backup;
        if !b.passphrase_file.as_os_str().is_empty() && !b.recipients.is_empty() {
            return Err((
                "backup.recipients",
                "set backup.passphrase_file or backup.recipients, not both".to_string(),
            ));
        }
        if let Some(bad) = b.recipients.iter().find(|r| !r.trim().starts_with("age1")) {
            return Err((
                "backup.recipients",
                format!("{bad:?} is not an age public key (they start with age1)"),
            ));
        }
        if !(5..=5120).contains(&b.s3.part_size_mib) {
            return Err((
                "backup.s3.part_size_mib",
                format!(
                    "{} is outside S3's part sizes: use 5 to 5120",
                    b.s3.part_size_mib
                ),
            ));
        }
        let target = b.target.trim();
        if target.contains("://") && !target.starts_with("s3://") {
            return Err((
                "backup.target",
                format!("{target:?}: use a folder or s3://bucket/prefix"),
            ));
        }
        Ok(())
    }

    fn validate_volume(&self) -> Result<(), (&'static str, String)> {
        let v = &self.volume;
        if v.required() && !crate::volume::valid_name(&v.data) {
            return Err((
                "volume.data",
                format!(
                    "{:?} cannot name a volume: use 1 to 32 lowercase letters, digits, '-' or '_'",
                    v.data
                ),
            ));
        }
        if v.pbkdf_memory_kib < 32 || v.pbkdf_memory_kib > 4 * 1024 * 1024 {
            return Err((
                "volume.pbkdf_memory_kib",
                format!(
                    "{} is outside argon2id's range for cryptsetup: use 32 to 4194304 (4 GiB)",
                    v.pbkdf_memory_kib
                ),
            ));
        }
        if v.pbkdf_parallel == 0 {
            return Err(("volume.pbkdf_parallel", "must be greater than 0".into()));
        }
        Ok(())
    }

    fn validate_gpu(&self) -> Result<(), (&'static str, String)> {
        let g = &self.gpu;
        if !(100..=3_600_000).contains(&g.sample_interval_ms) {
            return Err((
                "gpu.sample_interval_ms",
                format!(
                    "{} is out of range 100-3600000 (milliseconds)",
                    g.sample_interval_ms
                ),
            ));
        }
        if g.history_seconds > 86_400 || g.history_minutes > 43_200 {
            return Err((
                "gpu.history_seconds",
                "gpu.history_seconds must be at most 86400 and gpu.history_minutes at most 43200"
                    .to_string(),
            ));
        }
        if !(g.placement_memory_factor.is_finite() && g.placement_memory_factor >= 1.0) {
            return Err((
                "gpu.placement_memory_factor",
                format!(
                    "{} must be a number of at least 1",
                    g.placement_memory_factor
                ),
            ));
        }
        if let Some(bad) = g
            .host_services
            .iter()
            .find(|u| u.is_empty() || u.contains('/') || !u.contains('.'))
        {
            return Err((
                "gpu.host_services",
                format!("{bad:?} is not a systemd unit name such as nvidia-persistenced.service"),
            ));
        }
        Ok(())
    }

    /// Checks `[answers]` and `[generators.*]`.
    fn validate_answers(&self) -> Result<(), (&'static str, String)> {
        let a = &self.answers;
        if !(1..=50).contains(&a.top_k) {
            return Err(("answers.top_k", format!("{} is out of range 1-50", a.top_k)));
        }
        if a.max_answer_tokens == 0 || a.max_passage_chars == 0 {
            return Err((
                "answers.max_answer_tokens",
                "answers.max_answer_tokens and answers.max_passage_chars must be greater than 0"
                    .to_string(),
            ));
        }
        if !a.default_generator.is_empty() && !self.generators.contains_key(&a.default_generator) {
            return Err((
                "answers.default_generator",
                format!(
                    "no generator {:?} is configured (configured: {})",
                    a.default_generator,
                    self.generators
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        for (name, generator) in &self.generators {
            if name.trim().is_empty() || name.contains('/') || *name == self.models.embedding_name {
                return Err((
                    "generators",
                    format!(
                        "{name:?} cannot name a generator: use a non-empty name without '/' \
                         that is not the embedding model's"
                    ),
                ));
            }
            match generator {
                GeneratorConfig::Onnx(g) => {
                    if g.max_batch == 0 {
                        return Err((
                            "generators",
                            format!("generators.{name}.max_batch must be greater than 0"),
                        ));
                    }
                    if !(1..=g.max_batch).contains(&g.sessions) {
                        return Err((
                            "generators",
                            format!(
                                "generators.{name}.sessions {} is out of range 1-{} (max_batch)",
                                g.sessions, g.max_batch
                            ),
                        ));
                    }
                }
                GeneratorConfig::Upstream(g) => {
                    if !(g.base_url.starts_with("http://") || g.base_url.starts_with("https://")) {
                        return Err((
                            "generators",
                            format!(
                                "generators.{name}.base_url {:?} is not an http:// or https:// URL",
                                g.base_url
                            ),
                        ));
                    }
                    if g.model.trim().is_empty() || g.timeout_seconds == 0 {
                        return Err((
                            "generators",
                            format!(
                                "generators.{name} needs a model name and a timeout_seconds above 0"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_with_env(&FileChoice::Explicit(path), &env, &Overrides::default()).map(|l| l.config)
    }

    #[test]
    fn default_is_valid() {
        let loaded = load_with_env(&FileChoice::None, &[], &Overrides::default()).unwrap();
        assert_eq!(loaded.config.server.bind, "127.0.0.1:8470");
        assert!(!loaded.config.uses_tls());
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let err = load_text("[server]\nbindd = \"x\"\n", &[]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("server.bindd"));
        assert!(err.message.starts_with("unknown key"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_expectation() {
        let err = load_text("[server]\nshutdown_grace_seconds = \"soon\"\n", &[]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("server.shutdown_grace_seconds"));
        assert_eq!(
            err.message,
            "invalid type: string \"soon\", expected a whole number (0 or more)"
        );
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let cfg = load_text(
            "[server]\nbind = \"127.0.0.1:1\"\n",
            &[("SPARKBRAIN_SERVER__BIND", "127.0.0.1:2")],
        )
        .unwrap();
        assert_eq!(cfg.server.bind, "127.0.0.1:2");
        let loaded = load_with_env(
            &FileChoice::None,
            &[("SPARKBRAIN_SERVER__BIND".into(), "127.0.0.1:2".into())],
            &Overrides {
                bind: Some("127.0.0.1:3".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(loaded.config.server.bind, "127.0.0.1:3");
    }

    #[test]
    fn env_integer_is_typed() {
        let err = load_text("", &[("SPARKBRAIN_AUTH__LOGIN_WINDOW_SECONDS", "ten")]).unwrap_err();
        assert_eq!(
            err.origin,
            Origin::Env("SPARKBRAIN_AUTH__LOGIN_WINDOW_SECONDS".into())
        );
        assert!(err.message.contains("expected an integer"));
    }

    #[test]
    fn env_lists_take_toml_or_commas() {
        let cfg = load_text(
            "",
            &[("SPARKBRAIN_SERVING__EXECUTION_PROVIDERS", "cuda, cpu")],
        )
        .unwrap();
        assert_eq!(
            cfg.serving.execution_providers,
            vec![
                crate::inference::Provider::Cuda,
                crate::inference::Provider::Cpu
            ]
        );
        let cfg = load_text(
            "",
            &[("SPARKBRAIN_SERVING__STARTUP_MODELS", "[\"a\", \"b\"]")],
        )
        .unwrap();
        assert_eq!(cfg.serving.startup_models, vec!["a", "b"]);
        let err = load_text("", &[("SPARKBRAIN_SERVING__EXECUTION_PROVIDERS", "gpu")]).unwrap_err();
        assert_eq!(
            err.key.as_deref(),
            Some("serving.execution_providers[0]"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = load_text("[server]\nbind = \n", &[]).unwrap_err();
        assert!(err.message.contains("line 2"), "{err}");
    }

    #[test]
    fn recall_calibration_settings_out_of_range_are_named() {
        let err = load_text(
            "[kb]\nhnsw_expansion_search = 256\nhnsw_expansion_search_max = 128\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("kb.hnsw_expansion_search_max"));
        assert_eq!(
            err.message,
            "128 is less than kb.hnsw_expansion_search (256)"
        );
        for target in ["1.5", "-0.1"] {
            let err =
                load_text(&format!("[kb]\nvector_recall_target = {target}\n"), &[]).unwrap_err();
            assert_eq!(
                err.key.as_deref(),
                Some("kb.vector_recall_target"),
                "{target}"
            );
            assert!(err.message.contains("between 0"), "{err}");
        }
        let cfg = load_text("[kb]\nvector_recall_target = 0\n", &[]).unwrap();
        assert_eq!(cfg.kb.vector_recall_target, 0.0, "0 turns calibration off");
    }
}
