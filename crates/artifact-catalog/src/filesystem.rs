//! The filesystem backend: one folder per artifact, holding `metadata.json`.

use std::io::{ErrorKind, Write as _};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, shown_id};
use crate::id::{decode_dir_name, encode_dir_name, validate_id};
use crate::{Artifact, ArtifactCatalog, ArtifactMetadata, Result};

const METADATA: &str = "metadata.json";
const LOCK: &str = ".catalog.lock";
const TEMP_PREFIX: &str = ".metadata.json.";

/// A catalog kept as plain files: `<root>/<folder>/metadata.json`, where the folder
/// name is [`encode_dir_name`] of the id.
///
/// Every write goes to a temporary file in the same folder, is fsynced, renamed over
/// `metadata.json`, and the folder is fsynced: a crash leaves the old entry or the
/// new one, never half of one. A lock file (`flock`) makes changes atomic between
/// threads and processes.
#[derive(Debug)]
pub struct FilesystemCatalog<T> {
    root: PathBuf,
    _kind: PhantomData<fn() -> T>,
}

#[derive(Serialize, Deserialize)]
struct Stored<T> {
    kind: String,
    id: String,
    added_at: DateTime<Utc>,
    last_accessed: Option<DateTime<Utc>>,
    artifact: T,
}

/// A held lock, released when dropped.
struct Lock(#[allow(dead_code)] std::fs::File);

impl<T: Artifact> FilesystemCatalog<T> {
    /// Opens (or creates) the catalog folder `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs_err::create_dir_all(&root)?;
        Ok(Self {
            root,
            _kind: PhantomData,
        })
    }

    /// The catalog folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of the artifact with this id.
    pub fn entry_dir(&self, id: &str) -> Result<PathBuf> {
        Ok(self.root.join(encode_dir_name(id)?))
    }

    fn lock(&self, exclusive: bool) -> Result<Lock> {
        let path = self.root.join(LOCK);
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?
            .into_parts()
            .0;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot lock {}: {e}", path.display()))
        })?;
        Ok(Lock(file))
    }

    fn read(&self, id: &str) -> Result<Option<ArtifactMetadata<T>>> {
        // An id with no folder name can have no entry.
        let Ok(dir) = self.entry_dir(id) else {
            return Ok(None);
        };
        let Some(stored) = self.read_dir_entry(&dir)? else {
            return Ok(None);
        };
        if stored.id != id {
            return Err(CatalogError::FolderCollision {
                path: dir,
                id: shown_id(id),
                existing: shown_id(&stored.id),
            });
        }
        Ok(Some(ArtifactMetadata {
            artifact: stored.artifact,
            added_at: stored.added_at,
            last_accessed: stored.last_accessed,
        }))
    }

    fn read_dir_entry(&self, dir: &Path) -> Result<Option<Stored<T>>> {
        let path = dir.join(METADATA);
        let bytes = match fs_err::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let corrupt = |reason: String| CatalogError::Corrupt {
            path: path.clone(),
            reason,
        };
        let stored: Stored<T> =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if stored.kind != T::KIND {
            return Err(corrupt(format!(
                "it holds a {}, not a {}",
                stored.kind,
                T::KIND
            )));
        }
        Ok(Some(stored))
    }

    fn write(&self, entry: &ArtifactMetadata<T>) -> Result<()> {
        let id = entry.artifact.id();
        let dir = self.entry_dir(id)?;
        fs_err::create_dir_all(&dir)?;
        remove_stale_temps(&dir)?;
        let stored = Stored {
            kind: T::KIND.to_owned(),
            id: id.to_owned(),
            added_at: entry.added_at,
            last_accessed: entry.last_accessed,
            artifact: &entry.artifact,
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(|e| CatalogError::Corrupt {
            path: dir.join(METADATA),
            reason: format!("cannot encode: {e}"),
        })?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = fs_err::File::create(&temp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        fs_err::rename(&temp, dir.join(METADATA))?;
        sync_dir(&dir)
    }

    fn list_locked(&self) -> Result<Vec<ArtifactMetadata<T>>> {
        let mut out = Vec::new();
        for dirent in fs_err::read_dir(&self.root)? {
            let dirent = dirent?;
            let Some(id) = dirent.file_name().to_str().and_then(decode_dir_name) else {
                continue;
            };
            if !dirent.file_type()?.is_dir() {
                continue;
            }
            match self.read(&id) {
                Ok(Some(entry)) => out.push(entry),
                Ok(None) => {}
                // One damaged entry must not hide all the others.
                Err(e) => {
                    tracing::warn!(id = %shown_id(&id), error = %e, "skipping a catalog entry")
                }
            }
        }
        out.sort_by(|a, b| a.artifact.id().cmp(b.artifact.id()));
        Ok(out)
    }
}

/// Temporary files left by a writer that crashed. Only called under the
/// exclusive lock, when no other writer can be using one.
fn remove_stale_temps(dir: &Path) -> Result<()> {
    for dirent in fs_err::read_dir(dir)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) && name.ends_with(".tmp") {
            fs_err::remove_file(dirent.path())?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Makes the rename itself durable. Directories cannot be opened on Windows.
    #[cfg(unix)]
    fs_err::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl<T: Artifact> ArtifactCatalog<T> for FilesystemCatalog<T> {
    fn add(&self, artifact: T) -> Result<ArtifactMetadata<T>> {
        validate_id(artifact.id())?;
        let dir = self.entry_dir(artifact.id())?;
        let _lock = self.lock(true)?;
        if let Some(existing) = self.read_dir_entry(&dir)? {
            if existing.id == artifact.id() {
                return Err(CatalogError::AlreadyExists {
                    kind: T::KIND,
                    id: shown_id(artifact.id()),
                });
            }
            return Err(CatalogError::FolderCollision {
                path: dir,
                id: shown_id(artifact.id()),
                existing: shown_id(&existing.id),
            });
        }
        if let Some((provider, reference)) = artifact.source()
            && let Some(holder) = self
                .list_locked()?
                .into_iter()
                .find(|e| e.artifact.source() == Some((provider, reference)))
        {
            return Err(CatalogError::SourceExists {
                kind: T::KIND,
                provider: provider.to_owned(),
                reference: reference.to_owned(),
                id: holder.artifact.id().to_owned(),
            });
        }
        let entry = ArtifactMetadata {
            artifact,
            added_at: crate::now(),
            last_accessed: None,
        };
        self.write(&entry)?;
        Ok(entry)
    }

    fn get(&self, id: &str) -> Result<Option<ArtifactMetadata<T>>> {
        let _lock = self.lock(false)?;
        self.read(id)
    }

    fn list(&self) -> Result<Vec<ArtifactMetadata<T>>> {
        let _lock = self.lock(false)?;
        self.list_locked()
    }

    fn remove(&self, id: &str) -> Result<bool> {
        let Ok(dir) = self.entry_dir(id) else {
            return Ok(false);
        };
        let _lock = self.lock(true)?;
        if self.read(id)?.is_none() {
            return Ok(false);
        }
        fs_err::remove_file(dir.join(METADATA))?;
        sync_dir(&dir)?;
        remove_stale_temps(&dir)?;
        // The folder goes too when nothing else (the artifact's files) is in it.
        if let Err(e) = std::fs::remove_dir(&dir)
            && e.kind() != ErrorKind::DirectoryNotEmpty
        {
            tracing::debug!(dir = %dir.display(), error = %e, "catalog folder left in place");
        }
        Ok(true)
    }

    fn len(&self) -> Result<usize> {
        Ok(self.list()?.len())
    }

    fn modify(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut ArtifactMetadata<T>),
    ) -> Result<ArtifactMetadata<T>> {
        let not_found = || CatalogError::NotFound {
            kind: T::KIND,
            id: shown_id(id),
        };
        let _lock = self.lock(true)?;
        let mut entry = self.read(id)?.ok_or_else(not_found)?;
        change(&mut entry);
        if entry.artifact.id() != id {
            return Err(CatalogError::InvalidId {
                id: shown_id(entry.artifact.id()),
                reason: format!("an entry's id cannot change (it was {})", shown_id(id)),
            });
        }
        if let Some((provider, reference)) = entry.artifact.source()
            && let Some(holder) = self.list_locked()?.into_iter().find(|e| {
                e.artifact.id() != id && e.artifact.source() == Some((provider, reference))
            })
        {
            return Err(CatalogError::SourceExists {
                kind: T::KIND,
                provider: provider.to_owned(),
                reference: reference.to_owned(),
                id: holder.artifact.id().to_owned(),
            });
        }
        self.write(&entry)?;
        Ok(entry)
    }
}
