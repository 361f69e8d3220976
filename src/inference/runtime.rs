//! Finding and loading ONNX Runtime (loaded at run time, never linked) and the embedding model.

use std::io::Read;
use std::path::{Path, PathBuf};

use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use ort::session::Session;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{MemoryMode, ModelsConfig, RuntimeConfig};

/// The library file name the onnxruntime wheel ships (it has no unversioned symlink).
const LIBRARY_NAMES: &[&str] = &[
    "libonnxruntime.so.1.31.1",
    "libonnxruntime.so.1",
    "libonnxruntime.so",
];

/// Folders searched, in order, when neither the config nor `ORT_DYLIB_PATH` names the library.
const SEARCH_DIRS: &[&str] = &[
    "/usr/lib/sparkbrain",
    "/usr/local/lib",
    "vendor/onnxruntime",
];

/// Why the runtime or a model is not usable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// No library file was found.
    #[error(
        "ONNX Runtime library not found (looked at {}); install it, set runtime.onnxruntime_library or ORT_DYLIB_PATH, or run `just fetch`",
        .looked.join(", ")
    )]
    LibraryNotFound {
        /// Paths tried.
        looked: Vec<String>,
    },
    /// The library exists but could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    LibraryLoad {
        /// The library path.
        path: String,
        /// The loader's message.
        message: String,
    },
    /// A model file is missing.
    #[error("{what} not found at {path}; install it or set {key}")]
    ModelMissing {
        /// Which file.
        what: &'static str,
        /// Where it was expected.
        path: String,
        /// The config key naming it.
        key: &'static str,
    },
    /// ONNX Runtime refused the model.
    #[error("cannot load the model {path}: {message}")]
    ModelLoad {
        /// The model path.
        path: String,
        /// ONNX Runtime's message.
        message: String,
    },
}

