//! sparkbrain: a private AI appliance daemon. One process serves models, keeps a knowledge base
//! and answers questions with citations, on one box, with nothing leaving it.
//!
//! Start with `ARCHITECTURE` in the README; each folder under `src/` is one capability with a
//! narrow public face, and `daemon` assembles them into one [`daemon::App`].

pub mod api;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod gpu;
pub mod inference;
pub mod kb;
pub mod store;
pub mod telemetry;
pub mod volume;
