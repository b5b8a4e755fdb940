//! OCI registries as a vendor of models: `oci://HOST[:PORT]/REPO:TAG` and
//! `oci://HOST/REPO@sha256:HEX`. The manifest (an image manifest, or an index whose
//! model manifest is taken) names the GGUF layers: CNCF ModelPack's raw weight
//! layers, Ollama's model layers, or any layer titled `*.gguf`. Each is downloaded
//! through the download engine (parallel ranges where the registry serves them,
//! resume after a crash) and checked against its digest and size.
//!
//! - `reference.rs`: the reference grammar;
//! - `client.rs`: the distribution API and its authentication;
//! - `push.rs`: a model out to a registry, as a ModelPack artifact;
//! - `mirror.rs`: a registry as the fleet's copy of the hub.

mod client;
mod mirror;
mod ollama;
mod push;
mod reference;

use async_trait::async_trait;
use model_catalog::{ArtifactStatus, ModelEntry, Shard};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use reqwest::{Method, StatusCode, header};
use sha2::Digest as _;

pub use client::{OLLAMA_REGISTRY, OciConfig, Repository};
pub use mirror::{Copy as MirrorCopy, Mirror};
pub use ollama::{OllamaName, OllamaVendor};
pub use push::{PushOutcome, push};
pub use reference::OciReference;

use crate::{
    Dirs, ProvisionContext, ProvisionError, ProvisionRequest, Resolved, VendorInfo, VendorSource,
};

/// ModelPack's manifest `artifactType`.
pub const MODEL_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
/// ModelPack's config media type.
pub const MODEL_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
/// ModelPack's raw (not archived) weight layer.
pub const WEIGHT_RAW: &str = "application/vnd.cncf.model.weight.v1.raw";
/// Ollama's model layer.
pub const OLLAMA_MODEL: &str = "application/vnd.ollama.image.model";
/// ModelPack's annotation for a layer's path in the model.
pub const FILEPATH: &str = "org.cncf.model.filepath";
/// The manifests asked for.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// The most a manifest may be (the distribution spec's own suggestion is 4 MiB).
const MANIFEST_MAX: usize = 4 << 20;

/// Models on OCI registries.
#[derive(Debug, Clone)]
pub struct OciVendor {
    config: OciConfig,
    dirs: Dirs,
    downloader: download::Downloader,
}

