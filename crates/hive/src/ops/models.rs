//! Model operations: list, get, delete, verify; resolve a reference and record it,
//! then fetch it in a job; what a fetch that stops leaves behind.

use std::sync::Arc;
use std::time::Duration;

use artifact_catalog::ArtifactStatus;
use axum::http::StatusCode;
use model_catalog::ModelEntry;
use provisioning::{
    ArtifactProvisioner as _, ProvisionContext, ProvisionError, ProvisionReporter, ProvisionRequest,
};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::jobs::Job;
use crate::ops::storage::{Eviction, plan_room};
use crate::ops::{blocking, err};
use crate::state::SharedState;

/// How long resolving a reference (a hub API call) may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a download's progress is written to the catalog.
const CATALOG_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// All models, as JSON.
pub async fn model_list(state: &SharedState) -> Result<Value, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    blocking(move || Ok(json!(catalog.list()?))).await
}

/// The most entries one page of `GET /v1/models` holds.
pub const MAX_PAGE: usize = 1000;

/// A page of the model list in OpenAI's list shape (`{"object": "list", "data":
/// [...]}`, so OpenAI's clients read it as their own), and how many models there are.
pub async fn model_list_page(
    state: &SharedState,
    offset: usize,
    limit: usize,
) -> Result<(bytes::Bytes, usize), ApiError> {
    let s = Arc::clone(state);
    let all = blocking(move || {
        s.models_cache.get_or_build(s.catalog.generation(), || {
            let list = s.catalog.list()?;
            let by_id: std::collections::HashMap<&str, &ModelEntry> = list
                .iter()
                .map(|r| (r.artifact.id.as_str(), &r.artifact))
                .collect();
            list.iter()
                .map(|r| {
                    let base = r
                        .artifact
                        .derived_from()
                        .and_then(|b| by_id.get(b).copied());
                    serde_json::to_vec(&entry_json(r, base))
                        .map(bytes::Bytes::from)
                        .map_err(ApiError::internal)
                })
                .collect()
        })
    })
    .await?;
    let page = all.iter().skip(offset).take(limit);
    const OPEN: &[u8] = br#"{"object":"list","data":["#;
    const CLOSE: &[u8] = b"]}";
    let mut body = Vec::with_capacity(
        OPEN.len() + CLOSE.len() + page.clone().map(|b| b.len() + 1).sum::<usize>(),
    );
    body.extend_from_slice(OPEN);
    for (i, entry) in page.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(entry);
    }
    body.extend_from_slice(CLOSE);
    Ok((bytes::Bytes::from(body), all.len()))
}

/// A catalog entry as the API shows it: its record, and its alias (the name the one
/// endpoint, Ollama's clients and the CLI know it by).
/// `base`: the model a derived one is made over, whose capabilities it has.
fn entry_json(r: &model_catalog::ModelRecord, base: Option<&ModelEntry>) -> Value {
    let mut v = json!(r);
    v["alias"] = json!(r.artifact.alias());
    // OpenAI's fields for a model, beside the catalog's
    v["object"] = json!("model");
    v["created"] = json!(r.added_at.timestamp());
    v["owned_by"] = json!(r.artifact.provider);
    v["capabilities"] = json!(crate::ops::derived::capabilities(&r.artifact, |_| base));
    v
}

/// The contexts a model's memory is shown at: some below its own, and its own.
const SHOWN_CONTEXTS: [u64; 4] = [2048, 4096, 8192, 32768];

