//! Model inference on ONNX Runtime: the runtime library and execution providers, a Triton-style
//! model repository, and serving — each loaded version has a scheduler whose workers run
//! batches on the version's instances, with text tasks (embedding, classification) on top.

mod batcher;
mod cache;
pub mod generate;
pub mod generators;
mod manager;
pub mod model_config;
pub mod placement;
pub mod repository;
mod runtime;
mod scheduler;
mod served;
pub mod tensor;
pub mod text;
pub mod upstream;

pub use manager::{IndexEntry, ModelManager, ServingError};
pub use runtime::{
    ModelFile, OpenedSession, Provider, Runtime, RuntimeError, SessionSpec, TensorRtOptions,
    check_model_files, file_sha256, find_library,
};
pub use served::{Classified, ServedModel};
pub use text::TextTask;
