//! Ollama's library as a vendor of models: `ollama:NAME[:TAG]` and
//! `ollama:NAMESPACE/NAME[:TAG]` are `REGISTRY/library/NAME:TAG` (or
//! `REGISTRY/NAMESPACE/NAME:TAG`) on Ollama's registry, an OCI registry
//! ([`super::OciConfig::ollama_registry`]). The model layer is fetched as any OCI
//! model is; the small layers beside it (Ollama's Go template, its system prompt,
//! its parameters) are read at resolve and kept in the model's preset. A model
//! adopted from Ollama's store has the same id, so it is not fetched again.

use std::collections::BTreeMap;

use async_trait::async_trait;
use model_catalog::ModelEntry;
use oci_spec::image::{Descriptor, ImageManifest};
use reqwest::header;
use sha2::Digest as _;

use super::{OciReference, OciVendor, Repository};
use crate::{
    ProvisionContext, ProvisionError, ProvisionRequest, RangeRead, Resolved, VendorInfo,
    VendorSource,
};

/// Ollama's Go template layer.
pub const OLLAMA_TEMPLATE: &str = "application/vnd.ollama.image.template";
/// Ollama's system prompt layer.
pub const OLLAMA_SYSTEM: &str = "application/vnd.ollama.image.system";
/// Ollama's parameters layer (a JSON object).
pub const OLLAMA_PARAMS: &str = "application/vnd.ollama.image.params";
/// Ollama's multimodal projector layer.
pub const OLLAMA_PROJECTOR: &str = "application/vnd.ollama.image.projector";
/// The most a template, system or parameters layer may be.
const SMALL_LAYER_MAX: u64 = 64 << 10;
/// The most parameters a parameters layer may hold.
const PARAMS_MAX: usize = 64;

/// The ollama vendor.
pub(crate) const OLLAMA: VendorInfo = VendorInfo {
    name: "ollama",
    forms: "ollama:NAME[:TAG], ollama:NAMESPACE/NAME[:TAG]",
    prefixes: &["ollama:"],
};

/// A name in Ollama's library, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaName {
    /// The namespace, `library` for Ollama's own models.
    pub namespace: String,
    /// The model.
    pub name: String,
    /// The tag, `latest` when not given.
    pub tag: String,
}

impl OllamaName {
    /// `ollama:NAME[:TAG]` or `ollama:NAMESPACE/NAME[:TAG]` (the prefix may be
    /// left out), lowercase as Ollama takes it.
    pub fn parse(reference: &str) -> Result<Self, ProvisionError> {
        let bad = |reason: String| ProvisionError::InvalidReference {
            reference: reference.to_owned(),
            reason,
        };
        let text = reference.trim();
        let text = text
            .strip_prefix("ollama:")
            .unwrap_or(text)
            .to_ascii_lowercase();
        let (path, tag) = match text.rsplit_once(':') {
            Some((p, t)) => (p.to_owned(), t.to_owned()),
            None => (text.clone(), "latest".to_owned()),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (namespace, name) = match parts.as_slice() {
            [name] => ("library", *name),
            [namespace, name] => (*namespace, *name),
            _ => {
                return Err(bad(
                    "expected NAME[:TAG] or NAMESPACE/NAME[:TAG] (a model on another registry is oci://HOST/REPO:TAG)".to_owned(),
                ));
            }
        };
        // the registry's own grammar: the reference is made of these
        let r = OciReference::parse(&format!("oci://ollama.invalid/{namespace}/{name}:{tag}"))
            .map_err(|e| bad(format!("not a name Ollama's registry takes: {e}")))?;
        if r.digest.is_some() {
            return Err(bad("a name, not a digest".to_owned()));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            tag: tag.clone(),
        })
    }

    /// The name as Ollama shows it: `NAME:TAG`, `NAMESPACE/NAME:TAG` outside the
    /// library.
    pub fn short(&self) -> String {
        if self.namespace == "library" {
            format!("{}:{}", self.name, self.tag)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.tag)
        }
    }

    /// Its catalog id, `ollama:SHORT`: also its reference.
    pub fn id(&self) -> String {
        format!("ollama:{}", self.short())
    }

    /// Where it is on `registry`.
    fn at(&self, registry: &str) -> OciReference {
        OciReference {
            registry: registry.to_owned(),
            repository: format!("{}/{}", self.namespace, self.name),
            tag: Some(self.tag.clone()),
            digest: None,
        }
    }
}

/// Models from Ollama's library.
#[derive(Debug, Clone)]
pub struct OllamaVendor {
    oci: OciVendor,
}

impl OllamaVendor {
    /// The vendor that reaches Ollama's registry through `oci`.
    pub fn new(oci: OciVendor) -> Self {
        Self { oci }
    }

    fn at(&self, reference: &str) -> Result<(OllamaName, OciReference), ProvisionError> {
        let name = OllamaName::parse(reference)?;
        let r = name.at(self.oci.config().ollama_registry());
        Ok((name, r))
    }
}