impl OciVendor {
    /// A vendor with `config`, placing models in `dirs`.
    pub fn new(config: OciConfig, dirs: Dirs, downloader: download::Downloader) -> Self {
        Self {
            config,
            dirs,
            downloader,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &OciConfig {
        &self.config
    }

    fn repository(&self, r: &OciReference, push: bool) -> Repository {
        Repository::new(self.downloader.client().clone(), &self.config, r, push)
    }

    /// The repository of a model resolved at `r`, once the registry said how it
    /// lets us in (a `HEAD` of the pinned manifest answers the challenge): its
    /// credential then goes with the blob requests.
    async fn let_in(
        &self,
        r: &OciReference,
        entry: &ModelEntry,
    ) -> Result<Repository, ProvisionError> {
        let repo = self.repository(r, false);
        let pinned = entry
            .revision
            .clone()
            .unwrap_or_else(|| r.manifest_ref().to_owned());
        repo.call(Method::HEAD, &format!("manifests/{pinned}"))
            .await?;
        Ok(repo)
    }
}

/// New tokens asked for during one pull, for tokens that expire mid-blob.
const MAX_TOKEN_RENEWALS: u32 = 8;

/// A manifest as fetched: its digest and body.
pub(crate) struct Fetched {
    pub digest: String,
    pub body: Vec<u8>,
}

fn registry_error(r: &OciReference, message: String) -> ProvisionError {
    ProvisionError::failed("registry_error", format!("{r}: {message}"))
}

/// `GET` a manifest by tag or digest, checked: JSON, not too large, and (asked by
/// digest) matching it.
pub(crate) async fn get_manifest(
    repo: &Repository,
    r: &OciReference,
    what: &str,
) -> Result<Fetched, ProvisionError> {
    let url = repo.url(&format!("manifests/{what}"));
    let resp = repo
        .send(|c| c.get(&url).header(header::ACCEPT, ACCEPT))
        .await?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => {
            return Err(ProvisionError::NotFound(format!(
                "{r}: the registry has no manifest {what} in {} (404)",
                repo.name
            )));
        }
        s => {
            let body = resp.text().await.unwrap_or_default();
            return Err(registry_error(
                r,
                format!(
                    "the registry answered {s} for manifest {what}: {}",
                    body.chars().take(300).collect::<String>()
                ),
            ));
        }
    }
    let kind = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if kind.starts_with("text/html") {
        return Err(registry_error(
            r,
            "the server answered an HTML page, not a manifest: is this a registry?".into(),
        ));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| registry_error(r, format!("the manifest was cut: {e}")))?;
    if body.len() > MANIFEST_MAX {
        return Err(registry_error(
            r,
            format!(
                "the manifest is {} bytes, more than a manifest may be",
                body.len()
            ),
        ));
    }
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
    if what.starts_with("sha256:") && digest != what {
        return Err(registry_error(
            r,
            format!("the manifest asked for as {what} has digest {digest}"),
        ));
    }
    Ok(Fetched {
        digest,
        body: body.to_vec(),
    })
}

/// Whether a layer holds GGUF bytes as they are: ModelPack's raw weights, Ollama's
/// model, or any other layer titled `*.gguf` that is not an archive.
pub(crate) fn is_gguf_layer(d: &Descriptor) -> bool {
    let kind = d.media_type().to_string();
    if kind == WEIGHT_RAW || kind == OLLAMA_MODEL {
        return true;
    }
    let archived = kind.contains("tar") && kind.starts_with("application/vnd.cncf.model");
    !archived && layer_title(d).is_some_and(|t| t.to_ascii_lowercase().ends_with(".gguf"))
}

fn layer_title(d: &Descriptor) -> Option<&str> {
    let a = d.annotations().as_ref()?;
    a.get(FILEPATH)
        .or_else(|| a.get("org.opencontainers.image.title"))
        .map(String::as_str)
}

/// A file name for a layer: its title's last segment, made safe, else from its
/// place among the model's layers.
fn file_name(d: &Descriptor, index: usize, count: usize) -> String {
    let title = layer_title(d)
        .and_then(|t| t.rsplit('/').next())
        .map(|t| {
            t.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .map(|t| t.trim_start_matches('.').to_owned())
        .filter(|t| t.to_ascii_lowercase().ends_with(".gguf") && t.len() <= 200);
    title.unwrap_or_else(|| {
        if count == 1 {
            "model.gguf".to_owned()
        } else {
            format!("model-{:05}-of-{count:05}.gguf", index + 1)
        }
    })
}

/// The image manifest a reference names: itself, or the model manifest of an
/// index (the first whose artifact type is ModelPack's, else the first).
pub(crate) async fn model_manifest(
    repo: &Repository,
    r: &OciReference,
) -> Result<(String, ImageManifest), ProvisionError> {
    let fetched = get_manifest(repo, r, r.manifest_ref()).await?;
    let v: serde_json::Value = serde_json::from_slice(&fetched.body)
        .map_err(|e| registry_error(r, format!("the manifest is not JSON: {e}")))?;
    if v.get("manifests").is_some() {
        let index: ImageIndex = serde_json::from_value(v)
            .map_err(|e| registry_error(r, format!("the index is not an OCI index: {e}")))?;
        let chosen = index
            .manifests()
            .iter()
            .find(|m| {
                m.artifact_type()
                    .as_ref()
                    .is_some_and(|t| t.to_string() == MODEL_ARTIFACT)
            })
            .or_else(|| index.manifests().first())
            .ok_or_else(|| registry_error(r, "the index lists no manifest".into()))?;
        let digest = chosen.digest().to_string();
        let inner = get_manifest(repo, r, &digest).await?;
        let m: ImageManifest = serde_json::from_slice(&inner.body).map_err(|e| {
            registry_error(
                r,
                format!("manifest {digest} is not an image manifest: {e}"),
            )
        })?;
        return Ok((inner.digest, m));
    }
    let m: ImageManifest = serde_json::from_value(v)
        .map_err(|e| registry_error(r, format!("the manifest is not an image manifest: {e}")))?;
    Ok((fetched.digest, m))
}

/// The oci vendor.
pub(crate) const OCI: VendorInfo = VendorInfo {
    name: "oci",
    forms: "oci://HOST[:PORT]/REPO:TAG, oci://HOST/REPO@sha256:HEX",
    prefixes: &["oci://"],
};

#[async_trait]
impl VendorSource<ModelEntry> for OciVendor {
    fn info(&self) -> &'static VendorInfo {
        &OCI
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<ModelEntry>, ProvisionError> {
        let reference = request.reference.trim();
        let r = OciReference::parse(reference)?;
        let id = r.to_string();
        let (entry, _, _) = self.resolve_at(&r, request, &id, &OCI, reference).await?;
        Ok(OCI.resolved(id, entry))
    }

    async fn read_range(
        &self,
        resolved: &Resolved<ModelEntry>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<crate::RangeRead, ProvisionError> {
        let r = OciReference::parse(&resolved.plan.reference)?;
        self.read_range_at(&r, resolved, file, start, len).await
    }

    async fn fetch(
        &self,
        resolved: Resolved<ModelEntry>,
        ctx: &ProvisionContext,
    ) -> Result<ModelEntry, ProvisionError> {
        let r = OciReference::parse(&resolved.plan.reference)?;
        self.fetch_at(&r, resolved, ctx).await
    }
}

impl OciVendor {
    /// Reads part of a file of a model resolved at `r`.
    pub(crate) async fn read_range_at(
        &self,
        r: &OciReference,
        resolved: &Resolved<ModelEntry>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<crate::RangeRead, ProvisionError> {
        let entry = &resolved.plan;
        let repo = self.let_in(r, entry).await?;
        crate::read_remote(
            &self.downloader,
            entry,
            repo.credential().as_ref(),
            file,
            start,
            len,
            "",
        )
        .await
    }

    /// The model the manifest at `r` names, as catalog entry `id` of `vendor`
    /// asked for as `reference`, with the manifest and the repository it came from.
    pub(crate) async fn resolve_at(
        &self,
        r: &OciReference,
        request: &ProvisionRequest,
        id: &str,
        vendor: &VendorInfo,
        reference: &str,
    ) -> Result<(ModelEntry, ImageManifest, Repository), ProvisionError> {
        let repo = self.repository(r, false);
        let (digest, manifest) = model_manifest(&repo, r).await?;
        // a projector layer (ModelPack's weights titled mmproj*.gguf) is no part of
        // the model: it comes beside it
        let (projectors, layers): (Vec<&Descriptor>, Vec<&Descriptor>) = manifest
            .layers()
            .iter()
            .filter(|d| is_gguf_layer(d))
            .partition(|d| layer_title(d).is_some_and(crate::reference::is_projector_name));
        if layers.is_empty() {
            let kinds: Vec<String> = manifest
                .layers()
                .iter()
                .map(|d| d.media_type().to_string())
                .collect();
            return Err(ProvisionError::Invalid(format!(
                "{r} has no GGUF layer (a layer of type {WEIGHT_RAW} or {OLLAMA_MODEL}, or titled *.gguf); its layers are: {}",
                if kinds.is_empty() {
                    "none".to_owned()
                } else {
                    kinds.join(", ")
                }
            )));
        }
        let dir = self.dirs.model_dir(id)?;
        let mut shards = Vec::with_capacity(layers.len());
        for (i, d) in layers.iter().enumerate() {
            let sha = d.as_digest_sha256().map(str::to_owned).ok_or_else(|| {
                registry_error(
                    r,
                    format!("layer {} is not addressed by sha256", d.digest()),
                )
            })?;
            shards.push(Shard {
                path: dir.join(file_name(d, i, layers.len())),
                size: d.size(),
                sha256: Some(sha),
                source_url: Some(repo.url(&format!("blobs/{}", d.digest()))),
            });
        }
        if let Some(given) = &request.sha256
            && (shards.len() != 1
                || shards[0].sha256.as_deref() != Some(&given.to_ascii_lowercase()))
        {
            return Err(ProvisionError::Invalid(format!(
                "{r}'s GGUF layer has sha256 {}, not the {given} asked for",
                shards[0].sha256.as_deref().unwrap_or("?")
            )));
        }
        let first = shards[0].clone();
        let mut entry = ModelEntry::new(id, vendor.name, reference, &first.path);
        entry.size = shards.iter().map(|s| s.size).sum();
        entry.revision = Some(digest);
        entry.source_url.clone_from(&first.source_url);
        entry.sha256.clone_from(&first.sha256);
        if shards.len() > 1 {
            entry.shards = shards;
        }
        let titles: Vec<String> = projectors
            .iter()
            .filter_map(|d| layer_title(d).map(str::to_owned))
            .collect();
        let model_title = layer_title(layers[0]).unwrap_or("model.gguf");
        if !request.no_projector
            && let Some(title) = crate::reference::pick_projector(model_title, &titles)
            && let Some(d) = projectors.iter().find(|d| layer_title(d) == Some(title))
            && let Some(sha) = d.as_digest_sha256()
        {
            entry.projector = Some(model_catalog::ModelProjector {
                path: dir.join(file_name(d, 0, 1)),
                size: d.size(),
                sha256: sha.to_owned(),
                summary: gguf::Projector::default(),
                source_url: Some(repo.url(&format!("blobs/{}", d.digest()))),
            });
        }
        Ok((entry, manifest, repo))
    }

    /// Fetches a model resolved at `r` (see [`Self::resolve_at`]).
    pub(crate) async fn fetch_at(
        &self,
        r: &OciReference,
        resolved: Resolved<ModelEntry>,
        ctx: &ProvisionContext,
    ) -> Result<ModelEntry, ProvisionError> {
        let mut entry = resolved.plan;
        let mut repo = self.let_in(r, &entry).await?;
        // a token that expires during a long blob (Docker Hub's last 300 s): a new one,
        // and the download resumes from what is on disk
        let mut renewed = 0;
        let verified = loop {
            let fetched = crate::fetch_files(
                &self.downloader,
                &self.dirs,
                &mut entry,
                repo.credential(),
                ctx,
                " (log in with docker login or oras login, or set RBEE_OCI_USERNAME and RBEE_OCI_PASSWORD with the registry in RBEE_OCI_REGISTRIES)",
            )
            .await;
            match fetched {
                Err(ProvisionError::Unauthorized(why))
                    if renewed < MAX_TOKEN_RENEWALS
                        && matches!(repo.credential(), Some(download::Credential::Bearer(_))) =>
                {
                    renewed += 1;
                    ctx.reporter.narrate(
                        "download",
                        &format!("the registry's token was refused ({why}); asking for a new one and resuming"),
                    );
                    repo = self.let_in(r, &entry).await?;
                }
                other => break other?,
            }
        };
        let summary = match crate::summary_of(&entry.files()).await {
            Ok(s) => s,
            Err(e) => {
                // what is not a model does not stay
                for s in &entry.shards {
                    let _ = fs_err::remove_file(&s.path);
                }
                let _ = fs_err::remove_file(&entry.path);
                return Err(e);
            }
        };
        entry = entry.with_summary(summary);
        // its projector, when a layer (or Ollama's) brought one
        crate::fetch_projector(
            &self.downloader,
            &self.dirs,
            &mut entry,
            repo.credential(),
            ctx,
        )
        .await?;
        // each layer's digest is the sha256 its bytes were checked against
        entry.verified = verified;
        entry.status = ArtifactStatus::Available;
        entry.progress = None;
        Ok(entry)
    }
}