/// What a model needs in memory ([`crate::engines::memory`], the one estimate): at
/// the context its worker gets, at some others, and each device's budget beside.
fn memory_json(state: &SharedState, entry: &model_catalog::ModelEntry) -> Value {
    use crate::engines::memory::{self, Device};
    let trained = entry.gguf.as_ref().and_then(|g| g.context_length);
    let mut contexts: Vec<u64> = SHOWN_CONTEXTS
        .into_iter()
        .filter(|&c| trained.is_none_or(|t| c < t))
        .collect();
    contexts.extend(trained);
    let margins = crate::ops::admission::margins(state);
    let gpus: Vec<Value> = crate::capabilities::gpus()
        .iter()
        .filter_map(|g| {
            let index = u32::try_from(g["index"].as_u64()?).ok()?;
            let budget = memory::budget(Device::Gpu(index), margins)?;
            Some(json!({"index": index, "budget_bytes": budget.bytes}))
        })
        .collect();
    json!({
        "worker": memory::of_model(entry),
        "by_context": contexts
            .iter()
            .map(|&c| memory::footprint(entry.gguf.as_ref(), entry.size, c))
            .collect::<Vec<_>>(),
        "ram_budget_bytes": memory::budget(Device::Ram, margins).map(|b| b.bytes),
        "gpus": gpus,
    })
}

/// One model, as JSON, with what it needs in memory; 404 when absent.
pub async fn model_get(state: &SharedState, id: &str) -> Result<Value, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    let id = id.to_owned();
    let s = Arc::clone(state);
    blocking(move || match catalog.get(&id)? {
        Some(r) => {
            let base = match r.artifact.derived_from() {
                Some(b) => catalog.get(b)?.map(|b| b.artifact),
                None => None,
            };
            let mut v = entry_json(&r, base.as_ref());
            v["memory"] = memory_json(&s, &r.artifact);
            Ok(v)
        }
        None => Err(ApiError::not_found(format!(
            "model {id:?} is not in the catalog"
        ))),
    })
    .await
}

/// Removes a model's entry and files.
pub async fn model_delete(state: &SharedState, id: &str) -> Result<Value, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    let state2 = Arc::clone(state);
    let id = id.to_owned();
    blocking(move || {
        let Some(record) = catalog.get(&id)? else {
            return Err(ApiError::not_found(format!(
                "model {id:?} is not in the catalog"
            )));
        };
        if record.artifact.status == ArtifactStatus::Downloading {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("model {id:?} is downloading: cancel its job first"),
            ));
        }
        let models: Vec<ModelEntry> = catalog.list()?.into_iter().map(|r| r.artifact).collect();
        let over = crate::ops::derived::made_over(&models, &id);
        if !over.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "in_use",
                format!(
                    "models are made over {id:?}'s file: {}; delete them first",
                    over.join(", ")
                ),
            ));
        }
        let users = state2.workers.using_model(&id);
        if !users.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "in_use",
                format!(
                    "model {id:?} is served by {}: stop them first",
                    users.join(", ")
                ),
            ));
        }
        catalog.remove(&id)?;
        crate::workers::kv_cache::forget(&state2.home, &id);
        if record.artifact.external {
            // another tool's file: forgotten, never touched
            remove_model_dir(&catalog, &id)?;
            return Ok(json!({"id": id, "removed": true, "forgotten": true, "bytes_freed": 0}));
        }
        // the model's files, and any partial download of them (a cancelled pull)
        let downloads = state2.home.join("downloads");
        let mut freed = 0;
        if let Some(cache) = hub_cache_of(&record.artifact) {
            // placed in the hub cache (--hf-cache-layout): its links, and their blobs
            for file in record.artifact.files() {
                freed += model_provisioner::hf_cache::remove(&cache, file)
                    .map_err(ApiError::internal)?;
            }
        }
        for file in record.artifact.every_file() {
            let (part, resume) = download::partial_paths(&downloads, file);
            for p in [file, part.as_path(), resume.as_path()] {
                if let Ok(m) = fs_err::metadata(p)
                    && p.starts_with(&state2.home)
                {
                    freed += m.len();
                    fs_err::remove_file(p).map_err(ApiError::internal)?;
                }
            }
        }
        remove_model_dir(&catalog, &id)?;
        Ok(json!({"id": id, "removed": true, "bytes_freed": freed}))
    })
    .await
}

/// The hub cache a model of the hive's own was placed in (`--hf-cache-layout`).
fn hub_cache_of(entry: &ModelEntry) -> Option<std::path::PathBuf> {
    if entry.external {
        return None;
    }
    model_provisioner::hf_cache::hub_cache_dir().filter(|c| entry.path.starts_with(c))
}

