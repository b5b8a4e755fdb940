//! The Hugging Face hub as a vendor of models.

use std::time::Duration;

use async_trait::async_trait;
use model_catalog::{ArtifactStatus, ModelEntry, ModelProjector, Shard};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::reference::{HfReference, HfSelector, group_models, has_quant, quant_of, shard_of};
use crate::{
    Dirs, HubConfig, ProvisionContext, ProvisionError, ProvisionRequest, Resolved, VendorInfo,
    VendorSource, summary_of,
};

/// How long one call to the hub's API may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Models from the Hugging Face hub (or any server that speaks its protocol).
#[derive(Debug, Clone)]
pub struct HuggingFaceVendor {
    hub: HubConfig,
    dirs: Dirs,
    downloader: download::Downloader,
}

#[derive(Debug, Clone, Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    lfs: Option<Lfs>,
}

#[derive(Debug, Clone, Deserialize)]
struct Lfs {
    oid: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct RevisionInfo {
    sha: String,
}

/// Where a resolved model lies: its repo, the revision it was asked at, and its
/// (first) file's path in the repo. Read once per fetch from the plan, which is the
/// catalog's record of the resolution (a fetch may resume one from an earlier run).
struct InRepo {
    repo: String,
    revision: String,
    path: String,
}

impl InRepo {
    fn of(plan: &ModelEntry) -> Result<Self, ProvisionError> {
        let r = HfReference::parse(&plan.reference)?;
        // the id is hf:ORG/REPO/path/in/repo.gguf
        let path = plan
            .id
            .strip_prefix(&format!("hf:{}/", r.repo))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ProvisionError::Invalid(format!(
                    "{} does not name a file of {} (a damaged plan: pull it again)",
                    plan.id, r.repo
                ))
            })?;
        Ok(Self {
            path: path.to_owned(),
            repo: r.repo,
            revision: r.revision,
        })
    }
}

impl HuggingFaceVendor {
    /// A vendor for the hub in `hub`, placing models in `dirs`.
    pub fn new(hub: HubConfig, dirs: Dirs, downloader: download::Downloader) -> Self {
        Self {
            hub,
            dirs,
            downloader,
        }
    }

