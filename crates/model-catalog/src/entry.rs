use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use artifact_catalog::{Artifact, ArtifactStatus};
use serde::{Deserialize, Serialize};

/// One model in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// The canonical reference with the resolved file: `hf:ORG/REPO/file.gguf`,
    /// `https://host/path/model.gguf`, `file:/abs/path/model.gguf`.
    pub id: String,
    /// Who provided it: `huggingface`, `http` or `local`.
    pub provider: String,
    /// The reference it was asked for by, with the provider's prefix.
    pub reference: String,
    /// A name for people: the GGUF's `general.name`, else the file name.
    pub name: String,
    /// The model file (the first shard of a split model).
    pub path: PathBuf,
    /// Its size in bytes (all shards).
    pub size: u64,
    /// Where it stands.
    pub status: ArtifactStatus,
    /// The sha256 of the file, lowercase hex: the one the vendor gave, else ours.
    pub sha256: Option<String>,
    /// Whether the bytes matched a sha256 the source published (the hub's LFS oid,
    /// a `--sha256` given with the pull); our own hash of a file makes it `false`.
    pub verified: bool,
    /// When the file's bytes were last hashed and matched `sha256` (at download,
    /// import or `verify --rehash`).
    #[serde(default)]
    pub hashed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The vendor's revision: a Hugging Face commit, an HTTP ETag.
    pub revision: Option<String>,
    /// Where the bytes came from.
    pub source_url: Option<String>,
    /// What the GGUF header says about the model.
    pub gguf: Option<gguf::Summary>,
    /// Labels given by the user.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A note given by the user.
    #[serde(default)]
    pub notes: Option<String>,
    /// How far a download has come, while `Downloading`; what is on disk, while
    /// `Paused`.
    #[serde(default)]
    pub progress: Option<DownloadProgress>,
    /// The files of a split model (`*-00001-of-00003.gguf`), first one included;
    /// empty for a model in one file.
    #[serde(default)]
    pub shards: Vec<Shard>,
    /// How the model is run, as its user set it (`PATCH /v1/models/{id}`).
    #[serde(default, skip_serializing_if = "Preset::is_empty")]
    pub preset: Preset,
    /// A model adopted where another tool keeps it (the Hugging Face cache, Ollama's
    /// store, LM Studio's folder, a folder the user named), or made over another
    /// model's file (`/api/create`, `/api/copy`; its `provider` is `derived`): the
    /// hive never moves, renames or deletes its files; removing it only forgets it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Its multimodal projector (`mmproj`), paired with it: what lets it see images
    /// (or hear sounds) on llama.cpp's engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<ModelProjector>,
}

/// How a model is run: every spawn, load and request through the one endpoint takes
/// these unless it says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// The context to allocate, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<u64>,
    /// Requests served at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// `rbee` or `llama.cpp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The backend its worker runs on: `cpu`, `cuda`, `metal`, `vulkan` or `rocm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The device index on that backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
    /// More arguments for the engine (llama.cpp's), checked as a spawn's are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engine_args: Vec<String>,
    /// The name the one endpoint knows it by, `name:tag`, instead of the derived one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Seconds its worker stays without a request before it is stopped (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_secs: Option<u64>,
    /// Never evicted to make room for another model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// A catalog model that drafts tokens for this one (speculative decoding), by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// The most tokens the draft proposes at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_max: Option<u32>,
    /// The fewest tokens a draft is used with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_min: Option<u32>,
    /// What the draft needs in memory beside this model, at this model's context:
    /// recorded when the draft was set, so that the one estimate counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_bytes: Option<u64>,
    /// A system prompt the one endpoint gives a conversation that brings none
    /// (Ollama's `SYSTEM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Sampling parameters by Ollama's names (`temperature`, `top_p`, `stop`, ...):
    /// what a request through the one endpoint gets when it does not say (Ollama's
    /// `PARAMETER`s).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// The Go template of a model pulled from Ollama's library, kept as it came and
    /// shown; the model's own chat template (in its GGUF) is the one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Run without the paired multimodal projector (llama.cpp's `--no-mmproj`): the
    /// worker reads text only and needs none of the projector's memory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_mmproj: bool,
}

/// The provider of a model made over another's file (`/api/create`, `/api/copy`):
/// its reference is `NAME@BASE_ID`.
pub const DERIVED: &str = "derived";