/// Removes a model's folder under `models/` (never anything outside it).
fn remove_model_dir(catalog: &model_catalog::ModelCatalog, id: &str) -> Result<(), ApiError> {
    let dir = catalog.model_dir(id)?;
    if dir.starts_with(catalog.models_dir()) && dir.exists() {
        fs_err::remove_dir_all(&dir).map_err(ApiError::internal)?;
    }
    Ok(())
}

/// Runs the catalog's integrity check and records what it found in the metrics.
pub async fn verify_models(state: &SharedState, rehash: bool) -> Result<Value, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    let report = blocking(move || Ok(catalog.verify(rehash)?)).await?;
    state.metrics.integrity_checked(report.problems.len());
    if !report.problems.is_empty() {
        for p in &report.problems {
            tracing::warn!(id = %p.id, "integrity check: {}", p.reason);
        }
    }
    Ok(json!(report))
}

/// Checks the catalog at start and every `every` (sizes), and every `rehash_every`
/// (sha256), until shutdown.
pub async fn integrity_schedule(
    state: SharedState,
    every: Option<Duration>,
    rehash_every: Option<Duration>,
) {
    let shutdown = state.shutdown.clone();
    let start = tokio::time::Instant::now();
    let mut next_check = Some(start);
    let mut next_hash = rehash_every.map(|d| start + d);
    loop {
        let due = [next_check, next_hash].into_iter().flatten().min();
        let Some(due) = due else { return };
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = shutdown.stopping() => return,
        }
        let now = tokio::time::Instant::now();
        let rehash = next_hash.is_some_and(|t| t <= now);
        if let Err(e) = verify_models(&state, rehash).await {
            tracing::error!("integrity check failed: {}", e.parts().1);
        }
        if rehash {
            next_hash = rehash_every.map(|d| now + d);
        }
        if next_check.is_some_and(|t| t <= now) || rehash {
            next_check = every.map(|d| now + d);
        }
    }
}

/// Resolves the reference now (a bad one is a 4xx), records the model as
/// downloading, and fetches it in a job.
pub(crate) async fn start_provision(
    state: &SharedState,
    operation: &str,
    request: ProvisionRequest,
) -> Result<Arc<Job>, ApiError> {
    crate::ops::check_sha256(request.sha256.as_deref())?;
    match resolve_and_record(state, request).await? {
        Recorded::Available(record) => {
            let record = json!(record);
            Ok(state.jobs.spawn(operation, move |job| async move {
                job.narrate("check", "the model is already in the catalog");
                Ok(record)
            }))
        }
        Recorded::ToFetch {
            plan,
            new_entry,
            evicted,
        } => {
            let s = Arc::clone(state);
            Ok(state.jobs.spawn(operation, move |job| async move {
                narrate_evictions(&job, &evicted);
                fetch_model(&s, &job, *plan, new_entry).await
            }))
        }
    }
}

/// What a resolved reference is in the catalog.
#[derive(Debug)]
pub enum Recorded {
    /// Already there and available.
    Available(Box<artifact_catalog::ArtifactMetadata<ModelEntry>>),
    /// Recorded as downloading: fetch it.
    ToFetch {
        /// The entry as recorded.
        plan: Box<ModelEntry>,
        /// Whether this call added it (it was not in the catalog before).
        new_entry: bool,
        /// The models removed from disk to make room for it.
        evicted: Vec<Eviction>,
    },
}

