//! The traits of provisioners: what fetches an artifact into place. A catalog never
//! calls them; the daemon calls a provisioner, then records its result.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::Artifact;

/// Where a provisioner reports what it does: the daemon's job stream, a progress bar.
pub trait ProvisionReporter: Send + Sync {
    /// A step worth telling a person about.
    fn narrate(&self, action: &str, message: &str);
    /// Bytes moved so far.
    fn progress(
        &self,
        bytes_done: u64,
        bytes_total: Option<u64>,
        bytes_per_sec: f64,
        eta_secs: Option<f64>,
    );
    /// Work that is not bytes, such as a build: `done` of `total` `unit`s (`crates`),
    /// and what runs now. Reporters that show only bytes may ignore it.
    fn step(&self, done: u64, total: Option<u64>, unit: &str, current: &str) {
        let _ = (done, total, unit, current);
    }
}

/// A reporter that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl ProvisionReporter for Silent {
    fn narrate(&self, _: &str, _: &str) {}
    fn progress(&self, _: u64, _: Option<u64>, _: f64, _: Option<f64>) {}
}

/// What is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// The reference, such as `hf:org/repo:Q4_K_M`.
    pub reference: String,
    /// The sha256 the artifact must have, when the caller knows it.
    pub sha256: Option<String>,
    /// More arguments for a vendor that builds (cmake's `-D...` for a llama.cpp
    /// build); others refuse any.
    pub build_args: Vec<String>,
}

impl ProvisionRequest {
    /// A request for `reference` with no expected hash.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            sha256: None,
            build_args: Vec::new(),
        }
    }

    /// The same request, expecting `sha256`.
    #[must_use]
    pub fn with_sha256(mut self, sha256: Option<String>) -> Self {
        self.sha256 = sha256;
        self
    }
}

/// How a provisioning runs: its reporter and its cancellation.
#[derive(Clone)]
pub struct ProvisionContext {
    /// Where progress goes.
    pub reporter: Arc<dyn ProvisionReporter>,
    /// Cancelled: stop soon, keeping what can be resumed.
    pub cancel: CancellationToken,
}

impl std::fmt::Debug for ProvisionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionContext").finish_non_exhaustive()
    }
}

impl Default for ProvisionContext {
    fn default() -> Self {
        Self {
            reporter: Arc::new(Silent),
            cancel: CancellationToken::new(),
        }
    }
}

/// Why provisioning failed, with a code for APIs.
#[derive(Debug, Clone, thiserror::Error)]
#[allow(missing_docs)]
pub enum ProvisionError {
    #[error("no vendor handles {reference:?}: use {known}")]
    Unsupported { reference: String, known: String },
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("{0}")]
    Offline(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{message}")]
    Download { code: &'static str, message: String },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Io(String),
}

impl ProvisionError {
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
            Self::Io(_) => "io_error",
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

/// A reference, resolved: which artifact it names, before any byte is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<P> {
    /// The catalog id the artifact will have.
    pub id: String,
    /// The vendor's own plan for fetching it.
    pub plan: P,
}

/// Part of a file, read where it lies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRead {
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// The whole file's size, when the source said.
    pub total: Option<u64>,
}

/// One vendor: Hugging Face, plain HTTP, local files, a release server.
#[async_trait]
pub trait VendorSource<T: Artifact>: Send + Sync {
    /// The vendor's name, such as `huggingface`.
    fn name(&self) -> &'static str;

    /// The reference forms it takes, for error messages (`hf:ORG/REPO`).
    fn forms(&self) -> &'static str;

    /// Whether this vendor handles `reference`.
    fn supports(&self, reference: &str) -> bool;

    /// Works out what `reference` names (the catalog id), without fetching it.
    async fn resolve(&self, request: &ProvisionRequest) -> Result<Resolved<T>, ProvisionError>;

