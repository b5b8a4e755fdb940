//! A damaged catalog, said and repaired (`hive_repair`, and at every start).
//!
//! - A `catalog.db` that is not a database, or is malformed, is moved aside
//!   (`catalog.db.damaged-<time>`, with its WAL) and a new one is made: the start goes
//!   on, loudly.
//! - A row that cannot be read is quarantined (kept in the database's `quarantine`
//!   table, named in the log and in `hive status`), never fatal.
//! - The hive's own `models/<dir>/` folders that no entry names (a truncated or a new
//!   catalog beside them) are re-adopted from their files: the id from the folder's
//!   name, the summary from the GGUF, the sha256 hashed after, in the background.
//!
//! It uses nothing of the other operations.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use artifact_catalog::{ArtifactStatus, Backend, CatalogError};
use model_catalog::{ModelCatalog, ModelEntry};
use model_provisioner::scan::{Store, scan};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::ops::blocking;
use crate::state::{SharedHealth, SharedState, Unreadable};

/// Opens `open` on `home`'s catalog; a database that is damaged is moved aside
/// (with its WAL and shared-memory files), said once, and a new one opened.
pub fn open_or_set_aside<T>(
    home: &Path,
    backend: Backend,
    health: &SharedHealth,
    open: impl Fn() -> Result<T, CatalogError>,
) -> anyhow::Result<T> {
    match open() {
        Ok(c) => Ok(c),
        Err(e) if backend == Backend::Sqlite && e.is_damaged() => {
            let db = home.join("catalog.db");
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            let aside = home.join(format!("catalog.db.damaged-{stamp}"));
            fs_err::rename(&db, &aside)?;
            for tail in ["-wal", "-shm"] {
                let from = home.join(format!("catalog.db{tail}"));
                if from.exists() {
                    let _ = fs_err::rename(
                        &from,
                        home.join(format!("catalog.db.damaged-{stamp}{tail}")),
                    );
                }
            }
            tracing::error!(
                "{e}: the file was moved to {} and a new catalog made; the models under {} are re-adopted from their files, worker binaries must be added or installed again",
                aside.display(),
                home.join("models").display()
            );
            health
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .damaged_moved_to = Some(aside);
            Ok(open()?)
        }
        Err(e) => Err(anyhow::anyhow!(
            "{e}: check the file's permissions and the disk; if the file is damaged, move it aside and start again (the models are re-adopted from their folders)"
        )),
    }
}

/// The provider a model's id says it came from.
fn provider_of(id: &str) -> &'static str {
    if id.starts_with("hf:") {
        "huggingface"
    } else if id.starts_with("oci://") {
        "oci"
    } else if id.starts_with("https://") || id.starts_with("http://") {
        "http"
    } else {
        "local"
    }
}

/// The hive's own model folders that no entry names, adopted from their files: what
/// was added, and what could not be read. Blocking.
pub fn readopt(catalog: &ModelCatalog) -> Result<(Vec<String>, Vec<Unreadable>), ApiError> {
    let models_dir = catalog.models_dir().to_path_buf();
    let known: std::collections::HashSet<PathBuf> = catalog
        .list()?
        .iter()
        .filter_map(|r| catalog.model_dir(&r.artifact.id).ok())
        .collect();
    let mut orphans = Vec::new();
    for dirent in fs_err::read_dir(&models_dir).map_err(ApiError::internal)? {
        let Ok(dirent) = dirent else { continue };
        let dir = dirent.path();
        if !dir.is_dir() || known.contains(&dir) {
            continue;
        }
        let Some(id) = dirent
            .file_name()
            .to_str()
            .and_then(artifact_catalog::decode_dir_name)
        else {
            continue;
        };
        orphans.push((id, dir));
    }
    let mut added = Vec::new();
    let mut unreadable = Vec::new();
    for (id, dir) in orphans {
        let found = scan(&[Store {
            kind: "folder",
            path: dir.clone(),
        }]);
        let Some(mut entry) = found.models.into_iter().next() else {
            let why = found
                .problems
                .first()
                .map_or_else(|| "no GGUF model in it".to_owned(), |p| format!("{p:?}"));
            unreadable.push((dir, why));
            continue;
        };
        entry = ModelEntry {
            id: id.clone(),
            provider: provider_of(&id).to_owned(),
            reference: id.clone(),
            external: false,
            status: ArtifactStatus::Available,
            sha256: None,
            verified: false,
            hashed_at: None,
            ..entry
        };
        match catalog.register(entry) {
            Ok(_) => added.push(id),
            Err(e) => unreadable.push((dir, e.to_string())),
        }
    }
    Ok((added, unreadable))
}

/// Quarantines unreadable rows and re-adopts orphan folders; says what it did, loudly
/// when anything was wrong, and hashes what it re-adopted in the background.
pub async fn repair(state: &SharedState) -> Result<Value, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    let workers = Arc::clone(&state.worker_catalog);
    let (quarantined, added, unreadable) = blocking(move || {
        let mut quarantined = catalog.quarantine()?;
        quarantined.extend(workers.quarantine()?);
        let (added, unreadable) = readopt(&catalog)?;
        Ok((quarantined, added, unreadable))
    })
    .await?;
    for q in &quarantined {
        tracing::error!(kind = q.kind, id = %q.id, "a catalog entry could not be read and was set aside (quarantined): {}", q.reason);
    }
    if !added.is_empty() {
        tracing::warn!(
            count = added.len(),
            "models under {} that the catalog did not name were re-adopted from their files: {}",
            state.catalog.models_dir().display(),
            added.join(", ")
        );
        state
            .shutdown
            .spawn(hash_each(Arc::clone(state), added.clone()));
    }
    for (dir, why) in &unreadable {
        tracing::warn!(dir = %dir.display(), "a model folder could not be re-adopted: {why}");
    }
    let health = {
        let mut h = state
            .catalog_health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        h.quarantined.clone_from(&quarantined);
        h.readopted.extend(added.iter().cloned());
        h.unreadable.clone_from(&unreadable);
        h.clone()
    };
    Ok(json!({
        "readopted": added,
        "quarantined": quarantined,
        "unreadable": unreadable.iter().map(|(d, w)| json!({"path": d, "reason": w})).collect::<Vec<_>>(),
        "damaged_moved_to": health.damaged_moved_to,
    }))
}

/// The sha256 of each re-adopted model, one after the other, off the async threads.
async fn hash_each(state: SharedState, ids: Vec<String>) {
    for id in ids {
        if state.shutdown.is_stopping() {
            return;
        }
        let catalog = Arc::clone(&state.catalog);
        let done = blocking(move || {
            let Some(r) = catalog.get(&id)? else {
                return Ok(());
            };
            let sha = model_catalog::sha256_file(&r.artifact.path).map_err(ApiError::internal)?;
            catalog.modify(&id, &mut |e| {
                e.artifact.sha256 = Some(sha.clone());
                e.artifact.hashed_at = Some(chrono::Utc::now());
            })?;
            Ok(())
        })
        .await;
        if let Err(e) = done {
            tracing::warn!("hashing a re-adopted model: {}", e.parts().1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::provider_of;

    #[test]
    fn providers_from_ids() {
        assert_eq!(provider_of("hf:org/repo/x.gguf"), "huggingface");
        assert_eq!(provider_of("oci://h/r:t"), "oci");
        assert_eq!(provider_of("https://h/x.gguf"), "http");
        assert_eq!(provider_of("file:/x.gguf"), "local");
    }
}