/// Resolves a reference (a bad one is a 4xx) and records the model as downloading,
/// unless it is already available.
pub async fn resolve_and_record(
    state: &SharedState,
    request: ProvisionRequest,
) -> Result<Recorded, ApiError> {
    let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, state.provisioner.resolve(&request))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("resolving {} took too long", request.reference),
            )
        })??;
    // from the room check to the record: two pulls do not count the same space
    let _room = state.storage_lock.lock().await;
    let catalog = Arc::clone(&state.catalog);
    let id = resolved.plan.id.clone();
    let before = blocking(move || Ok(catalog.get(&id)?)).await?;
    let mut resolved = resolved;
    match before {
        Some(r) if r.artifact.status == ArtifactStatus::Available => {
            return Ok(Recorded::Available(Box::new(r)));
        }
        // a pull again of one that did not finish keeps how it is to be run, and
        // leaves out the projector its preset runs without
        Some(r) => {
            if r.artifact.preset.no_mmproj {
                resolved.plan.projector = None;
            }
            resolved.plan.preset = r.artifact.preset;
        }
        None => {}
    }
    let evicted = make_room(state, &resolved.plan).await?;
    let catalog = Arc::clone(&state.catalog);
    let plan = resolved.plan.clone();
    let existing = blocking(move || {
        let existing = catalog.get(&plan.id)?;
        match &existing {
            Some(r) if r.artifact.status == ArtifactStatus::Available => {}
            Some(_) => {
                catalog.update(plan)?;
            }
            None => {
                catalog.add(plan)?;
            }
        }
        Ok(existing)
    })
    .await?;
    match existing {
        Some(r) if r.artifact.status == ArtifactStatus::Available => {
            Ok(Recorded::Available(Box::new(r)))
        }
        other => Ok(Recorded::ToFetch {
            plan: Box::new(resolved.plan),
            new_entry: other.is_none(),
            evicted,
        }),
    }
}

/// Makes room for a model about to be recorded and fetched: the evictions
/// [`plan_room`] finds, done; a model that still cannot fit is a 507 with the
/// numbers, and nothing is removed. The caller holds `state.storage_lock`.
async fn make_room(state: &SharedState, plan: &ModelEntry) -> Result<Vec<Eviction>, ApiError> {
    let s = Arc::clone(state);
    let p = plan.clone();
    let room = blocking(move || plan_room(&s, &p)).await?;
    if let Some(reason) = room.reason {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            reason,
        ));
    }
    for e in &room.evict {
        model_delete(state, &e.id).await?;
        state
            .metrics
            .disk_evictions
            .get_or_create(&crate::metrics::ModelLabel {
                model: e.id.clone(),
            })
            .inc();
        tracing::info!(model = %e.id, bytes = e.bytes, "evicted to make room for {}", plan.id);
    }
    Ok(room.evict)
}

/// Tells a pull's job which models were removed to make room for it.
pub(crate) fn narrate_evictions(job: &Job, evicted: &[Eviction]) {
    for e in evicted {
        job.narrate(
            "evict",
            &format!(
                "removed {} ({}, last used {}) to make room",
                e.id,
                download::human_bytes(e.bytes),
                e.last_used.format("%Y-%m-%d %H:%M")
            ),
        );
    }
}

/// A job that fetches a model recorded as downloading, and records the outcome.
/// `new_entry`: the entry was recorded for this fetch (and goes again if it fails
/// before anything is on disk).
pub fn fetch_job(
    state: &SharedState,
    operation: &str,
    plan: ModelEntry,
    new_entry: bool,
) -> Arc<Job> {
    let s = Arc::clone(state);
    state.jobs.spawn(operation, move |job| async move {
        fetch_model(&s, &job, plan, new_entry).await
    })
}