    /// Fetches what [`resolve`](Self::resolve) found; returns the artifact, in place.
    async fn fetch(
        &self,
        resolved: Resolved<T>,
        ctx: &ProvisionContext,
    ) -> Result<T, ProvisionError>;

    /// Reads at most `len` bytes at `start` of file `file` of the resolved artifact
    /// (0 the first; the parts of an artifact in several files in order), from where
    /// [`fetch`](Self::fetch) would take it, fetching nothing else: a look at a
    /// header before a download. Fewer bytes only at the file's end.
    async fn read_range(
        &self,
        resolved: &Resolved<T>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<RangeRead, ProvisionError> {
        let _ = (resolved, file, start, len);
        Err(ProvisionError::Invalid(format!(
            "the {} vendor cannot read part of a file before fetching it",
            self.name()
        )))
    }
}

/// Something that turns references into artifacts in place.
#[async_trait]
pub trait ArtifactProvisioner<T: Artifact>: Send + Sync {
    /// Whether some vendor handles `reference`.
    fn supports(&self, reference: &str) -> bool;

    /// What `reference` names, without fetching it.
    async fn resolve(&self, request: &ProvisionRequest) -> Result<Resolved<T>, ProvisionError>;

    /// Fetches a resolved artifact.
    async fn fetch(
        &self,
        resolved: Resolved<T>,
        ctx: &ProvisionContext,
    ) -> Result<T, ProvisionError>;

    /// Reads part of one of a resolved artifact's files, as its vendor's
    /// [`VendorSource::read_range`].
    async fn read_range(
        &self,
        resolved: &Resolved<T>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<RangeRead, ProvisionError> {
        let _ = (resolved, file, start, len);
        Err(ProvisionError::Invalid(
            "this provisioner cannot read part of a file before fetching it".into(),
        ))
    }

    /// Resolves and fetches.
    async fn provision(
        &self,
        request: &ProvisionRequest,
        ctx: &ProvisionContext,
    ) -> Result<T, ProvisionError> {
        let resolved = self.resolve(request).await?;
        self.fetch(resolved, ctx).await
    }
}

/// Routes each reference to the first vendor that supports it.
pub struct MultiVendorProvisioner<T> {
    vendors: Vec<Arc<dyn VendorSource<T>>>,
}

impl<T> std::fmt::Debug for MultiVendorProvisioner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiVendorProvisioner")
            .field("vendors", &self.vendors.len())
            .finish()
    }
}

impl<T: Artifact> MultiVendorProvisioner<T> {
    /// A provisioner over these vendors, asked in order.
    pub fn new(vendors: Vec<Arc<dyn VendorSource<T>>>) -> Self {
        Self { vendors }
    }

    fn vendor(&self, reference: &str) -> Result<&Arc<dyn VendorSource<T>>, ProvisionError> {
        self.vendors
            .iter()
            .find(|v| v.supports(reference))
            .ok_or_else(|| ProvisionError::Unsupported {
                reference: reference.to_owned(),
                known: self
                    .vendors
                    .iter()
                    .map(|v| v.forms())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[async_trait]
impl<T: Artifact> ArtifactProvisioner<T> for MultiVendorProvisioner<T> {
    fn supports(&self, reference: &str) -> bool {
        self.vendors.iter().any(|v| v.supports(reference))
    }

    async fn resolve(&self, request: &ProvisionRequest) -> Result<Resolved<T>, ProvisionError> {
        self.vendor(&request.reference)?.resolve(request).await
    }

    async fn fetch(
        &self,
        resolved: Resolved<T>,
        ctx: &ProvisionContext,
    ) -> Result<T, ProvisionError> {
        // the plan names its vendor by the id's form
        let vendor = self.vendor(&resolved.id)?;
        vendor.fetch(resolved, ctx).await
    }

    async fn read_range(
        &self,
        resolved: &Resolved<T>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<RangeRead, ProvisionError> {
        self.vendor(&resolved.id)?
            .read_range(resolved, file, start, len)
            .await
    }
}
