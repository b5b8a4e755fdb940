//! The traits of provisioners: what fetches an artifact into place (a model from a
//! hub, a worker binary built from source), and why it failed. A catalog never calls
//! them; the daemon calls a provisioner, then records its result in a catalog.
//!
//! Vendors implement [`VendorSource`]; [`MultiVendorProvisioner`] routes a reference
//! to the vendor whose [`VendorInfo::prefixes`] it starts with, and a resolved
//! artifact back to the vendor that resolved it.
#![deny(missing_docs)]

mod error;

use std::sync::Arc;

use artifact_catalog::Artifact;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use error::{Cause, ProvisionError};

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
    /// Leave out a multimodal projector that would come with the model
    /// (`--no-mmproj`, as llama-server takes it).
    pub no_projector: bool,
}

impl ProvisionRequest {
    /// A request for `reference` with no expected hash.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            sha256: None,
            build_args: Vec::new(),
            no_projector: false,
        }
    }

    /// The same request, leaving out a projector when `no` (`--no-mmproj`).
    #[must_use]
    pub fn without_projector(mut self, no: bool) -> Self {
        self.no_projector = no;
        self
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

/// A reference, resolved: which artifact it names and which vendor fetches it, before
/// any byte is fetched. It travels whole from [`VendorSource::resolve`] to
/// [`VendorSource::fetch`]; nothing is worked out again from strings on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<P> {
    /// The catalog id the artifact will have.
    pub id: String,
    /// The [`VendorInfo::name`] of the vendor that resolved it, and fetches it.
    pub vendor: String,
    /// The vendor's own plan for fetching it.
    pub plan: P,
}

/// What a vendor is: its name, the reference forms it takes, and how they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorInfo {
    /// The vendor's name, such as `huggingface`: a resolved artifact's
    /// [`Resolved::vendor`], and a model's provider in the catalog.
    pub name: &'static str,
    /// The reference forms it takes, for error messages (`hf:ORG/REPO`).
    pub forms: &'static str,
    /// How its references start (`hf:`); a reference goes to the first vendor that
    /// has one of its prefixes.
    pub prefixes: &'static [&'static str],
}

impl VendorInfo {
    /// Whether `reference` is in one of this vendor's forms.
    pub fn takes(&self, reference: &str) -> bool {
        let r = reference.trim();
        self.prefixes.iter().any(|p| r.starts_with(p))
    }

    /// `plan`, resolved to `id` by this vendor.
    pub fn resolved<P>(&self, id: impl Into<String>, plan: P) -> Resolved<P> {
        Resolved {
            id: id.into(),
            vendor: self.name.to_owned(),
            plan,
        }
    }
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
    /// Its name, the forms it takes, and how they start.
    fn info(&self) -> &'static VendorInfo;

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
            self.info().name
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
            .find(|v| v.info().takes(reference))
            .ok_or_else(|| ProvisionError::Unsupported {
                reference: reference.to_owned(),
                known: self
                    .vendors
                    .iter()
                    .map(|v| v.info().forms)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The vendor that resolved `resolved`.
    fn resolver(
        &self,
        resolved: &Resolved<T>,
    ) -> Result<&Arc<dyn VendorSource<T>>, ProvisionError> {
        self.vendors
            .iter()
            .find(|v| v.info().name == resolved.vendor)
            .ok_or_else(|| {
                ProvisionError::Invalid(format!(
                    "{} was resolved by a vendor this hive does not have ({:?})",
                    resolved.id, resolved.vendor
                ))
            })
    }
}

#[async_trait]
impl<T: Artifact> ArtifactProvisioner<T> for MultiVendorProvisioner<T> {
    fn supports(&self, reference: &str) -> bool {
        self.vendors.iter().any(|v| v.info().takes(reference))
    }

    async fn resolve(&self, request: &ProvisionRequest) -> Result<Resolved<T>, ProvisionError> {
        self.vendor(&request.reference)?.resolve(request).await
    }

    async fn fetch(
        &self,
        resolved: Resolved<T>,
        ctx: &ProvisionContext,
    ) -> Result<T, ProvisionError> {
        self.resolver(&resolved)?.fetch(resolved, ctx).await
    }

    async fn read_range(
        &self,
        resolved: &Resolved<T>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<RangeRead, ProvisionError> {
        self.resolver(resolved)?
            .read_range(resolved, file, start, len)
            .await
    }
}
