//! One module per top-level subcommand.

pub mod client;
pub mod gguf;
pub mod models;
pub mod workers;
