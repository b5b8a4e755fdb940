//! Why provisioning failed: a variant per kind of failure, a code for APIs, and the
//! underlying error kept as the source.

use std::sync::Arc;

/// An underlying error, kept whole (and cheap to clone, as a job's result is).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why provisioning failed, with a code for APIs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProvisionError {
    /// No vendor takes the reference's form.
    #[error("no vendor handles {reference:?}: use {known}")]
    Unsupported {
        /// The reference asked for.
        reference: String,
        /// The forms the vendors take.
        known: String,
    },
    /// The reference is malformed.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference asked for.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// What the reference names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The source refused the credentials (or asked for some).
    #[error("{0}")]
    Unauthorized(String),
    /// The reference names several artifacts.
    #[error("{0}")]
    Ambiguous(String),
    /// The network is off (`HF_HUB_OFFLINE`).
    #[error("{0}")]
    Offline(String),
    /// What was fetched (or would be) is not a valid artifact.
    #[error("{0}")]
    Invalid(String),
    /// The source or the transfer failed: the network, a server's answer, a build.
    #[error("{message}")]
    Download {
        /// A short machine-readable code (`network_error`, `build_failed`).
        code: &'static str,
        /// What happened, for people.
        message: String,
        /// The error underneath, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// Cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// This machine's files failed.
    #[error("{}", with_context(context, source))]
    Io {
        /// What was being done (may be empty).
        context: String,
        /// The error underneath.
        #[source]
        source: Cause,
    },
}

fn with_context(context: &str, source: &Cause) -> String {
    if context.is_empty() {
        source.to_string()
    } else {
        format!("{context}: {source}")
    }
}

impl ProvisionError {
    /// A failure of this machine's files while doing `context`.
    pub fn io(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// A failure of the source or the transfer, with the error underneath.
    pub fn download(
        code: &'static str,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Download {
            code,
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A failure of the source or the transfer that no error underneath explains
    /// (a server's status, a build's exit code).
    pub fn failed(code: &'static str, message: impl Into<String>) -> Self {
        Self::Download {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsupported { .. } => "unsupported_reference",
            Self::InvalidReference { .. } => "invalid_reference",
            Self::NotFound(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Ambiguous(_) => "ambiguous_reference",
            Self::Offline(_) => "offline",
            Self::Invalid(_) => "invalid_artifact",
            Self::Download { code, .. } => code,
            Self::Cancelled => "cancelled",
            Self::Io { .. } => "io_error",
        }
    }

    /// Whether the request itself was wrong (a 4xx), as opposed to the machine or
    /// the network failing.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::Unsupported { .. }
                | Self::InvalidReference { .. }
                | Self::NotFound(_)
                | Self::Unauthorized(_)
                | Self::Ambiguous(_)
                | Self::Invalid(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn the_cause_is_kept_and_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = ProvisionError::io("cannot import /m.gguf", io);
        assert_eq!(e.to_string(), "cannot import /m.gguf: denied");
        assert_eq!(e.code(), "io_error");
        let source = e.source().map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("denied"));
        let bare = ProvisionError::io("", std::io::Error::other("gone"));
        assert_eq!(bare.to_string(), "gone");
        assert!(
            ProvisionError::failed("build_failed", "cmake failed")
                .source()
                .is_none()
        );
    }
}
