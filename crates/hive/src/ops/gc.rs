//! Cleanup (`POST /v1/hive/gc`, `rbee hive gc`, and once at every start): partial
//! downloads no catalog entry can resume, left-over install archives and staging
//! folders of installs that died, and the oldest logs of stopped workers beyond
//! `--worker-logs-max-bytes`. A partial that a model in the catalog can resume, one
//! written to within `--gc-grace-secs`, and the log of a live worker are never
//! touched; nothing outside the hive's home is.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::ops::blocking;
use crate::state::SharedState;

/// One thing cleanup removed, or would remove.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// The file or folder.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: u64,
    /// Why it goes.
    pub why: &'static str,
}

/// Runs cleanup; with `dry_run`, only says what it would remove.
pub async fn gc(state: &SharedState, dry_run: bool) -> Result<Value, ApiError> {
    let s = Arc::clone(state);
    let removed = blocking(move || collect(&s)).await?;
    let mut done = Vec::with_capacity(removed.len());
    let mut failed = Vec::new();
    for r in removed {
        if !dry_run {
            let gone = if r.path.is_dir() {
                fs_err::remove_dir_all(&r.path)
            } else {
                fs_err::remove_file(&r.path)
            };
            if let Err(e) = gone {
                failed.push(json!({"path": r.path, "error": e.to_string()}));
                continue;
            }
            tracing::info!(path = %r.path.display(), bytes = r.bytes, "cleanup: {}", r.why);
        }
        done.push(r);
    }
    let freed: u64 = done.iter().map(|r| r.bytes).sum();
    Ok(json!({
        "dry_run": dry_run,
        "removed": done,
        "bytes_freed": freed,
        "failed": failed,
    }))
}

/// What cleanup would remove now.
fn collect(state: &SharedState) -> Result<Vec<Removed>, ApiError> {
    let grace = Duration::from_secs(state.config.gc_grace_secs);
    let now = SystemTime::now();
    let old = |p: &Path| {
        fs_err::symlink_metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age >= grace))
    };
    let downloads = state.home.join("downloads");
    let mut out = Vec::new();

    // partials and their states that no model in the catalog can resume
    let mut owned: HashSet<PathBuf> = HashSet::new();
    for r in state.catalog.list()? {
        for f in r.artifact.every_file() {
            let (part, resume) = download::partial_paths(&downloads, f);
            owned.insert(resume.with_extension("state.tmp"));
            owned.insert(part);
            owned.insert(resume);
        }
    }
    for path in files_in(&downloads) {
        if owned.contains(&path) || !old(&path) {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let why = match name.as_deref() {
            Some(n) if n.ends_with(".part") || n.ends_with(".state") || n.ends_with(".tmp") => {
                "a partial download no model in the catalog can resume"
            }
            _ => "a left-over file of an install or download that did not finish",
        };
        out.push(Removed {
            bytes: size_of(&path),
            path,
            why,
        });
    }

    // staging folders of installs that died (none is running)
    let installing = state
        .jobs
        .list()
        .iter()
        .any(|j| j.operation == "worker_install" && !j.state.is_finished());
    if !installing && let Ok(dirs) = fs_err::read_dir(state.home.join("workers")) {
        for d in dirs.filter_map(Result::ok) {
            let staging = d.path().join(worker_provisioner::STAGING_DIR);
            if staging.is_dir() {
                out.push(Removed {
                    bytes: size_of(&staging),
                    path: staging,
                    why: "the staging folder of an install that did not finish",
                });
            }
        }
    }

    // the oldest logs of stopped workers, beyond the limit
    let live: HashSet<PathBuf> = state
        .workers
        .list()
        .into_iter()
        .filter(|w| w.state.is_live())
        .map(|w| w.log_path)
        .collect();
    let logs_dir = state.home.join("logs").join("workers");
    let mut logs: Vec<(SystemTime, PathBuf, u64)> = files_in(&logs_dir)
        .into_iter()
        .filter_map(|p| {
            let m = fs_err::symlink_metadata(&p).ok()?;
            Some((m.modified().ok()?, p, m.len()))
        })
        .collect();
    let mut total: u64 = logs.iter().map(|l| l.2).sum();
    logs.sort();
    for (_, path, bytes) in logs {
        if total <= state.config.worker_logs_max_bytes {
            break;
        }
        if live.contains(&path) {
            continue;
        }
        total -= bytes;
        out.push(Removed {
            path,
            bytes,
            why: "a stopped worker's log, the oldest beyond --worker-logs-max-bytes",
        });
    }
    Ok(out)
}

/// The plain files right inside a folder (links and folders left out).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    fs_err::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// A file's size, or a folder's files' (links not followed).
fn size_of(path: &Path) -> u64 {
    crate::ops::storage::bytes_under(path)
}
