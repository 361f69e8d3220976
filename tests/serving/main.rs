//! Black-box tests of model serving: the Triton-style repository and the KServe v2 protocol.

#[path = "../common/mod.rs"]
mod common;

mod classify;
mod clients;
mod infer;
mod repository;
