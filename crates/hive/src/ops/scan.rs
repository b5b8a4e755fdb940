//! Adopting the models other tools keep, where they lie (`model_scan`). The scan
//! itself (`model_provisioner::scan`) only reads; here its finds are recorded as
//! external models: a new one is added, one seen before is left as it is (a scan run
//! twice records nothing twice), one whose file moved is updated, and an external
//! model of a scanned store whose file is gone is marked failed, not dropped. A
//! model the hive downloaded itself is never replaced by a find. Files without a
//! sha256 in their store's names are hashed after, in the same job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use model_provisioner::scan::{Store, default_stores, scan, store_of};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::jobs::Job;
use crate::ops::{blocking, err};
use crate::state::SharedState;

/// The stores to scan: the machine's, then each folder asked for (which must be
/// absolute and exist: else a 400 before any job).
fn stores_for(dirs: &[String]) -> Result<Vec<Store>, ApiError> {
    let mut stores = default_stores();
    for d in dirs {
        let p = PathBuf::from(d);
        if !p.is_absolute() {
            return Err(ApiError::bad_request(
                "invalid_path",
                format!("a scan folder must be absolute, got {d:?}"),
            ));
        }
        if !p.is_dir() {
            return Err(ApiError::bad_request(
                "invalid_path",
                format!("{d} is not a folder on this machine"),
            ));
        }
        let s = store_of(&p);
        if !stores.iter().any(|x| x.path == s.path) {
            stores.push(s);
        }
    }
    Ok(stores)
}

/// Checks the folders and runs the scan in a job whose result says what changed.
pub fn start_scan(
    state: &SharedState,
    operation: &str,
    dirs: &[String],
) -> Result<Arc<Job>, ApiError> {
    let stores = stores_for(dirs)?;
    let s = Arc::clone(state);
    Ok(state.jobs.spawn(operation, move |job| async move {
        run(&s, &job, stores).await.map_err(err)
    }))
}

/// Scans and records; what it did.
pub async fn run(state: &SharedState, job: &Job, stores: Vec<Store>) -> Result<Value, ApiError> {
    for s in &stores {
        job.narrate("scan", &format!("{} at {}", s.kind, s.path.display()));
    }
    let mut found = blocking(move || Ok(scan(&stores))).await?;
    // the hive's own files are its own, never adopted
    found.models.retain(|m| !m.path.starts_with(&state.home));
    let catalog = Arc::clone(&state.catalog);
    let scanned: Vec<PathBuf> = found.stores.iter().map(|s| s.path.clone()).collect();
    let models = found.models.clone();
    let (added, updated, unchanged, own, gone, to_hash) = blocking(move || {
        let (mut added, mut updated, mut unchanged, mut own, mut gone) =
            (vec![], vec![], 0, vec![], vec![]);
        let mut to_hash = Vec::new();
        let ids: std::collections::HashSet<String> = models.iter().map(|m| m.id.clone()).collect();
        // files the hive placed in a store itself (--hf-cache-layout) are its own
        let placed: std::collections::HashSet<PathBuf> = catalog
            .list()?
            .iter()
            .filter(|r| !r.artifact.external)
            .flat_map(|r| {
                r.artifact
                    .files()
                    .into_iter()
                    .map(Path::to_path_buf)
                    .collect::<Vec<_>>()
            })
            .filter_map(|p| fs_err::canonicalize(p).ok())
            .collect();
        for m in models {
            if fs_err::canonicalize(&m.path).is_ok_and(|p| placed.contains(&p)) {
                own.push(m.id);
                continue;
            }
            match catalog.get(&m.id)? {
                Some(r) if !r.artifact.external => own.push(m.id),
                Some(r)
                    if r.artifact.path == m.path
                        && r.artifact.status == ArtifactStatus::Available =>
                {
                    unchanged += 1;
                }
                Some(r) => {
                    let mut next = m.clone();
                    // what the user set stays
                    next.preset = r.artifact.preset.clone();
                    next.tags.clone_from(&r.artifact.tags);
                    next.notes.clone_from(&r.artifact.notes);
                    if next.sha256.is_none() {
                        to_hash.push(next.id.clone());
                    }
                    catalog.modify(&m.id, &mut |e| e.artifact = next.clone())?;
                    updated.push(m.id);
                }
                None => {
                    if m.sha256.is_none() {
                        to_hash.push(m.id.clone());
                    }
                    catalog.add(m.clone())?;
                    added.push(m.id);
                }
            }
        }
        // external models of these stores whose file is gone: marked, kept
        for r in catalog.list()? {
            let e = &r.artifact;
            if e.external
                && !ids.contains(&e.id)
                && scanned.iter().any(|s| e.path.starts_with(s))
                && !e.path.exists()
                && e.status == ArtifactStatus::Available
            {
                catalog.set_status(
                    &e.id,
                    ArtifactStatus::Failed {
                        error: format!("{} is gone from its store", e.path.display()),
                    },
                )?;
                gone.push(e.id.clone());
            }
        }
        Ok((added, updated, unchanged, own, gone, to_hash))
    })
    .await?;
    job.narrate(
        "scan",
        &format!(
            "{} added, {} updated, {unchanged} already known, {} gone; {} problem(s)",
            added.len(),
            updated.len(),
            gone.len(),
            found.problems.len()
        ),
    );
    // the sha256 of what the store's names do not give
    let mut hashed = 0;
    for (i, id) in to_hash.iter().enumerate() {
        if job.cancel.is_cancelled() {
            break;
        }
        job.step(i as u64, Some(to_hash.len() as u64), "files hashed", id);
        let catalog = Arc::clone(&state.catalog);
        let id = id.clone();
        let ok = blocking(move || {
            let Some(r) = catalog.get(&id)? else {
                return Ok(false);
            };
            let sha = model_catalog::sha256_file(&r.artifact.path).map_err(ApiError::internal)?;
            catalog.modify(&id, &mut |e| {
                e.artifact.sha256 = Some(sha.clone());
                e.artifact.hashed_at = Some(chrono::Utc::now());
            })?;
            Ok(true)
        })
        .await
        .unwrap_or(false);
        hashed += usize::from(ok);
    }

    Ok(json!({
        "stores": found.stores,
        "added": added,
        "updated": updated,
        "unchanged": unchanged,
        "the_hives_own": own,
        "gone": gone,
        "hashed": hashed,
        "problems": found.problems,
    }))
}
