//! Where the bytes are (`GET /v1/storage`, `rbee models du`), and the models folder's
//! limits: before a pull's first byte, the room it needs is made by evicting least
//! recently used models (never a pinned, in-use or external one), or the pull is
//! refused with the numbers (`--models-max-bytes`, `--min-free-disk`, the free disk).

use std::path::Path;
use std::sync::Arc;

use artifact_catalog::{ArtifactMetadata, ArtifactStatus};
use download::human_bytes;
use model_catalog::ModelEntry;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::ops::blocking;
use crate::state::SharedState;

/// The bytes of a model's files on disk, and of their partial downloads (as
/// allocated: the engine reserves a partial's full size when it starts).
fn on_disk(entry: &ModelEntry, downloads: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut partial = 0;
    for f in entry.every_file() {
        if let Ok(m) = fs_err::metadata(f) {
            files += m.len();
        } else {
            let (part, state) = download::partial_paths(downloads, f);
            for p in [part, state] {
                partial += fs_err::metadata(p).map_or(0, |m| m.len());
            }
        }
    }
    (files, partial)
}

/// What a model counts against the quota: its whole size once it is or is becoming
/// available (a download reserves what it will take), else what it left on disk.
fn charged(r: &ArtifactMetadata<ModelEntry>, downloads: &Path) -> u64 {
    match r.artifact.status {
        ArtifactStatus::Available | ArtifactStatus::Downloading | ArtifactStatus::Paused => {
            r.artifact.disk_bytes()
        }
        ArtifactStatus::Failed { .. } => {
            let (files, partial) = on_disk(&r.artifact, downloads);
            files + partial
        }
    }
}

/// A model a pull removes, or would remove, to make room.
#[derive(Debug, Clone, Serialize)]
pub struct Eviction {
    /// Its id.
    pub id: String,
    /// The bytes it frees.
    pub bytes: u64,
    /// When it was last used (else added).
    pub last_used: chrono::DateTime<chrono::Utc>,
}

/// How a model fits on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Room {
    /// The model's size.
    pub size: u64,
    /// What it still needs on disk (less what is there of it already).
    pub needed_bytes: u64,
    /// Free on the models' filesystem now.
    pub free_bytes: u64,
    /// `--min-free-disk`.
    pub min_free_bytes: Option<u64>,
    /// `--models-max-bytes`.
    pub quota_bytes: Option<u64>,
    /// What the hive's own models take against the quota now, this one not counted.
    pub used_bytes: u64,
    /// Least recently used first: what the pull removes before its first byte.
    pub evict: Vec<Eviction>,
    /// Whether it fits, after those evictions.
    pub fits: bool,
    /// Why not, with the numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Works out the room a model needs (nothing changes): which models to evict, and
/// whether it then fits. Blocking.
pub fn plan_room(state: &SharedState, plan: &ModelEntry) -> Result<Room, ApiError> {
    let downloads = state.home.join("downloads");
    let records = state.catalog.list()?;
    let (have, partial) = on_disk(plan, &downloads);
    let size = plan.disk_bytes();
    let needed = size.saturating_sub(have + partial);
    let mut free = download::available_space(state.catalog.models_dir())
        .or_else(|_| download::available_space(&state.home))
        .map_err(ApiError::internal)?;
    let mut used: u64 = records
        .iter()
        .filter(|r| !r.artifact.external && r.artifact.id != plan.id)
        .map(|r| charged(r, &downloads))
        .sum();
    // as they are now, for the answer; `free` and `used` then follow the evictions
    let (free_now, used_now) = (free, used);
    let (quota, min_free) = (state.config.models_max_bytes, state.config.min_free_disk);
    let over = |used: u64, free: u64| {
        quota.is_some_and(|q| used + size > q) || free < needed + min_free.unwrap_or(0)
    };
    let mut evict = Vec::new();
    // a model with models made over its file goes with them or not at all
    let bases: std::collections::HashSet<&str> = records
        .iter()
        .filter_map(|r| r.artifact.derived_from())
        .collect();
    if size > 0 && over(used, free) {
        let mut candidates: Vec<&ArtifactMetadata<ModelEntry>> = records
            .iter()
            .filter(|r| {
                let e = &r.artifact;
                e.id != plan.id
                    && e.status == ArtifactStatus::Available
                    && !e.external
                    && !e.preset.pinned
                    && !bases.contains(e.id.as_str())
                    && state.workers.using_model(&e.id).is_empty()
            })
            .collect();
        candidates.sort_by_key(|r| (r.last_accessed.unwrap_or(r.added_at), r.artifact.id.clone()));
        for r in candidates {
            if !over(used, free) {
                break;
            }
            let (files, _) = on_disk(&r.artifact, &downloads);
            used = used.saturating_sub(r.artifact.disk_bytes());
            free += files;
            evict.push(Eviction {
                id: r.artifact.id.clone(),
                bytes: files,
                last_used: r.last_accessed.unwrap_or(r.added_at),
            });
        }
    }
    let fits = size == 0 || !over(used, free);
    let reason = (!fits).then(|| {
        let kept = records
            .iter()
            .filter(|r| !r.artifact.external && r.artifact.id != plan.id)
            .filter(|r| !evict.iter().any(|e| e.id == r.artifact.id))
            .count();
        let evicted = if evict.is_empty() {
            String::new()
        } else {
            format!(" after evicting {} model(s)", evict.len())
        };
        if quota.is_some_and(|q| used + size > q) {
            format!(
                "{} ({}) does not fit the models quota (--models-max-bytes {}): {} is held{evicted} by {kept} model(s) that are pinned, in use or not yet available",
                plan.id,
                human_bytes(size),
                human_bytes(quota.unwrap_or(0)),
                human_bytes(used),
            )
        } else {
            format!(
                "{} needs {} more on disk and {} is free{evicted}{}",
                plan.id,
                human_bytes(needed),
                human_bytes(free),
                min_free.map_or_else(String::new, |m| format!(
                    ", of which {} is kept free (--min-free-disk)",
                    human_bytes(m)
                )),
            )
        }
    });
    Ok(Room {
        size,
        needed_bytes: needed,
        free_bytes: free_now,
        min_free_bytes: min_free,
        quota_bytes: quota,
        used_bytes: used_now,
        evict,
        fits,
        reason,
    })
}