/// Fetches a model recorded as downloading, reporting on `job`, and records the
/// outcome; the result is the catalog record.
pub async fn fetch_model(
    s: &SharedState,
    job: &Arc<Job>,
    plan: ModelEntry,
    new_entry: bool,
) -> Result<Value, (&'static str, String)> {
    {
        let id = plan.id.clone();
        let permit = match Arc::clone(&s.download_slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                job.narrate("queue", "waiting for a download slot");
                tokio::select! {
                    p = Arc::clone(&s.download_slots).acquire_owned() => p.map_err(|e| ("internal", e.to_string()))?,
                    () = job.cancel.cancelled() => return Err(record_failure(s, &id, new_entry, "cancelled", "cancelled before it started".into()).await),
                }
            }
        };
        job.narrate("download", &format!("fetching {id}"));
        s.metrics.active_downloads.inc();
        let reporter = Arc::new(JobReporter {
            job: Arc::clone(job),
            state: Arc::clone(s),
            id: id.clone(),
            last: std::sync::Mutex::new((None, 0)),
        });
        let ctx = ProvisionContext {
            reporter,
            cancel: job.cancel.clone(),
        };
        // the plan is the catalog's record of what was resolved; its provider is the
        // vendor that resolved it
        let resolved = provisioning::Resolved {
            id: id.clone(),
            vendor: plan.provider.clone(),
            plan,
        };
        let outcome = s.provisioner.fetch(resolved, &ctx).await;
        drop(permit);
        s.metrics.active_downloads.dec();
        s.metrics.download_finished(match &outcome {
            Ok(_) => "completed",
            Err(ProvisionError::Cancelled) => "cancelled",
            Err(_) => "failed",
        });
        match outcome {
            Ok(mut entry) => {
                // every vendor hashes what it fetched or imported
                if entry.sha256.is_some() {
                    entry.hashed_at = Some(artifact_catalog::now());
                }
                let catalog = Arc::clone(&s.catalog);
                let record = blocking(move || Ok(json!(catalog.update(entry)?)))
                    .await
                    .map_err(err)?;
                job.narrate("done", &format!("{id} is available"));
                Ok(record)
            }
            Err(e) => Err(record_failure(s, &id, new_entry, e.code(), e.to_string()).await),
        }
    }
}

/// Records a fetch that did not finish, by what it left on disk:
/// - the daemon is shutting down: still `Downloading`, resumed at the next start;
/// - a partial that can be resumed: `Paused` when cancelled, `Failed` otherwise, and
///   the message says how much is kept;
/// - nothing on disk, for an entry this pull created: the entry and its folder are
///   removed, so a bad reference changes nothing;
/// - else `Failed`.
async fn record_failure(
    s: &SharedState,
    id: &str,
    new_entry: bool,
    code: &'static str,
    error: String,
) -> (&'static str, String) {
    let cancelled = code == "cancelled";
    if cancelled && s.shutdown.is_stopping() {
        return (
            code,
            "the hive is shutting down: the download resumes at its next start".into(),
        );
    }
    let s2 = Arc::clone(s);
    let id2 = id.to_owned();
    let recorded = blocking(move || {
        let catalog = &s2.catalog;
        let Some(record) = catalog.get(&id2)? else {
            return Ok(error);
        };
        let entry = &record.artifact;
        let downloads = s2.home.join("downloads");
        let kept: Option<u64> = entry
            .files()
            .iter()
            .filter_map(|f| download::resumable_bytes(&downloads, f))
            .reduce(|a, b| a + b);
        let complete_files = entry.files().iter().filter(|f| f.is_file()).count();
        let total = Some(entry.size).filter(|&n| n > 0);
        let message = match (kept, cancelled) {
            (Some(bytes), _) => {
                let of =
                    total.map_or_else(String::new, |t| format!(" of {}", download::human_bytes(t)));
                let head = if cancelled {
                    "cancelled"
                } else {
                    error.as_str()
                };
                format!(
                    "{head}; {}{of} kept: pull again to resume",
                    download::human_bytes(bytes)
                )
            }
            (None, true) => {
                "cancelled; nothing was kept (this server cannot resume a download)".into()
            }
            (None, false) => error,
        };
        if kept.is_none() && complete_files == 0 && new_entry {
            catalog.remove(&id2)?;
            remove_model_dir(catalog, &id2)?;
        } else if let (Some(bytes), true) = (kept, cancelled) {
            catalog.modify(&id2, &mut |e| {
                artifact_catalog::Artifact::set_status(&mut e.artifact, ArtifactStatus::Paused);
                e.artifact.progress = Some(model_catalog::DownloadProgress {
                    bytes_done: bytes,
                    bytes_total: total,
                });
            })?;
        } else {
            catalog.set_status(
                &id2,
                ArtifactStatus::Failed {
                    error: message.clone(),
                },
            )?;
        }
        Ok(message)
    })
    .await;
    match recorded {
        Ok(message) => (code, message),
        Err(e) => (
            code,
            format!("{}; and recording it failed: {}", id, e.parts().1),
        ),
    }
}