/// A small layer's bytes, checked against its size and digest.
async fn small_layer(
    repo: &Repository,
    r: &OciReference,
    d: &Descriptor,
) -> Result<Vec<u8>, ProvisionError> {
    if d.size() > SMALL_LAYER_MAX {
        return Err(ProvisionError::Invalid(format!(
            "{r}: layer {} ({}) is {} bytes, more than such a layer may be",
            d.digest(),
            d.media_type(),
            d.size()
        )));
    }
    let url = repo.url(&format!("blobs/{}", d.digest()));
    let resp = repo
        .send(|c| c.get(&url).header(header::ACCEPT, "*/*"))
        .await?;
    if !resp.status().is_success() {
        return Err(super::registry_error(
            r,
            format!(
                "the registry answered {} for layer {}",
                resp.status(),
                d.digest()
            ),
        ));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| super::registry_error(r, format!("layer {} was cut: {e}", d.digest())))?;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    if bytes.len() as u64 != d.size() || digest != d.digest().to_string() {
        return Err(super::registry_error(
            r,
            format!(
                "layer {} came as {} bytes with digest {digest}",
                d.digest(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes.to_vec())
}

/// The template, system prompt and parameters of the manifest, into `entry`'s
/// preset.
async fn keep_small_layers(
    repo: &Repository,
    r: &OciReference,
    manifest: &ImageManifest,
    entry: &mut ModelEntry,
) -> Result<(), ProvisionError> {
    let text = |bytes: Vec<u8>, what: &str| {
        String::from_utf8(bytes)
            .map_err(|_| ProvisionError::Invalid(format!("{r}: its {what} is not UTF-8")))
    };
    for d in manifest.layers() {
        match d.media_type().to_string().as_str() {
            OLLAMA_TEMPLATE => {
                entry.preset.template = Some(text(small_layer(repo, r, d).await?, "template")?);
            }
            OLLAMA_SYSTEM => {
                let system = text(small_layer(repo, r, d).await?, "system prompt")?;
                entry.preset.system = Some(system).filter(|s| !s.is_empty());
            }
            OLLAMA_PARAMS => {
                let bytes = small_layer(repo, r, d).await?;
                let params: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes)
                    .map_err(|e| {
                        ProvisionError::Invalid(format!(
                            "{r}: its parameters are not a JSON object: {e}"
                        ))
                    })?;
                if params.len() > PARAMS_MAX {
                    return Err(ProvisionError::Invalid(format!(
                        "{r}: its parameters layer holds {} values, more than {PARAMS_MAX}",
                        params.len()
                    )));
                }
                entry.preset.parameters = params;
            }
            _ => {}
        }
    }
    Ok(())
}

#[async_trait]
impl VendorSource<ModelEntry> for OllamaVendor {
    fn info(&self) -> &'static VendorInfo {
        &OLLAMA
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<ModelEntry>, ProvisionError> {
        let (name, r) = self.at(&request.reference)?;
        let id = name.id();
        let (mut entry, manifest, repo) =
            self.oci.resolve_at(&r, request, &id, &OLLAMA, &id).await?;
        entry.name = name.short();
        keep_small_layers(&repo, &r, &manifest, &mut entry).await?;
        // a vision model's projector comes with it
        if let Some(d) = manifest
            .layers()
            .iter()
            .find(|d| d.media_type().to_string() == OLLAMA_PROJECTOR)
            .filter(|_| !request.no_projector)
            && let Some(sha) = d.as_digest_sha256()
            && let Some(dir) = entry.path.parent()
        {
            entry.projector = Some(model_catalog::ModelProjector {
                path: dir.join("mmproj.gguf"),
                size: d.size(),
                sha256: sha.to_owned(),
                summary: gguf::Projector::default(),
                source_url: Some(repo.url(&format!("blobs/{}", d.digest()))),
            });
        }
        Ok(OLLAMA.resolved(id, entry))
    }

    async fn read_range(
        &self,
        resolved: &Resolved<ModelEntry>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<RangeRead, ProvisionError> {
        let (_, r) = self.at(&resolved.plan.reference)?;
        self.oci.read_range_at(&r, resolved, file, start, len).await
    }

    async fn fetch(
        &self,
        resolved: Resolved<ModelEntry>,
        ctx: &ProvisionContext,
    ) -> Result<ModelEntry, ProvisionError> {
        let (_, r) = self.at(&resolved.plan.reference)?;
        // the model, and its projector layer with it
        self.oci.fetch_at(&r, resolved, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_ollama_writes_them() {
        let n = OllamaName::parse("ollama:Llama3.2").unwrap();
        assert_eq!(n.short(), "llama3.2:latest");
        assert_eq!(n.id(), "ollama:llama3.2:latest");
        assert_eq!(
            n.at("registry.ollama.ai").to_string(),
            "oci://registry.ollama.ai/library/llama3.2:latest"
        );
        let n = OllamaName::parse("ollama:someone/tiny:q4_0").unwrap();
        assert_eq!(n.short(), "someone/tiny:q4_0");
        assert_eq!(n.at("127.0.0.1:5000").repository, "someone/tiny");
        assert_eq!(OllamaName::parse("qwen2.5:0.5b").unwrap().tag, "0.5b");
        for bad in [
            "ollama:",
            "ollama:a/b/c",
            "ollama:x:",
            "ollama:x y",
            "ollama:../x",
            "ollama:x@sha256:00",
        ] {
            assert!(OllamaName::parse(bad).is_err(), "{bad}");
        }
    }
}