/// What to say at start when the pinned models alone pass `--models-max-bytes`:
/// every pull will then be refused until one is unpinned or the quota raised.
pub fn pinned_over_quota(state: &SharedState) -> Result<Option<String>, ApiError> {
    let Some(quota) = state.config.models_max_bytes else {
        return Ok(None);
    };
    let pinned: Vec<(String, u64)> = state
        .catalog
        .list()?
        .into_iter()
        .filter(|r| !r.artifact.external && r.artifact.preset.pinned)
        .map(|r| (r.artifact.id.clone(), r.artifact.disk_bytes()))
        .collect();
    let total: u64 = pinned.iter().map(|p| p.1).sum();
    Ok((total > quota).then(|| {
        format!(
            "the {} pinned model(s) take {}, more than --models-max-bytes {}: every pull will be refused until one is unpinned (rbee models set ID --unpin) or the quota raised",
            pinned.len(),
            human_bytes(total),
            human_bytes(quota)
        )
    }))
}

/// The bytes of a file, or of a folder's files, links not followed.
pub(crate) fn bytes_under(path: &Path) -> u64 {
    let Ok(m) = fs_err::symlink_metadata(path) else {
        return 0;
    };
    if m.is_file() {
        return m.len();
    }
    if !m.is_dir() {
        return 0;
    }
    fs_err::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| bytes_under(&e.path()))
            .sum()
    })
}

/// Where the bytes are: per model, per source (the hive's own, or external), in
/// partial downloads, push sessions and worker logs, and the space free.
pub async fn usage(state: &SharedState) -> Result<Value, ApiError> {
    let s = Arc::clone(state);
    blocking(move || {
        let downloads = s.home.join("downloads");
        let records = s.catalog.list()?;
        let mut models = Vec::with_capacity(records.len());
        let (mut own, mut external, mut in_partials) = (0u64, 0u64, 0u64);
        for r in &records {
            let (files, partial) = on_disk(&r.artifact, &downloads);
            if r.artifact.external {
                external += files;
            } else {
                own += files;
            }
            in_partials += partial;
            models.push(json!({
                "id": r.artifact.id,
                "bytes": files,
                "partial_bytes": partial,
                "external": r.artifact.external,
                "status": r.artifact.status.name(),
                "pinned": r.artifact.preset.pinned,
                "last_used": r.last_accessed.unwrap_or(r.added_at),
            }));
        }
        let all_partials: u64 = fs_err::read_dir(&downloads)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        let free = download::available_space(s.catalog.models_dir())
            .or_else(|_| download::available_space(&s.home))
            .ok();
        Ok(json!({
            "home": s.home,
            "models": models,
            "totals": {
                "own_bytes": own,
                "external_bytes": external,
                "partial_bytes": all_partials,
                "orphan_partial_bytes": all_partials.saturating_sub(in_partials),
                "upload_session_bytes": bytes_under(&downloads.join("uploads")),
                "worker_log_bytes": bytes_under(&s.home.join("logs").join("workers")),
                "worker_binary_bytes": bytes_under(&s.home.join("workers")),
            },
            "free_bytes": free,
            "quota_bytes": s.config.models_max_bytes,
            "min_free_bytes": s.config.min_free_disk,
        }))
    })
    .await
}

/// Records when each model was last used, for the eviction order: its catalog entry
/// is touched when a worker for it becomes ready and when one ends, until shutdown.
pub async fn record_use(state: SharedState) {
    let mut events = state.workers.events.subscribe();
    let shutdown = state.shutdown.clone();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = shutdown.stopping() => return,
        };
        let event = match event {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if !matches!(event.event, "ready" | "stopped" | "exited" | "failed") {
            continue;
        }
        let Some(worker) = state.workers.get(&event.worker_id) else {
            continue;
        };
        let s = Arc::clone(&state);
        let touched = blocking(move || {
            if s.catalog.get(&worker.model_ref)?.is_some() {
                s.catalog.touch(&worker.model_ref)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = touched {
            tracing::debug!("cannot record a model's use: {}", e.parts().1);
        }
    }
}
