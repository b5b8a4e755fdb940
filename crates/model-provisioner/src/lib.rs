//! Vendors of GGUF models, behind the provisioner traits of `artifact-catalog`:
//!
//! - [`HuggingFaceVendor`]: `hf:ORG/REPO[@REVISION][:QUANT | /path/file.gguf]`, files
//!   listed with the hub's tree API (with their LFS sha256), pinned to the resolved
//!   commit, split GGUFs fetched whole, `HF_ENDPOINT`, `HF_TOKEN` or the token file,
//!   `HF_HUB_OFFLINE`.
//! - [`HttpVendor`]: plain URLs such as `https://host/path/model.gguf`.
//! - [`LocalFileVendor`]: `file:/abs/path/model.gguf`, hard-linked when on the same
//!   filesystem, else copied.
//! - [`oci::OciVendor`]: `oci://HOST[:PORT]/REPO:TAG` or `@sha256:...`, ModelPack or
//!   Ollama layers, each checked against its digest; [`oci::push`] the other way.
//! - [`oci::OllamaVendor`]: `ollama:NAME[:TAG]`, Ollama's library on its registry.
//!
//! Every model comes out with its GGUF summary; a file that is not GGUF is refused.
//! Downloads go through one [`download::Downloader`], so two requests for the same
//! model share one download.
#![deny(missing_docs)]

mod config;
mod hf;
pub mod hf_cache;
mod http;
mod local;
pub mod oci;
pub mod plan;
mod reference;
pub mod scan;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{HubConfig, read_token};
pub use hf::HuggingFaceVendor;
pub use http::HttpVendor;
pub use local::LocalFileVendor;
use model_catalog::{ModelEntry, ModelProjector};
pub use provisioning::{
    ArtifactProvisioner, MultiVendorProvisioner, ProvisionContext, ProvisionError,
    ProvisionReporter, ProvisionRequest, RangeRead, Resolved, Silent, VendorInfo, VendorSource,
};
pub use reference::{HfReference, HfSelector};

/// The provisioner of models: Hugging Face, HTTP, Ollama's library, OCI registries
/// and local files.
pub fn model_provisioner(
    home: &Path,
    hub: HubConfig,
    oci: oci::OciConfig,
    downloader: download::Downloader,
) -> MultiVendorProvisioner<ModelEntry> {
    let dirs = Dirs::new(home);
    MultiVendorProvisioner::new(vec![
        Arc::new(HuggingFaceVendor::new(
            hub,
            dirs.clone(),
            downloader.clone(),
        )),
        Arc::new(HttpVendor::new(dirs.clone(), downloader.clone())),
        Arc::new(oci::OllamaVendor::new(oci::OciVendor::new(
            oci.clone(),
            dirs.clone(),
            downloader.clone(),
        ))),
        Arc::new(oci::OciVendor::new(oci, dirs.clone(), downloader)),
        Arc::new(LocalFileVendor::new(dirs)),
    ])
}

/// Where models go: `home/models/<dir>/` and `home/downloads/`.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `home/models`.
    pub models: PathBuf,
    /// `home/downloads`: partial files and their resume state.
    pub downloads: PathBuf,
}

impl Dirs {
    /// The folders of `home`.
    pub fn new(home: &Path) -> Self {
        Self {
            models: home.join("models"),
            downloads: home.join("downloads"),
        }
    }