/// Every key of a model's GGUF header, read from its file now, with the GGUF version
/// and the tensor count; `{"error"}` when the file cannot be read.
pub async fn header_of(model: &Value) -> Value {
    let Some(path) = model["path"].as_str().map(std::path::PathBuf::from) else {
        return json!({"error": "the model has no file"});
    };
    tokio::task::spawn_blocking(move || {
        let file = match fs_err::File::open(&path) {
            Ok(f) => f,
            Err(e) => return json!({"error": e.to_string()}),
        };
        let options = gguf::ReadOptions { max_array_len: 16 };
        match gguf::read(file, &options) {
            Ok(g) => json!({
                "gguf_version": g.version,
                "tensor_count": g.tensors.len(),
                // in the file's order
                "metadata": g.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
            }),
            Err(e) => json!({"error": e.to_string()}),
        }
    })
    .await
    .unwrap_or_else(|e| json!({"error": e.to_string()}))
}

/// Checks a push (the model is in the catalog and available, the target a tag) and
/// runs it in a job whose result is where the model now is.
pub(crate) async fn start_push(
    state: &SharedState,
    operation: &str,
    id: &str,
    target: String,
) -> Result<Arc<Job>, ApiError> {
    let r = model_provisioner::oci::OciReference::parse(&target)?;
    if r.digest.is_some() {
        return Err(ApiError::bad_request(
            "invalid_reference",
            format!("a push names a tag (oci://HOST/REPO:TAG), not a digest: {target}"),
        ));
    }
    let catalog = Arc::clone(&state.catalog);
    let key = id.to_owned();
    let entry: ModelEntry = blocking(move || match catalog.get(&key)? {
        Some(r) => Ok(r.artifact),
        None => Err(ApiError::not_found(format!(
            "model {key:?} is not in the catalog"
        ))),
    })
    .await?;
    if entry.status != ArtifactStatus::Available {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_available",
            format!(
                "{id} is {}: only an available model is pushed",
                entry.status.name()
            ),
        ));
    }
    let s = Arc::clone(state);
    Ok(state.jobs.spawn(operation, move |job| async move {
        job.narrate("push", &format!("{} to {target}", entry.id));
        let reporter = Arc::new(crate::ops::JobNarrator(Arc::clone(&job)));
        let out = model_provisioner::oci::push(
            s.http.clone(),
            &s.oci,
            &entry,
            &target,
            &s.home.join("downloads").join("uploads"),
            reporter,
            job.cancel.clone(),
        )
        .await
        .map_err(|e| err(ApiError::from(e)))?;
        Ok(json!(out))
    }))
}

/// Feeds a download's reports to its job, and now and then to the catalog.
struct JobReporter {
    job: Arc<Job>,
    state: SharedState,
    id: String,
    /// When the catalog was last updated, and the bytes seen so far.
    last: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl ProvisionReporter for JobReporter {
    fn narrate(&self, action: &str, message: &str) {
        self.job.narrate(action, message);
    }

    fn progress(
        &self,
        bytes_done: u64,
        bytes_total: Option<u64>,
        bytes_per_sec: f64,
        eta_secs: Option<f64>,
    ) {
        self.job
            .progress(bytes_done, bytes_total, bytes_per_sec, eta_secs);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bytes_done > last.1 {
            self.state
                .metrics
                .bytes_downloaded
                .inc_by(bytes_done - last.1);
            last.1 = bytes_done;
        }
        if last.0.is_some_and(|t| t.elapsed() < CATALOG_PROGRESS_EVERY) {
            return;
        }
        last.0 = Some(std::time::Instant::now());
        let (state, id) = (Arc::clone(&self.state), self.id.clone());
        tokio::task::spawn_blocking(move || {
            let _ = state.catalog.modify(&id, &mut |e| {
                e.artifact.progress = Some(model_catalog::DownloadProgress {
                    bytes_done,
                    bytes_total,
                });
            });
        });
    }
}
