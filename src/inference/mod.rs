//! Model inference on ONNX Runtime. Today: locating and loading the runtime library and the
//! default embedding model; the model repository and serving build on this.

mod batcher;
mod cache;
mod manager;
pub mod model_config;
pub mod placement;
pub mod repository;
mod runtime;
mod scheduler;
mod served;
pub mod tensor;
pub mod text;

pub use manager::{IndexEntry, ModelManager, ServingError};
pub use runtime::{
    EmbeddingModel, ModelFile, OpenedSession, Provider, Runtime, RuntimeError, SessionSpec,
    TensorRtOptions, file_sha256, find_library,
};
pub use served::{Classified, ServedModel};
