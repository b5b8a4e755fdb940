//! A reader for GGUF, the model file format of llama.cpp.
//!
//! It reads the header of a GGUF file (versions 1, 2 and 3, little- and big-endian):
//! the metadata, the tensor infos and where the tensor data starts, and derives a
//! [`Summary`] of the model and a [`MemoryEstimate`] for a context length. It never
//! reads tensor data, and skips large arrays (a vocabulary) unless asked.
//!
//! It works over anything that is `Read + Seek`, or over a byte slice that may be
//! only the first megabytes of a file. It knows nothing of files on disk, databases,
//! HTTP or async runtimes.
//!
//! Untrusted input is the normal case: every count and length is checked against
//! the bytes left and a fixed limit before anything is allocated, and every error
//! names the offset where the file went wrong.
//!
//! ```
//! let bytes = std::fs::read("tests/fixtures/llama-q4_0.gguf").unwrap();
//! let gguf = gguf::read_bytes(&bytes, &gguf::ReadOptions::default()).unwrap();
//! let summary = gguf.summary();
//! assert_eq!(summary.architecture.as_deref(), Some("llama"));
//! assert_eq!(summary.quantization.as_deref(), Some("Q4_0"));
//! ```
#![deny(missing_docs)]

mod error;
mod reader;
mod split;
mod summary;
mod types;
mod value;

pub use error::GgufError;
pub use reader::{
    DEFAULT_ALIGNMENT, Gguf, MAX_ARRAY_LEN, MAX_DEPTH, MAX_DIMS, MAX_KV, MAX_STRING_LEN,
    MAX_TENSORS, ReadOptions, TensorInfo, read, read_bytes,
};
pub use split::{Split, SplitError, summary_of_shards};
pub use summary::{MemoryEstimate, Projector, Summary};
pub use types::{GgmlType, file_type_name, quantization_names};
pub use value::{Array, Value, ValueType};
