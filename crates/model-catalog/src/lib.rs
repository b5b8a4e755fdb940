//! The catalog of models on this machine.
//!
//! A [`ModelEntry`] is one GGUF model: where its file is, how big, where it came from,
//! whether it is intact, and its GGUF summary (architecture, quantization, parameter
//! count, context length). [`ModelCatalog`] keeps them on either catalog backend,
//! lays out their folders under `$RBEE_HOME/models`, and checks that the files
//! still are what was recorded ([`ModelCatalog::verify`]).
//!
//! It knows nothing of how models are downloaded.
#![deny(missing_docs)]

mod entry;
mod verify;

use std::ops::Deref;
use std::path::{Path, PathBuf};

pub use artifact_catalog::{
    Artifact, ArtifactCatalog, ArtifactMetadata, ArtifactStatus, Backend, CatalogError,
    Generational,
};
mod alias;

pub use alias::alias;
pub use entry::{DERIVED, DownloadProgress, ModelEntry, ModelProjector, Preset, Shard};
pub use verify::{VerifyProblem, VerifyReport, sha256_file};

/// A model with its catalog dates.
pub type ModelRecord = ArtifactMetadata<ModelEntry>;

/// The result of a catalog operation.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The folder of the model `id` under `models_dir`: `models_dir/<encoded id>`,
/// always inside `models_dir` whatever the id.
pub fn model_dir(models_dir: &Path, id: &str) -> Result<PathBuf> {
    Ok(models_dir.join(artifact_catalog::encode_dir_name(id)?))
}

/// The models of one `RBEE_HOME`.
///
/// It dereferences to the generic [`ArtifactCatalog`] (add, get, list, modify, ...)
/// and adds the model catalog's own calls.
pub struct ModelCatalog {
    inner: Generational<ModelEntry>,
    models_dir: PathBuf,
}

impl std::fmt::Debug for ModelCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCatalog")
            .field("models_dir", &self.models_dir)
            .finish_non_exhaustive()
    }
}

impl ModelCatalog {
    /// Opens the model catalog of `home`: `home/catalog.db` with the SQLite backend,
    /// `home/models/*/metadata.json` with the filesystem backend.
    pub fn open(home: &Path, backend: Backend) -> Result<Self> {
        let models_dir = home.join("models");
        let inner = Generational::new(backend.open(&home.join("catalog.db"), &models_dir)?);
        fs_err::create_dir_all(&models_dir)?;
        Ok(Self { inner, models_dir })
    }

    /// How many writes went through this catalog since it was opened: what is
    /// derived from it (the hive's model list, its alias index) is rebuilt when this
    /// moved. Read it before reading the catalog.
    pub fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// `home/models`.
    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// The folder a model's files go in: `home/models/<encoded id>`. It is always
    /// inside `models_dir`, whatever the id.
    pub fn model_dir(&self, id: &str) -> Result<PathBuf> {
        model_dir(&self.models_dir, id)
    }

    /// Registers a model; refuses one whose id, or (provider, reference), is there.
    pub fn register(&self, entry: ModelEntry) -> Result<ModelRecord> {
        self.inner.add(entry)
    }

    /// The model asked for as `reference` from `provider`.
    pub fn find(&self, reference: &str, provider: &str) -> Result<Option<ModelRecord>> {
        self.inner.find_by_source(provider, reference)
    }

    /// The total size of the available models, in bytes.
    pub fn total_size(&self) -> Result<u64> {
        Ok(self
            .inner
            .list()?
            .iter()
            .filter(|e| e.artifact.status == ArtifactStatus::Available)
            .map(|e| e.artifact.size)
            .sum())
    }
}

impl Deref for ModelCatalog {
    type Target = dyn ArtifactCatalog<ModelEntry>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}
