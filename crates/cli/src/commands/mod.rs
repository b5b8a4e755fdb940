//! One module per top-level subcommand.

pub mod client;
pub mod fleet;
pub mod gguf;
pub mod job;
pub mod models;
pub mod names;
pub mod progress;
pub mod prompt_images;
pub mod run;
pub mod storage;
pub mod table;
pub mod workers;