/// Finds the library: config, then `ORT_DYLIB_PATH`, then the standard folders.
pub fn find_library(config: &RuntimeConfig) -> Result<PathBuf, RuntimeError> {
    let mut looked = Vec::new();
    let explicit = [
        Some(config.onnxruntime_library.clone()).filter(|s| !s.is_empty()),
        std::env::var("ORT_DYLIB_PATH")
            .ok()
            .filter(|s| !s.is_empty()),
    ];
    if let Some(path) = explicit.into_iter().flatten().next() {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        looked.push(path.display().to_string());
        return Err(RuntimeError::LibraryNotFound { looked });
    }
    for dir in SEARCH_DIRS {
        for name in LIBRARY_NAMES {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        looked.push(format!("{dir}/{}", LIBRARY_NAMES[0]));
    }
    Err(RuntimeError::LibraryNotFound { looked })
}

/// A loaded ONNX Runtime: the library, its version and the process's environment.
pub struct Runtime {
    library: PathBuf,
    version: String,
    environment: Environment,
    /// Intra-op threads spin while waiting (`runtime.intra_op_spinning`).
    spinning: bool,
}

/// Execution providers compiled into the loaded library.
#[derive(Debug, Clone, Serialize)]
pub struct Providers {
    /// TensorRT is available in this build.
    pub tensorrt: bool,
    /// CUDA is available in this build.
    pub cuda: bool,
    /// The CPU provider (always present).
    pub cpu: bool,
}

impl Runtime {
    /// Loads the library and creates the process's one ONNX Runtime environment.
    /// Call at most once per process.
    pub fn load(config: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let library = find_library(config)?;
        let load_err = |message: String| RuntimeError::LibraryLoad {
            path: library.display().to_string(),
            message,
        };
        let builder = ort::init_from(&library).map_err(|e| load_err(e.to_string()))?;
        let environment = builder
            .with_name("sparkbrain")
            .build()
            .map_err(|e| load_err(e.to_string()))?;
        let version = library_version(&library).map_err(load_err)?;
        Ok(Runtime {
            library,
            version,
            environment,
            spinning: config.intra_op_spinning,
        })
    }

    /// The library file that was loaded.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The library's version, e.g. `1.31.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Which execution providers the library was built with. A GPU provider being available
    /// here does not mean a GPU works: sessions record what they actually got.
    pub fn providers(&self) -> Providers {
        Providers {
            tensorrt: ort::ep::TensorRT::is_available().unwrap_or(false),
            cuda: ort::ep::CUDA::is_available().unwrap_or(false),
            cpu: ort::ep::CPU::is_available().unwrap_or(true),
        }
    }

    /// Opens a session on the first execution provider of `spec.chain` that ONNX Runtime
    /// accepts, and says which one that was. Registration is made to fail loudly, because ONNX
    /// Runtime would otherwise fall back to the CPU without a word.
    pub fn open(&self, spec: &SessionSpec<'_>) -> Result<OpenedSession, RuntimeError> {
        self.open_with(spec, true)
    }

    /// As [`Runtime::open`], for a model whose input shapes change from one run to the next (a
    /// decoder whose KV cache grows by a position per step): ONNX Runtime's memory pattern,
    /// planned per input shape, is turned off. Kept on, it is planned again for each new shape
    /// and made batched decoding of stories260K about 40% slower.
    pub fn open_dynamic(&self, spec: &SessionSpec<'_>) -> Result<OpenedSession, RuntimeError> {
        self.open_with(spec, false)
    }

    fn open_with(
        &self,
        spec: &SessionSpec<'_>,
        memory_pattern: bool,
    ) -> Result<OpenedSession, RuntimeError> {
        let model_err = |message: String| RuntimeError::ModelLoad {
            path: spec.path.display().to_string(),
            message,
        };
        let threads = match spec.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut base = Session::builder(&self.environment)
            .map_err(|e| model_err(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| model_err(e.to_string()))?;
        if !self.spinning {
            base = base
                .with_intra_op_spinning(false)
                .map_err(|e| model_err(e.to_string()))?;
        }
        if !memory_pattern {
            base = base
                .with_memory_pattern(false)
                .map_err(|e| model_err(e.to_string()))?;
        }
        if spec.memory_mode == MemoryMode::Compact {
            // Constant folding expands int8 weights to float at load (4x their size).
            base = base
                .with_disabled_optimizers("ConstantFolding")
                .map_err(|e| model_err(e.to_string()))?;
        }
        let mut refused = Vec::new();
        for provider in spec.chain {
            let dispatch = match provider {
                Provider::Tensorrt => {
                    let mut ep = ort::ep::TensorRT::default().with_fp16(spec.tensorrt.fp16);
                    if let Some(gpu) = spec.gpu {
                        ep = ep.with_device_id(i32::try_from(gpu).unwrap_or(0));
                    }
                    if let Some(cache) = spec.tensorrt.engine_cache {
                        ep = ep
                            .with_engine_cache(true)
                            .with_engine_cache_path(cache.display());
                    }
                    ep.build()
                }
                Provider::Cuda => {
                    let mut ep = ort::ep::CUDA::default();
                    if let Some(gpu) = spec.gpu {
                        ep = ep.with_device_id(i32::try_from(gpu).unwrap_or(0));
                    }
                    ep.build()
                }
                // The arena keeps a run's peak allocation for the life of the session.
                Provider::Cpu => ort::ep::CPU::default()
                    .with_arena_allocator(spec.memory_mode == MemoryMode::Fast)
                    .build(),
            };
            let attempt = base
                .clone()
                .with_execution_providers([dispatch.error_on_failure()])
                .map_err(|e| e.to_string())
                .and_then(|mut b| b.commit_from_file(spec.path).map_err(|e| e.to_string()));
            match attempt {
                Ok(session) => {
                    return Ok(OpenedSession {
                        session,
                        provider: *provider,
                        refused,
                    });
                }
                Err(message) if *provider == Provider::Cpu => return Err(model_err(message)),
                Err(message) => refused.push(format!("{}: {message}", provider.ort_name())),
            }
        }
        Err(model_err(format!(
            "no execution provider in the chain accepted the model ({})",
            refused.join("; ")
        )))
    }
}

/// Checks that the built-in embedding model's files exist; the error names the setting to fix.
pub fn check_model_files(models: &ModelsConfig) -> Result<(), RuntimeError> {
    let query = (
        "query embedding model",
        &models.embedding_query_model,
        "models.embedding_query_model",
    );
    let optional = (!models.embedding_query_model.as_os_str().is_empty()).then_some(query);
    for (what, path, key) in [
        (
            "embedding model",
            &models.embedding_model,
            "models.embedding_model",
        ),
        (
            "embedding tokenizer",
            &models.embedding_tokenizer,
            "models.embedding_tokenizer",
        ),
    ]
    .into_iter()
    .chain(optional)
    {
        if !path.is_file() {
            return Err(RuntimeError::ModelMissing {
                what,
                path: path.display().to_string(),
                key,
            });
        }
    }
    Ok(())
}

/// An execution provider sparkbrain can ask ONNX Runtime for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// NVIDIA TensorRT.
    Tensorrt,
    /// NVIDIA CUDA.
    Cuda,
    /// The CPU (MLAS).
    Cpu,
}

impl Provider {
    /// ONNX Runtime's name for it, as shown in metadata, metrics and logs.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::Tensorrt => "TensorrtExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::Cpu => "CPUExecutionProvider",
        }
    }
}

