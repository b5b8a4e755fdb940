//! One conformance suite, run against both backends.
#![allow(clippy::unwrap_used)]

mod conformance;
mod processes;

use std::path::{Path, PathBuf};

use artifact_catalog::{
    Artifact, ArtifactCatalog, ArtifactStatus, FilesystemCatalog, SqliteCatalog,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thing {
    pub id: String,
    pub status: ArtifactStatus,
    pub path: PathBuf,
    pub size: u64,
    pub source: Option<(String, String)>,
    pub payload: String,
}

impl Thing {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            status: ArtifactStatus::Downloading,
            path: PathBuf::from(format!("/models/{}", id.len())),
            size: id.len() as u64,
            source: None,
            payload: String::new(),
        }
    }

    pub fn with_source(mut self, provider: &str, reference: &str) -> Self {
        self.source = Some((provider.to_owned(), reference.to_owned()));
        self
    }
}

impl Artifact for Thing {
    const KIND: &'static str = "thing";

    fn id(&self) -> &str {
        &self.id
    }
    fn status(&self) -> &ArtifactStatus {
        &self.status
    }
    fn set_status(&mut self, status: ArtifactStatus) {
        self.status = status;
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn source(&self) -> Option<(&str, &str)> {
        self.source.as_ref().map(|(p, r)| (p.as_str(), r.as_str()))
    }
}

pub type Catalog = Box<dyn ArtifactCatalog<Thing>>;

/// The backends under test, each opened on a location inside `dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Filesystem,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Filesystem];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Filesystem => "filesystem",
        }
    }

    pub fn from_name(name: &str) -> Self {
        Self::ALL.into_iter().find(|b| b.name() == name).unwrap()
    }

    /// The catalog's location inside `dir`: a database file, or a folder.
    pub fn location(self, dir: &Path) -> PathBuf {
        match self {
            Backend::Sqlite => dir.join("catalog.db"),
            Backend::Filesystem => dir.join("things"),
        }
    }

    pub fn open(self, dir: &Path) -> Catalog {
        let at = self.location(dir);
        match self {
            Backend::Sqlite => Box::new(SqliteCatalog::<Thing>::open(at).unwrap()),
            Backend::Filesystem => Box::new(FilesystemCatalog::<Thing>::open(at).unwrap()),
        }
    }
}