impl ModelEntry {
    /// The catalog id of the model whose file a derived model runs, if it is one.
    pub fn derived_from(&self) -> Option<&str> {
        if self.provider != DERIVED {
            return None;
        }
        self.reference.split_once('@').map(|(_, base)| base)
    }

    /// What its files take on disk: the model's and its projector's.
    pub fn disk_bytes(&self) -> u64 {
        self.size
            .saturating_add(self.projector.as_ref().map_or(0, |p| p.size))
    }

    /// The projector its worker runs with: the paired one, unless the preset turns
    /// it off.
    pub fn projector_in_use(&self) -> Option<&ModelProjector> {
        self.projector.as_ref().filter(|_| !self.preset.no_mmproj)
    }
}

impl Preset {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A model's multimodal projector: its file (in the model's folder) and its facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelProjector {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, lowercase hex (empty for one adopted where it lies, not hashed).
    pub sha256: String,
    /// What its header says (empty until it is fetched).
    pub summary: gguf::Projector,
    /// Where it is fetched from, while a pull brings it with its model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
}

/// One file of a split model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The file, in the model's folder.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, when known.
    pub sha256: Option<String>,
    /// Where it comes from.
    pub source_url: Option<String>,
}

/// How far a download has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadProgress {
    /// Bytes on disk.
    pub bytes_done: u64,
    /// Bytes in all, when known.
    pub bytes_total: Option<u64>,
}

impl ModelEntry {
    /// A new entry in state `Downloading`, with no hash, revision or summary yet.
    pub fn new(id: &str, provider: &str, reference: &str, path: &Path) -> Self {
        let name = path
            .file_stem()
            .map_or_else(|| id.to_owned(), |s| s.to_string_lossy().into_owned());
        Self {
            id: id.to_owned(),
            provider: provider.to_owned(),
            reference: reference.to_owned(),
            name,
            path: path.to_path_buf(),
            size: 0,
            status: ArtifactStatus::Downloading,
            sha256: None,
            verified: false,
            hashed_at: None,
            revision: None,
            source_url: None,
            gguf: None,
            tags: Vec::new(),
            notes: None,
            progress: None,
            shards: Vec::new(),
            preset: Preset::default(),
            external: false,
            projector: None,
        }
    }

    /// The name the one endpoint knows it by: its preset's alias, else
    /// `<repository or file, lowercase, without -GGUF>:<quantization>`.
    pub fn alias(&self) -> String {
        crate::alias::alias_of(self)
    }

    /// Every file of the model: the shards of a split model, else its one file.
    pub fn files(&self) -> Vec<&Path> {
        if self.shards.is_empty() {
            vec![self.path.as_path()]
        } else {
            self.shards.iter().map(|s| s.path.as_path()).collect()
        }
    }

    /// The model's files and its projector's: what is on disk for it.
    pub fn every_file(&self) -> Vec<&Path> {
        let mut out = self.files();
        out.extend(self.projector.as_ref().map(|p| p.path.as_path()));
        out
    }

    /// Every file of the model with its size, sha256 and source: the shards of a split
    /// model, else one made of the entry's own fields.
    pub fn parts(&self) -> Vec<Shard> {
        if self.shards.is_empty() {
            vec![Shard {
                path: self.path.clone(),
                size: self.size,
                sha256: self.sha256.clone(),
                source_url: self.source_url.clone(),
            }]
        } else {
            self.shards.clone()
        }
    }

    /// Records the GGUF summary, and takes the model's name from it when it has one.
    pub fn with_summary(mut self, summary: gguf::Summary) -> Self {
        if let Some(name) = summary.name.as_ref().filter(|n| !n.trim().is_empty()) {
            self.name.clone_from(name);
        }
        self.gguf = Some(summary);
        self
    }
}

impl Artifact for ModelEntry {
    const KIND: &'static str = "model";

    fn id(&self) -> &str {
        &self.id
    }

    fn status(&self) -> &ArtifactStatus {
        &self.status
    }

    fn set_status(&mut self, status: ArtifactStatus) {
        if !matches!(status, ArtifactStatus::Downloading | ArtifactStatus::Paused) {
            self.progress = None;
        }
        self.status = status;
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn source(&self) -> Option<(&str, &str)> {
        Some((&self.provider, &self.reference))
    }
}
