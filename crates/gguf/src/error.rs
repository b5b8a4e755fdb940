use std::io;

/// Everything that can be wrong with a GGUF file. Every variant names the byte
/// offset where the problem was found.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum GgufError {
    #[error("not a GGUF file: the magic at offset 0 is {found:?}, expected \"GGUF\"")]
    BadMagic { found: String },

    #[error(
        "unsupported GGUF version {version} at offset 4 (this reader knows versions 1, 2 and 3)"
    )]
    UnsupportedVersion { version: u32 },

    #[error(
        "unexpected end of data at offset {offset}: {needed} bytes needed for {what}, only {available} left"
    )]
    UnexpectedEof {
        offset: u64,
        what: String,
        needed: u64,
        available: u64,
    },

    #[error("{what} {value} at offset {offset} is over the limit of {limit}")]
    TooLarge {
        offset: u64,
        what: &'static str,
        value: u64,
        limit: u64,
    },

    #[error("unknown value type {value} at offset {offset}")]
    BadValueType { offset: u64, value: u32 },

    #[error("arrays nested more than {limit} levels deep at offset {offset}")]
    TooDeep { offset: u64, limit: u32 },

    #[error("invalid general.alignment {value} at offset {offset}: {reason}")]
    BadAlignment {
        offset: u64,
        value: String,
        reason: &'static str,
    },

    #[error("duplicate key {key:?} at offset {offset}")]
    DuplicateKey { offset: u64, key: String },

    #[error("invalid utf-8 in {what} at offset {offset}")]
    BadUtf8 { offset: u64, what: &'static str },

    #[error("tensor {name:?} at offset {offset}: {reason}")]
    BadTensor {
        offset: u64,
        name: String,
        reason: String,
    },

    #[error("duplicate tensor {name:?} at offset {offset}")]
    DuplicateTensor { offset: u64, name: String },

    #[error(
        "tensor data is truncated: tensor {name:?} ends at offset {end}, but the file has {len} bytes"
    )]
    TruncatedData { name: String, end: u64, len: u64 },

    #[error("read error at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

impl GgufError {
    /// The byte offset the error refers to.
    pub fn offset(&self) -> u64 {
        match self {
            Self::BadMagic { .. } => 0,
            Self::UnsupportedVersion { .. } => 4,
            Self::TruncatedData { len, .. } => *len,
            Self::UnexpectedEof { offset, .. }
            | Self::TooLarge { offset, .. }
            | Self::BadValueType { offset, .. }
            | Self::TooDeep { offset, .. }
            | Self::BadAlignment { offset, .. }
            | Self::DuplicateKey { offset, .. }
            | Self::BadUtf8 { offset, .. }
            | Self::BadTensor { offset, .. }
            | Self::DuplicateTensor { offset, .. }
            | Self::Io { offset, .. } => *offset,
        }
    }

    /// Whether more bytes might make the data readable: the error is the end of
    /// the data, not something wrong in it. A caller that read only a prefix of a
    /// remote file fetches more and tries again.
    pub fn is_truncation(&self) -> bool {
        matches!(
            self,
            Self::UnexpectedEof { .. } | Self::TruncatedData { .. }
        )
    }
}