    /// The folder of a model.
    pub fn model_dir(&self, id: &str) -> Result<PathBuf, ProvisionError> {
        model_catalog::model_dir(&self.models, id).map_err(|e| ProvisionError::InvalidReference {
            reference: id.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// Passes the engine's progress to a provisioning's reporter, adding the bytes of
/// files already done (the earlier shards of a split model).
struct ProgressAdapter {
    reporter: Arc<dyn ProvisionReporter>,
    offset: u64,
    total: Option<u64>,
}

impl download::Reporter for ProgressAdapter {
    fn progress(&self, p: &download::Progress) {
        let done = self.offset + p.bytes_done;
        let total = self.total.or(p.bytes_total.map(|t| t + self.offset));
        #[allow(clippy::cast_precision_loss)]
        let eta = total.and_then(|t| {
            (p.bytes_per_sec > 0.0).then(|| t.saturating_sub(done) as f64 / p.bytes_per_sec)
        });
        self.reporter.progress(done, total, p.bytes_per_sec, eta);
    }

    fn message(&self, message: &str) {
        self.reporter.narrate("download", message);
    }
}

fn download_error(e: download::DownloadError, hint: &str) -> ProvisionError {
    use download::DownloadError as D;
    match e {
        D::Cancelled => ProvisionError::Cancelled,
        D::NotFound { url } => ProvisionError::NotFound(format!("{url} does not exist (404)")),
        D::Unauthorized {
            url,
            status,
            hint: server,
        } => ProvisionError::Unauthorized(format!(
            "{url}: access refused ({status}): {server}{hint}"
        )),
        e => ProvisionError::download(e.code(), e.to_string(), e),
    }
}

/// Downloads an entry's files (its shards, else its one file) one after the other,
/// each checked against its sha256 and size, progress counted over them all; the
/// entry's sha256 is the first file's when it had none. Whether every file matched
/// a published sha256.
async fn fetch_files(
    downloader: &download::Downloader,
    dirs: &Dirs,
    entry: &mut ModelEntry,
    credential: Option<download::Credential>,
    ctx: &ProvisionContext,
    hint: &str,
) -> Result<bool, ProvisionError> {
    let files = entry.parts();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let mut offset = 0;
    let mut verified = true;
    for (i, f) in files.iter().enumerate() {
        let url = f.source_url.as_deref().unwrap_or_default();
        if files.len() > 1 {
            ctx.reporter.narrate(
                "download",
                &format!("file {} of {}: {url}", i + 1, files.len()),
            );
        }
        let request = download::DownloadRequest {
            url: url
                .parse()
                .map_err(|e| ProvisionError::Invalid(format!("bad URL {url}: {e}")))?,
            dest: f.path.clone(),
            work_dir: dirs.downloads.clone(),
            sha256: f.sha256.clone(),
            size: Some(f.size),
            credential: credential.clone(),
        };
        let reporter = Arc::new(ProgressAdapter {
            reporter: Arc::clone(&ctx.reporter),
            offset,
            total: Some(total),
        });
        let out = downloader
            .download(request, reporter, ctx.cancel.clone())
            .await
            .map_err(|e| download_error(e, hint))?;
        verified &= out.verified;
        if i == 0 && entry.sha256.is_none() {
            entry.sha256.clone_from(&out.sha256);
        }
        offset += out.size;
    }
    Ok(verified)
}

/// Reads part of one of an entry's files (`file`: 0 the first, else a shard) at its
/// URL, with the credential a fetch would send.
async fn read_remote(
    downloader: &download::Downloader,
    entry: &ModelEntry,
    credential: Option<&download::Credential>,
    file: usize,
    start: u64,
    len: u64,
    hint: &str,
) -> Result<RangeRead, ProvisionError> {
    let url = if entry.shards.is_empty() {
        entry.source_url.as_deref().filter(|_| file == 0)
    } else {
        entry.shards.get(file).and_then(|s| s.source_url.as_deref())
    }
    .ok_or_else(|| {
        ProvisionError::Invalid(format!("{} has no URL for its file {}", entry.id, file + 1))
    })?;
    let url = url
        .parse()
        .map_err(|e| ProvisionError::Invalid(format!("bad URL {url}: {e}")))?;
    let (bytes, total) = downloader
        .read_range(&url, credential, start, len)
        .await
        .map_err(|e| download_error(e, hint))?;
    Ok(RangeRead { bytes, total })
}

/// Reads the GGUF summary of a model's files, a split model's shards in order: the
/// whole model's, refusing what is not whole GGUF files of one model.
fn gguf_summary<P: AsRef<Path>>(files: &[P]) -> Result<gguf::Summary, String> {
    let mut headers = Vec::with_capacity(files.len());
    for path in files {
        let path = path.as_ref();
        // a shard's error names the shard
        let named = |e: String| match (files.len(), path.file_name()) {
            (2.., Some(name)) => format!("{}: {e}", name.to_string_lossy()),
            _ => e,
        };
        let file = fs_err::File::open(path).map_err(|e| named(e.to_string()))?;
        let len = file.metadata().map_err(|e| named(e.to_string()))?.len();
        let g =
            gguf::read(file, &gguf::ReadOptions::default()).map_err(|e| named(e.to_string()))?;
        // each shard of a split model holds its own tensors whole
        g.check_file_size(len).map_err(|e| named(e.to_string()))?;
        headers.push(g);
    }
    let summary = gguf::summary_of_shards(&headers).map_err(|e| e.to_string())?;
    if summary.projector.is_some() {
        return Err(
            "it is a multimodal projector, not a model: pair it with its model (rbee models import MODEL --mmproj FILE)"
                .to_owned(),
        );
    }
    Ok(summary)
}

/// Fetches the projector a pull planned beside its model (any vendor's), checked
/// by its published sha256 and its header (a projector as wide as the model); one that
/// is not is left out, and said.
pub(crate) async fn fetch_projector(
    downloader: &download::Downloader,
    dirs: &Dirs,
    entry: &mut ModelEntry,
    credential: Option<download::Credential>,
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    let Some(planned) = entry.projector.take() else {
        return Ok(());
    };
    let Some(url) = planned.source_url.clone() else {
        // fetched already
        entry.projector = Some(planned);
        return Ok(());
    };
    ctx.reporter
        .narrate("download", &format!("its multimodal projector: {url}"));
    let mut file = ModelEntry::new(
        &format!("{}#mmproj", entry.id),
        &entry.provider,
        &url,
        &planned.path,
    );
    file.size = planned.size;
    file.source_url = Some(url);
    file.sha256 = Some(planned.sha256.clone()).filter(|s| !s.is_empty());
    fetch_files(downloader, dirs, &mut file, credential, ctx, "").await?;
    let path = planned.path.clone();
    let header = tokio::task::spawn_blocking(move || {
        fs_err::File::open(&path)
            .ok()
            .and_then(|f| gguf::read(f, &gguf::ReadOptions::default()).ok())
            .map(|g| g.summary())
    })
    .await
    .ok()
    .flatten();
    let width = entry.gguf.as_ref().and_then(|g| g.embedding_length);
    match header.and_then(|s| s.projector) {
        Some(p) if p.fits(width) => {
            entry.projector = Some(ModelProjector {
                sha256: file.sha256.unwrap_or_default(),
                summary: p,
                source_url: None,
                ..planned
            });
        }
        _ => {
            let _ = fs_err::remove_file(&planned.path);
            ctx.reporter.narrate(
                "download",
                &format!(
                    "{} is not a projector for this model: left out",
                    planned.path.display()
                ),
            );
        }
    }
    Ok(())
}

/// [`gguf_summary`] off the runtime's threads.
async fn summary_of<P: AsRef<Path>>(files: &[P]) -> Result<gguf::Summary, ProvisionError> {
    let owned: Vec<PathBuf> = files.iter().map(|p| p.as_ref().to_path_buf()).collect();
    let first = owned.first().cloned().unwrap_or_default();
    tokio::task::spawn_blocking(move || gguf_summary(&owned))
        .await
        .map_err(|e| ProvisionError::io("", e))?
        .map_err(|e| {
            ProvisionError::Invalid(format!("{} is not a GGUF model file: {e}", first.display()))
        })
}
