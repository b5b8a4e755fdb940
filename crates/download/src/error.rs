use std::path::PathBuf;
use std::sync::Arc;

/// Why a download failed. Cloneable, so that every caller sharing one download
/// gets the same answer.
#[derive(Debug, Clone, thiserror::Error)]
#[allow(missing_docs)]
pub enum DownloadError {
    #[error("{url}: {status} {reason}")]
    Http {
        url: String,
        status: u16,
        reason: String,
    },

    #[error("{url}: unauthorized ({status}): {hint}")]
    Unauthorized {
        url: String,
        status: u16,
        hint: String,
    },

    #[error("{url}: not found (404)")]
    NotFound { url: String },

    #[error("{url}: {message}")]
    Network { url: String, message: String },

    #[error(
        "{url}: the server's certificate is not trusted by this machine ({message}); add its CA to the system's certificate store, or point SSL_CERT_FILE at it"
    )]
    Certificate { url: String, message: String },

    #[error("{url}: {message}")]
    Protocol { url: String, message: String },

    #[error("gave up on {url} after {attempts} tries: {last}")]
    RetriesExhausted {
        url: String,
        attempts: u32,
        last: String,
    },

    #[error("bad sha256 for {path}: expected {expected}, got {actual} (the bytes were deleted)")]
    Sha256Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("size mismatch for {url}: expected {expected} bytes, the server has {actual}")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },

    #[error("not enough disk space at {path}: needs {needed}, {available} free")]
    InsufficientSpace {
        path: PathBuf,
        needed: String,
        available: String,
    },

    #[error("the disk at {path} is full ({source})")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },

    #[error("cancelled")]
    Cancelled,

    #[error("invalid download request: {0}")]
    Invalid(String),
}

impl DownloadError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if is_disk_full(&source) {
            return Self::DiskFull {
                path: PathBuf::from(context.into()),
                source: Arc::new(source),
            };
        }
        Self::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// A short machine-readable code, for APIs: `not_found`, `unauthorized`,
    /// `sha256_mismatch`, `insufficient_space`, `cancelled`, ...
    pub fn code(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http_error",
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::Network { .. } => "network_error",
            Self::Certificate { .. } => "untrusted_certificate",
            Self::Protocol { .. } => "protocol_error",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::Sha256Mismatch { .. } => "sha256_mismatch",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::InsufficientSpace { .. } => "insufficient_space",
            Self::DiskFull { .. } => "disk_full",
            Self::Io { .. } => "io_error",
            Self::Cancelled => "cancelled",
            Self::Invalid(_) => "invalid_request",
        }
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// Bytes in binary units, for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut f = n as f64;
    let mut unit = 0;
    while f >= 1024.0 && unit + 1 < UNITS.len() {
        f /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{f:.1} {}", UNITS[unit])
    }
}