    fn api_url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.hub.endpoint.as_str().trim_end_matches('/'),
            path
        )
    }

    fn resolve_url(&self, repo: &str, revision: &str, path: &str) -> String {
        self.api_url(&format!("{repo}/resolve/{revision}/{path}"))
    }

    /// Places a model's files in the hub cache's layout (`--hf-cache-layout`) and
    /// points the entry at their snapshot links. `downloaded`: the files are in the
    /// hive's folder, verified, and move there; else the cache already holds each
    /// blob (by its sha256 and size) and only the links are made. `false` when the
    /// hub gave no sha256 to name a blob by (the files stay where they are).
    async fn place_in_cache(
        &self,
        cache: &std::path::Path,
        at: &InRepo,
        entry: &mut ModelEntry,
        downloaded: bool,
        ctx: &ProvisionContext,
    ) -> Result<bool, ProvisionError> {
        let commit = entry.revision.clone().unwrap_or_default();
        // shards sit beside the first
        let in_repo = at.path.clone();
        let folder = in_repo.rsplit_once('/').map(|(d, _)| format!("{d}/"));
        let files: Vec<(std::path::PathBuf, String, String, u64)> = if entry.shards.is_empty() {
            vec![(
                entry.path.clone(),
                in_repo.clone(),
                entry.sha256.clone().unwrap_or_default(),
                entry.size,
            )]
        } else {
            entry
                .shards
                .iter()
                .map(|s| {
                    let name = s
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (
                        s.path.clone(),
                        format!("{}{name}", folder.as_deref().unwrap_or("")),
                        s.sha256.clone().unwrap_or_default(),
                        s.size,
                    )
                })
                .collect()
        };
        if files.iter().any(|f| f.2.is_empty()) {
            return Ok(false);
        }
        if !downloaded {
            let blobs = crate::hf_cache::repo_dir(cache, &at.repo).join("blobs");
            let all_there = files.iter().all(|(_, _, sha, size)| {
                fs_err::metadata(blobs.join(sha)).is_ok_and(|m| m.is_file() && m.len() == *size)
            });
            if !all_there {
                return Ok(false);
            }
        }
        let (cache, repo, revision) = (cache.to_path_buf(), at.repo.clone(), at.revision.clone());
        let model_dir = self.dirs.model_dir(&entry.id)?;
        let links = tokio::task::spawn_blocking(move || {
            let placements: Vec<crate::hf_cache::Placement<'_>> = files
                .iter()
                .map(|(p, rp, sha, _)| crate::hf_cache::Placement {
                    downloaded: downloaded.then_some(p.as_path()),
                    repo_path: rp,
                    sha256: sha,
                })
                .collect();
            let links = crate::hf_cache::place(&cache, &repo, &revision, &commit, &placements)?;
            // the hive's own folder of the model is empty now
            let _ = fs_err::remove_dir(&model_dir);
            Ok::<_, std::io::Error>(links)
        })
        .await
        .map_err(|e| ProvisionError::io("", e))?
        .map_err(|e| ProvisionError::io("cannot place the model in the hub cache", e))?;
        ctx.reporter.narrate(
            "place",
            &format!("in the hub cache: {}", links[0].display()),
        );
        entry.path.clone_from(&links[0]);
        for (s, link) in entry.shards.iter_mut().zip(links) {
            s.path = link;
        }
        Ok(true)
    }

    /// GET on the hub's API, with the token, mapping the hub's errors.
    async fn api_get(
        &self,
        url: &str,
        r: &HfReference,
    ) -> Result<reqwest::Response, ProvisionError> {
        let mut rb = self.downloader.client().get(url).timeout(API_TIMEOUT);
        if let Some(t) = &self.hub.token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.map_err(|e| {
            ProvisionError::download(
                "network_error",
                format!("cannot reach {}: {e}", self.hub.endpoint),
                e,
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.hub_error(&resp, r))
    }

    fn hub_error(&self, resp: &reqwest::Response, r: &HfReference) -> ProvisionError {
        let code = resp
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let token_hint = if self.hub.token.is_some() {
            "the token in HF_TOKEN (or the token file) has no access to it"
        } else {
            "set HF_TOKEN (or log in with `hf auth login`) with a token that has access"
        };
        match (resp.status(), code) {
            (_, "RepoNotFound") => ProvisionError::NotFound(format!(
                "repository {} not found on {} (if it is private, {token_hint})",
                r.repo, self.hub.endpoint
            )),
            (_, "GatedRepo") => ProvisionError::Unauthorized(format!(
                "{} is gated: accept its terms on the hub, then {token_hint}",
                r.repo
            )),
            (_, "RevisionNotFound") => {
                ProvisionError::NotFound(format!("revision {} not found in {}", r.revision, r.repo))
            }
            (_, "EntryNotFound") => {
                ProvisionError::NotFound(format!("file not found in {}", r.repo))
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                ProvisionError::Unauthorized(format!("{} refused access: {token_hint}", r.repo))
            }
            (StatusCode::NOT_FOUND, _) => {
                ProvisionError::NotFound(format!("{} not found on {}", r.repo, self.hub.endpoint))
            }
            (s, _) => ProvisionError::failed(
                "http_error",
                format!("{} answered {s} for {}", self.hub.endpoint, r.repo),
            ),
        }
    }

    /// Every file of the repo at the revision, following the tree API's pages.
    async fn list_files(&self, r: &HfReference) -> Result<Vec<TreeEntry>, ProvisionError> {
        let mut url = self.api_url(&format!(
            "api/models/{}/tree/{}?recursive=true",
            r.repo, r.revision
        ));
        let mut out = Vec::new();
        for _ in 0..1000 {
            let resp = self.api_get(&url, r).await?;
            let next = next_link(resp.headers());
            let page: Vec<TreeEntry> = resp.json().await.map_err(|e| {
                ProvisionError::download(
                    "protocol_error",
                    format!(
                        "the hub's file list for {} is not what was expected: {e}",
                        r.repo
                    ),
                    e,
                )
            })?;
            out.extend(page.into_iter().filter(|e| e.kind == "file"));
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        Err(ProvisionError::failed(
            "protocol_error",
            format!("the file list of {} has too many pages", r.repo),
        ))
    }

    /// The commit a revision points at, so every file comes from one commit.
    async fn commit(&self, r: &HfReference) -> Result<String, ProvisionError> {
        let url = self.api_url(&format!("api/models/{}/revision/{}", r.repo, r.revision));
        let info: RevisionInfo = self.api_get(&url, r).await?.json().await.map_err(|e| {
            ProvisionError::download(
                "protocol_error",
                format!(
                    "the hub's revision info for {} is not what was expected: {e}",
                    r.repo
                ),
                e,
            )
        })?;
        Ok(info.sha)
    }
}

/// `Link: <url>; rel="next"`.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let v = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    v.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

fn choose(
    r: &HfReference,
    reference: &str,
    files: &[TreeEntry],
) -> Result<crate::reference::RepoModel<TreeEntry>, ProvisionError> {
    let named: Vec<(String, TreeEntry)> =
        files.iter().map(|f| (f.path.clone(), f.clone())).collect();
    let models = group_models(&named);
    let describe = |ms: &[&crate::reference::RepoModel<TreeEntry>]| -> String {
        ms.iter()
            .map(|m| match quant_of(&m.path) {
                Some(q) => format!("hf:{}:{q} ({})", r.repo, m.path),
                None => format!("hf:{}/{}", r.repo, m.path),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<&_> = models.iter().collect();
    if models.is_empty() {
        return Err(ProvisionError::NotFound(format!(
            "{} has no GGUF files at {}",
            r.repo, r.revision
        )));
    }
    let pick = |found: Vec<&crate::reference::RepoModel<TreeEntry>>, what: &str| match found.len() {
        0 => Err(ProvisionError::NotFound(format!(
            "no GGUF file {what} in {}; there are: {}",
            r.repo,
            describe(&all)
        ))),
        1 => Ok(found[0].clone()),
        _ => Err(ProvisionError::Ambiguous(format!(
            "{reference} matches several GGUF files: {}; name one",
            describe(&found)
        ))),
    };
    let model = match &r.selector {
        HfSelector::Path(p) => {
            let hit = models
                .iter()
                .find(|m| &m.path == p || m.files.iter().any(|f| &f.path == p));
            return hit.cloned().ok_or_else(|| {
                ProvisionError::NotFound(format!(
                    "{p} not found in {} at {}; GGUF files there: {}",
                    r.repo,
                    r.revision,
                    describe(&all)
                ))
            });
        }
        HfSelector::Quant(q) => pick(
            models.iter().filter(|m| has_quant(&m.path, q)).collect(),
            &format!("with quant {q}"),
        )?,
        HfSelector::Auto if models.len() == 1 => models[0].clone(),
        HfSelector::Auto => {
            let with = |q: &str| {
                models
                    .iter()
                    .filter(|m| has_quant(&m.path, q))
                    .collect::<Vec<_>>()
            };
            let (q4, q8) = (with("Q4_K_M"), with("Q8_0"));
            if q4.len() == 1 {
                q4[0].clone()
            } else if q4.is_empty() && q8.len() == 1 {
                q8[0].clone()
            } else {
                return Err(ProvisionError::Ambiguous(format!(
                    "{} has {} GGUF models; pick one: {}",
                    r.repo,
                    models.len(),
                    describe(&all)
                )));
            }
        }
    };
    Ok(model)
}

impl HuggingFaceVendor {
    /// The mirror's copy of a model about to be fetched; else, as the error, where
    /// the mirror should get one (none without a mirror, or for a file the hub
    /// gives no sha256 for). It says which it is.
    async fn mirror_copy(
        &self,
        at: &InRepo,
        entry: &ModelEntry,
        ctx: &ProvisionContext,
    ) -> Result<crate::oci::MirrorCopy, Option<crate::oci::OciReference>> {
        let mirror = self.hub.mirror.as_ref().ok_or(None)?;
        let commit = entry.revision.as_ref().ok_or(None)?;
        let target = mirror.reference(&at.repo, &at.path, commit).ok_or(None)?;
        let shards = entry.parts();
        if shards.iter().any(|s| s.sha256.is_none()) {
            return Err(None);
        }
        match mirror
            .find(self.downloader.client().clone(), &target, &shards)
            .await
        {
            Ok(Some(copy)) => {
                ctx.reporter
                    .narrate("mirror", &format!("from the mirror: {}", copy.reference));
                Ok(copy)
            }
            Ok(None) => {
                ctx.reporter.narrate(
                    "mirror",
                    &format!("not in the mirror yet ({target}): from the hub, then copied there"),
                );
                Err(Some(target))
            }
            Err(e) => {
                ctx.reporter.narrate(
                    "mirror",
                    &format!("the mirror failed ({e}): from the hub instead"),
                );
                Err(None)
            }
        }
    }
}

/// The huggingface vendor.
pub(crate) const HUGGING_FACE: VendorInfo = VendorInfo {
    name: "huggingface",
    forms: "hf:ORG/REPO[@REVISION][:QUANT | /path/file.gguf]",
    prefixes: &["hf:"],
};

#[async_trait]
impl VendorSource<ModelEntry> for HuggingFaceVendor {
    fn info(&self) -> &'static VendorInfo {
        &HUGGING_FACE
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<ModelEntry>, ProvisionError> {
        let reference = request.reference.trim();
        let r = HfReference::parse(reference)?;
        if self.hub.offline {
            return Err(ProvisionError::Offline(format!(
                "HF_HUB_OFFLINE is set: {reference} cannot be resolved without the network (pull it while online, or import the file)"
            )));
        }
        let files = self.list_files(&r).await?;
        let model = choose(&r, reference, &files)?;
        if let Some((_, _, total)) = shard_of(&model.path)
            && model.files.len() != total as usize
        {
            return Err(ProvisionError::NotFound(format!(
                "{} is split into {total} files but {} has only {} of them",
                model.path,
                r.repo,
                model.files.len()
            )));
        }
        let commit = self.commit(&r).await?;
        let id = format!("hf:{}/{}", r.repo, model.path);
        let dir = self.dirs.model_dir(&id)?;
        let shard = |f: &TreeEntry| Shard {
            path: dir.join(f.path.rsplit('/').next().unwrap_or(&f.path)),
            size: f.lfs.as_ref().map_or(f.size, |l| l.size),
            sha256: f.lfs.as_ref().map(|l| l.oid.to_ascii_lowercase()),
            source_url: Some(self.resolve_url(&r.repo, &commit, &f.path)),
        };
        let shards: Vec<Shard> = model.files.iter().map(shard).collect();
        let first = shards[0].clone();
        let mut entry = ModelEntry::new(&id, "huggingface", reference, &first.path);
        entry.size = shards.iter().map(|s| s.size).sum();
        entry.revision = Some(commit.clone());
        entry.source_url.clone_from(&first.source_url);
        entry.sha256 = match (&request.sha256, shards.len()) {
            (Some(given), 1) => Some(given.to_ascii_lowercase()),
            _ => first.sha256.clone(),
        };
        if shards.len() > 1 {
            entry.shards = shards;
        }
        // the repo's multimodal projector comes with the model, as `llama-server -hf`
        // takes it
        let projector = if request.no_projector {
            None
        } else {
            let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
            crate::reference::pick_projector(&model.path, &paths)
                .and_then(|p| files.iter().find(|f| f.path == p))
        };
        entry.projector = projector.map(|f| ModelProjector {
            path: dir.join(f.path.rsplit('/').next().unwrap_or(&f.path)),
            size: f.lfs.as_ref().map_or(f.size, |l| l.size),
            sha256: f
                .lfs
                .as_ref()
                .map(|l| l.oid.to_ascii_lowercase())
                .unwrap_or_default(),
            summary: gguf::Projector::default(),
            source_url: Some(self.resolve_url(&r.repo, &commit, &f.path)),
        });
        Ok(HUGGING_FACE.resolved(id, entry))
    }

    async fn read_range(
        &self,
        resolved: &Resolved<ModelEntry>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<crate::RangeRead, ProvisionError> {
        let credential = self.hub.token.clone().map(download::Credential::Bearer);
        crate::read_remote(
            &self.downloader,
            &resolved.plan,
            credential.as_ref(),
            file,
            start,
            len,
            "",
        )
        .await
    }

    async fn fetch(
        &self,
        resolved: Resolved<ModelEntry>,
        ctx: &ProvisionContext,
    ) -> Result<ModelEntry, ProvisionError> {
        let mut entry = resolved.plan;
        let at = InRepo::of(&entry)?;
        if let Some(cache) = &self.hub.cache_layout
            && self
                .place_in_cache(cache, &at, &mut entry, false, ctx)
                .await?
        {
            // huggingface_hub (or llama.cpp) fetched these bytes already: adopted,
            // not fetched twice; their sha256 is the blob's name, not our hash
            ctx.reporter
                .narrate("download", "already in the hub cache: nothing to download");
            let summary = summary_of(&entry.files()).await?;
            entry = entry.with_summary(summary);
            entry.verified = false;
            entry.status = ArtifactStatus::Available;
            entry.progress = None;
            return Ok(entry);
        }
        let mirror = self.mirror_copy(&at, &entry, ctx).await;
        let verified = match &mirror {
            Ok(copy) => {
                // the same files, from the mirror's blobs
                let mut from_mirror = entry.clone();
                if from_mirror.shards.is_empty() {
                    from_mirror.source_url = copy.urls.first().cloned();
                } else {
                    for (s, url) in from_mirror.shards.iter_mut().zip(&copy.urls) {
                        s.source_url = Some(url.clone());
                    }
                }
                let verified = crate::fetch_files(
                    &self.downloader,
                    &self.dirs,
                    &mut from_mirror,
                    copy.credential.clone(),
                    ctx,
                    "",
                )
                .await?;
                entry.sha256 = from_mirror.sha256;
                verified
            }
            Err(_) => {
                crate::fetch_files(
                    &self.downloader,
                    &self.dirs,
                    &mut entry,
                    self.hub.token.clone().map(download::Credential::Bearer),
                    ctx,
                    " (set HF_TOKEN for gated or private repos)",
                )
                .await?
            }
        };
        let summary = match summary_of(&entry.files()).await {
            Ok(s) => s,
            Err(e) => {
                // what is not a model does not stay (these are our copies, not yet
                // placed in any cache)
                for f in entry.files() {
                    let _ = fs_err::remove_file(f);
                }
                return Err(e);
            }
        };
        entry = entry.with_summary(summary);
        if let Some(cache) = &self.hub.cache_layout
            && !self
                .place_in_cache(cache, &at, &mut entry, true, ctx)
                .await?
        {
            ctx.reporter.narrate(
                "place",
                "kept in the hive's folder: the hub gave no sha256 to name the blob by",
            );
        }
        entry.verified = verified;
        crate::fetch_projector(
            &self.downloader,
            &self.dirs,
            &mut entry,
            self.hub.token.clone().map(download::Credential::Bearer),
            ctx,
        )
        .await?;
        entry.status = ArtifactStatus::Available;
        entry.progress = None;
        if let (Err(Some(target)), Some(m)) = (mirror, &self.hub.mirror) {
            m.write_through(
                self.downloader.client().clone(),
                entry.clone(),
                target,
                self.dirs.downloads.join("uploads"),
            );
        }
        Ok(entry)
    }
}
