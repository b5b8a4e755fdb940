//! A catalog of artifacts on this machine: model files, worker binaries.
//!
//! [`ArtifactCatalog`] is one trait with two backends: [`SqliteCatalog`], the default
//! (one embedded SQLite database in WAL mode, safe with several threads and several
//! processes), and [`FilesystemCatalog`] (one folder per artifact with a
//! `metadata.json`, written atomically). Both pass one conformance suite.
//!
//! A catalog never fetches anything: a provisioner does (the `provisioning` crate
//! holds the traits vendors implement), and the daemon records the result here.
//!
//! This crate knows nothing of models, workers or HTTP.
#![deny(missing_docs)]

mod error;
mod filesystem;
mod generation;
mod hashing;
mod id;
mod sqlite;

use std::path::Path;

pub use hashing::{copy_hashing, sha256_file};

use chrono::{DateTime, SubsecRound as _, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use error::CatalogError;
pub use filesystem::FilesystemCatalog;
pub use generation::Generational;
pub use id::{MAX_ID_LEN, decode_dir_name, encode_dir_name, validate_id};
pub use sqlite::SqliteCatalog;

/// Which backend keeps a catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// One SQLite database, `catalog.db` in the home folder (the default).
    #[default]
    Sqlite,
    /// A `metadata.json` in each artifact's folder.
    Filesystem,
}

impl Backend {
    /// Opens a catalog: the SQLite database `database`, or the folder `folder`.
    pub fn open<T: Artifact>(
        self,
        database: &Path,
        folder: &Path,
    ) -> Result<Box<dyn ArtifactCatalog<T>>> {
        Ok(match self {
            Self::Sqlite => Box::new(SqliteCatalog::open(database)?),
            Self::Filesystem => Box::new(FilesystemCatalog::open(folder)?),
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "filesystem" | "fs" => Ok(Self::Filesystem),
            other => Err(format!(
                "unknown catalog backend {other:?}: use sqlite or filesystem"
            )),
        }
    }
}

/// The result of a catalog operation.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// Something a catalog can hold.
pub trait Artifact: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind of artifact (`"model"`, `"worker"`): kinds that share one database
    /// never see each other's entries.
    const KIND: &'static str;

    /// The artifact's unique id.
    fn id(&self) -> &str;

    /// Where the artifact stands.
    fn status(&self) -> &ArtifactStatus;

    /// Changes where the artifact stands.
    fn set_status(&mut self, status: ArtifactStatus);

    /// Where its file (or main file) is on disk.
    fn path(&self) -> &Path;

    /// Its size in bytes.
    fn size(&self) -> u64;

    /// Where it came from, as (provider, reference): a second key, unique like the
    /// id, to find an artifact by how it was asked for. `None` when it has none.
    fn source(&self) -> Option<(&str, &str)> {
        None
    }
}

/// Where an artifact stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ArtifactStatus {
    /// Complete, verified and ready to use.
    Available,
    /// Being fetched; not usable yet.
    Downloading,
    /// A fetch stopped on purpose with its partial kept: fetching it again resumes.
    Paused,
    /// Not usable, for the reason given.
    Failed {
        /// What went wrong.
        error: String,
    },
}

impl ArtifactStatus {
    /// The state's name: `available`, `downloading`, `paused` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Downloading => "downloading",
            Self::Paused => "paused",
            Self::Failed { .. } => "failed",
        }
    }
}

/// A catalog entry set aside because it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    /// `model` or `worker`.
    pub kind: &'static str,
    /// Its id.
    pub id: String,
    /// Why it could not be read.
    pub reason: String,
    /// When it was set aside (RFC 3339).
    pub at: String,
}

/// The current time, as precise as both backends store it (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// An artifact with what the catalog records about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMetadata<T> {
    /// The artifact itself.
    #[serde(flatten)]
    pub artifact: T,
    /// When it was added to the catalog.
    pub added_at: DateTime<Utc>,
    /// When it was last used, if ever.
    pub last_accessed: Option<DateTime<Utc>>,
}

/// A catalog of one kind of artifact.
///
/// Every method is blocking (SQLite, file IO): async callers run them in
/// `spawn_blocking`. Every change is atomic, between threads and between processes.
pub trait ArtifactCatalog<T: Artifact>: Send + Sync {
    /// Adds an artifact; refuses one whose id (or source) is already there.
    fn add(&self, artifact: T) -> Result<ArtifactMetadata<T>>;

    /// The artifact with this id.
    fn get(&self, id: &str) -> Result<Option<ArtifactMetadata<T>>>;

    /// Every artifact, ordered by id.
    fn list(&self) -> Result<Vec<ArtifactMetadata<T>>>;

    /// Moves the entries that cannot be read (a damaged row) out of the way, where
    /// they are kept but no longer stop a listing; every entry set aside so far, with
    /// why. A backend whose damaged entries are skipped where they lie sets none aside.
    fn quarantine(&self) -> Result<Vec<Quarantined>> {
        Ok(Vec::new())
    }

    /// Removes the entry (not the artifact's files); whether it was there.
    fn remove(&self, id: &str) -> Result<bool>;

    /// How many artifacts there are.
    fn len(&self) -> Result<usize>;

    /// Changes an entry in one atomic step: `change` sees the current entry and edits
    /// it in place; no other writer comes between the read and the write. The id
    /// cannot be changed. Fails with [`CatalogError::NotFound`] when absent.
    fn modify(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut ArtifactMetadata<T>),
    ) -> Result<ArtifactMetadata<T>>;

    /// Whether an artifact with this id is there.
    fn contains(&self, id: &str) -> Result<bool> {
        Ok(self.get(id)?.is_some())
    }

    /// Whether the catalog is empty.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Replaces an artifact, keeping its catalog dates.
    fn update(&self, artifact: T) -> Result<ArtifactMetadata<T>> {
        let id = artifact.id().to_owned();
        let mut artifact = Some(artifact);
        self.modify(&id, &mut |entry| {
            if let Some(a) = artifact.take() {
                entry.artifact = a;
            }
        })
    }

    /// Changes an artifact's status.
    fn set_status(&self, id: &str, status: ArtifactStatus) -> Result<ArtifactMetadata<T>> {
        self.modify(id, &mut |entry| entry.artifact.set_status(status.clone()))
    }

    /// Records that the artifact was used now.
    fn touch(&self, id: &str) -> Result<ArtifactMetadata<T>> {
        let now = now();
        self.modify(id, &mut |entry| entry.last_accessed = Some(now))
    }

    /// The artifact that came from this (provider, reference).
    fn find_by_source(
        &self,
        provider: &str,
        reference: &str,
    ) -> Result<Option<ArtifactMetadata<T>>> {
        Ok(self
            .list()?
            .into_iter()
            .find(|e| e.artifact.source() == Some((provider, reference))))
    }
}