/// TensorRT settings from a model's `optimization.execution_accelerators`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TensorRtOptions<'a> {
    /// Build FP16 engines.
    pub fp16: bool,
    /// Keep built engines in this folder.
    pub engine_cache: Option<&'a Path>,
}

/// What to open and how.
#[derive(Debug, Clone, Copy)]
pub struct SessionSpec<'a> {
    /// The ONNX file.
    pub path: &'a Path,
    /// Intra-op threads; 0 means one per core.
    pub threads: usize,
    /// Memory against speed.
    pub memory_mode: MemoryMode,
    /// Providers to try, in order; the CPU should come last.
    pub chain: &'a [Provider],
    /// The GPU for CUDA and TensorRT (their default device when `None`).
    pub gpu: Option<u32>,
    /// TensorRT settings, used when TensorRT is tried.
    pub tensorrt: TensorRtOptions<'a>,
}

/// A session and the provider that actually serves it.
pub struct OpenedSession {
    /// The session.
    pub session: Session,
    /// The provider ONNX Runtime accepted.
    pub provider: Provider,
    /// Providers tried first and refused, with ONNX Runtime's reason.
    pub refused: Vec<String>,
}

/// A model file with its size and SHA-256, for `doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFile {
    /// Path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Hashes a file in streaming fashion.
pub fn file_sha256(path: &Path) -> std::io::Result<ModelFile> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(ModelFile {
        path: path.to_path_buf(),
        size_bytes: size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Asks the library for its version through `OrtGetApiBase()->GetVersionString()`, the one
/// entry point that is stable across ONNX Runtime releases.
fn library_version(path: &Path) -> Result<String, String> {
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: the library was just loaded by ort from this path, so opening it again only takes
    // another reference; `OrtGetApiBase` has this signature in every release, returns a pointer
    // to a static table, and `GetVersionString` returns a static NUL-terminated string.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let get: libloading::Symbol<GetApiBase> = lib
            .get(b"OrtGetApiBase\0")
            .map_err(|_| "the library does not export OrtGetApiBase".to_string())?;
        let base = get();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return Err("GetVersionString returned null".into());
        }
        Ok(std::ffi::CStr::from_ptr(version)
            .to_string_lossy()
            .into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_missing_library_is_reported() {
        let cfg = RuntimeConfig {
            onnxruntime_library: "/nonexistent/libonnxruntime.so".into(),
            intra_op_spinning: false,
            intra_op_threads: 0,
            memory_mode: MemoryMode::Compact,
        };
        let err = find_library(&cfg).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    }
}
