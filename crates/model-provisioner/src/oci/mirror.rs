//! A registry as the fleet's mirror of the hub (`--model-mirror oci://HOST/PREFIX`).
//! An `hf:` model is looked for at `PREFIX/ORG/REPO:FILE-COMMIT` (lowercased where
//! OCI wants it); it is taken from there only when its layers' digests are the
//! hub's own sha256s (the LFS oids), in order. What came from the hub is pushed to
//! the mirror afterwards, in the background, so the next hive gets it over the LAN.
//! A mirror that is down or refuses never fails a pull: it falls back to the hub.

use std::path::PathBuf;
use std::sync::Arc;

use model_catalog::{ModelEntry, Shard};
use oci_spec::image::Descriptor;
use tokio_util::sync::CancellationToken;

use super::{OciConfig, OciReference, Repository, is_gguf_layer, model_manifest};
use crate::ProvisionError;

/// The mirror, and how to reach it.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// `HOST[:PORT]`.
    registry: String,
    /// The repository prefix, such as `mirror/hf`.
    prefix: String,
    config: OciConfig,
}

/// A mirror's copy of a model: where each of its files is, and the credential.
#[derive(Debug, Clone)]
pub struct Copy {
    /// The blob URLs, in the model's file order.
    pub urls: Vec<String>,
    /// What the blobs are fetched with.
    pub credential: Option<download::Credential>,
    /// The mirror's reference.
    pub reference: String,
}

/// Lowercase letters, digits and single dashes: a repository component from a
/// hub name (`SmolLM2-135M` becomes `smollm2-135m`).
fn component(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// A tag from a file name and a commit: the file's characters a tag takes, then
/// the commit's first 12, at most 128 in all.
fn tag(file: &str, commit: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let stem = name.strip_suffix(".gguf").unwrap_or(name);
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches(['.', '-']);
    let commit: String = commit
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let room = 128 - commit.len() - 1;
    let head: String = clean.chars().take(room).collect();
    if head.is_empty() {
        commit
    } else {
        format!("{head}-{commit}")
    }
}

impl Mirror {
    /// Parses `oci://HOST[:PORT]/PREFIX`.
    pub fn parse(prefix: &str, config: OciConfig) -> Result<Self, ProvisionError> {
        let r = OciReference::parse(&format!("{}:mirror", prefix.trim().trim_end_matches('/')))
            .map_err(|e| match e {
                ProvisionError::InvalidReference { reason, .. } => {
                    ProvisionError::InvalidReference {
                        reference: prefix.to_owned(),
                        reason: format!("{reason} (a mirror is oci://HOST[:PORT]/PREFIX)"),
                    }
                }
                e => e,
            })?;
        Ok(Self {
            registry: r.registry,
            prefix: r.repository,
            config,
        })
    }

    /// Where a hub file is kept in the mirror.
    pub fn reference(&self, repo: &str, file: &str, commit: &str) -> Option<OciReference> {
        let parts: Vec<String> = repo.split('/').map(component).collect();
        if parts.iter().any(String::is_empty) {
            return None;
        }
        let text = format!(
            "oci://{}/{}/{}:{}",
            self.registry,
            self.prefix,
            parts.join("/"),
            tag(file, commit)
        );
        OciReference::parse(&text).ok()
    }

    /// The mirror's copy of a model whose files have these sha256s, if it has one;
    /// an error says why it could not be asked (the caller falls back to the hub).
    pub async fn find(
        &self,
        http: reqwest::Client,
        r: &OciReference,
        shards: &[Shard],
    ) -> Result<Option<Copy>, ProvisionError> {
        let repo = Repository::new(http, &self.config, r, false);
        let (_, manifest) = match model_manifest(&repo, r).await {
            Ok(m) => m,
            Err(ProvisionError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let layers: Vec<&Descriptor> = manifest
            .layers()
            .iter()
            .filter(|d| is_gguf_layer(d))
            .collect();
        let same = layers.len() == shards.len()
            && layers.iter().zip(shards).all(|(d, s)| {
                d.size() == s.size && d.as_digest_sha256().map(str::to_owned) == s.sha256
            });
        if !same {
            return Ok(None);
        }
        Ok(Some(Copy {
            urls: layers
                .iter()
                .map(|d| repo.url(&format!("blobs/{}", d.digest())))
                .collect(),
            credential: repo.credential(),
            reference: r.to_string(),
        }))
    }

    /// Pushes a model fetched from the hub to the mirror, in the background; what
    /// happens is logged, never an error of the pull.
    pub fn write_through(
        &self,
        http: reqwest::Client,
        entry: ModelEntry,
        target: OciReference,
        state_dir: PathBuf,
    ) {
        let config = self.config.clone();
        tokio::spawn(async move {
            let target_text = target.to_string();
            match super::push(
                http,
                &config,
                &entry,
                &target_text,
                &state_dir,
                Arc::new(crate::Silent),
                CancellationToken::new(),
            )
            .await
            {
                Ok(out) => tracing::info!(
                    model = %entry.id,
                    mirror = %out.reference,
                    "copied to the mirror"
                ),
                Err(e) => tracing::warn!(
                    model = %entry.id,
                    mirror = %target_text,
                    "the copy to the mirror failed: {e}"
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_the_mirror() {
        let m = Mirror::parse("oci://reg.lan:5000/mirror/hf", OciConfig::default()).unwrap();
        let r = m
            .reference(
                "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                "smollm2-135m-instruct-q4_1.gguf",
                "4a6f9c2b8e1d77aa",
            )
            .unwrap();
        assert_eq!(
            r.to_string(),
            "oci://reg.lan:5000/mirror/hf/huggingfacetb/smollm2-135m-instruct-gguf:smollm2-135m-instruct-q4_1-4a6f9c2b8e1d"
        );
        let long = "x".repeat(300);
        let r = m.reference("o/r", &format!("{long}.gguf"), "abc").unwrap();
        assert!(r.tag.unwrap().len() <= 128);
        assert!(Mirror::parse("oci://reg.lan", OciConfig::default()).is_err());
        assert!(Mirror::parse("https://reg.lan/x", OciConfig::default()).is_err());
    }
}
