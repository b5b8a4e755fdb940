//! Worker operations: spawn (choosing the binary and checking the request), stop,
//! load and unload. Each is checked before its job starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use artifact_catalog::ArtifactStatus;
use model_catalog::ModelEntry;
use provisioning::{ArtifactProvisioner as _, ProvisionRequest};
use serde_json::{Value, json};
use worker_catalog::{Engine, Platform, WorkerBinary, WorkerType};

use crate::engines::memory;
use crate::engines::{self, SpawnPlan};
use crate::error::ApiError;
use crate::jobs::Job;
use crate::ops::admission;
use crate::ops::binaries::conflict;
use crate::ops::blocking;
use crate::state::SharedState;
use crate::workers::new_id;

/// The binary a spawn runs: of the engine asked for, else llama.cpp when one is
/// installed for the type, else our own. One whose file changed since it was
/// recorded is refused.
async fn choose_binary(
    state: &SharedState,
    engine: Option<Engine>,
    wtype: WorkerType,
) -> Result<WorkerBinary, ApiError> {
    let workers = Arc::clone(&state.worker_catalog);
    let binary = blocking(move || {
        let platform = Platform::current();
        let found = match engine {
            Some(e) => workers.find(e, wtype, platform)?,
            None => match workers.find(Engine::LlamaCpp, wtype, platform)? {
                Some(b) => Some(b),
                None => workers.find(Engine::Rbee, wtype, platform)?,
            },
        };
        found.ok_or_else(|| {
            let which = engine.map_or_else(String::new, |e| format!("{e} "));
            ApiError::not_found(format!(
                "no {which}{wtype} worker binary is installed for {platform}: add one this machine has (rbee worker-binaries add /path/to/llama-server, or /path/to/llm-worker-rbee), or build one, which takes minutes (rbee worker-binaries install {wtype})"
            ))
        })
    })
    .await?;
    // its size and modification time, as recorded: cheap enough for every spawn
    let checked = binary.clone();
    if let Some(change) = blocking(move || Ok(checked.file_changed())).await? {
        let again = if binary.is_registered() {
            format!("rbee worker-binaries add {}", binary.path.display())
        } else {
            format!("rbee worker-binaries install {wtype}")
        };
        return Err(conflict(
            "binary_changed",
            format!("{change}: it is not run; {again} records it again"),
        ));
    }
    Ok(binary)
}

/// Refuses extra arguments the engine does not allow ([`engines::check_args`]).
pub(crate) fn check_engine_args(engine: Engine, args: &[String]) -> Result<(), ApiError> {
    engines::check_args(engine, args)
        .map_err(|message| ApiError::bad_request("invalid_engine_args", message))
}

/// What a spawn request asks for.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// The catalog id of an available model.
    pub model: String,
    /// `cpu`, `cuda`, `metal`, `vulkan` or `rocm` (default: the model's preset's,
    /// else a GPU's when a binary for one is installed, else `cpu`).
    #[serde(default)]
    pub worker: Option<String>,
    /// `rbee` or `llama.cpp` (default: llama.cpp when one is installed, else rbee).
    #[serde(default)]
    pub engine: Option<String>,
    /// More arguments for the engine (llama.cpp only), such as `["--temp", "0.7"]`;
    /// none may change the host, the port, the model or the API key.
    #[serde(default)]
    pub engine_args: Vec<String>,
    /// The device index (default 0).
    #[serde(default)]
    pub device: u32,
    /// Start even when the model does not fit in the device's memory budget.
    #[serde(default)]
    pub force: bool,
    /// When `model` is not in the catalog, take it as a reference (`hf:ORG/REPO`,
    /// `https://...`, `file:/...`) and download it first, in the same job (default true).
    #[serde(default = "yes")]
    pub pull: bool,
    /// Stop the worker after this many seconds without a request (default: the hive's
    /// `--worker-idle-ttl-secs`; 0: never).
    #[serde(default)]
    pub idle_ttl_secs: Option<u64>,
    /// CPU threads for the engine (default: the machine's physical cores, as
    /// llama.cpp itself chooses).
    #[serde(default)]
    pub threads: Option<u32>,
}

/// The threads a worker computes with: asked for, else one per physical core.
fn threads(asked: Option<u32>) -> Result<u32, ApiError> {
    match asked {
        Some(0) => Err(ApiError::bad_request(
            "invalid_threads",
            "threads must be at least 1".to_owned(),
        )),
        Some(n) => Ok(n),
        None => Ok(sysinfo::System::physical_core_count()
            .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .max(1)),
    }
}

fn yes() -> bool {
    true
}

/// What a spawn asks beyond its model, whoever asks it: a spawn request, a load, or
/// the one endpoint.
#[derive(Debug, Clone)]
struct Ask {
    worker: Option<String>,
    engine: Option<String>,
    engine_args: Vec<String>,
    device: u32,
    idle_ttl_secs: Option<u64>,
    threads: Option<u32>,
    room: admission::Room,
    /// Download a model that is not in the catalog first.
    pull: bool,
}

impl Ask {
    fn asked(&self) -> engines::Asked<'_> {
        engines::Asked {
            worker: self.worker.as_deref(),
            engine: self.engine.as_deref(),
            device: self.device,
        }
    }
}

/// The catalog's entry for `id`, if it has one.
async fn entry_of(state: &SharedState, id: &str) -> Result<Option<ModelEntry>, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    let id = id.to_owned();
    Ok(blocking(move || Ok(catalog.get(&id)?))
        .await?
        .map(|r| r.artifact))
}

/// Where a model with this preset runs, by the one rule ([`engines::place`]), with
/// the worker types installed here.
pub(crate) async fn place(
    state: &SharedState,
    asked: engines::Asked<'_>,
    preset: &model_catalog::Preset,
) -> Result<engines::Placement, ApiError> {
    let installed = installed_backends(state).await?;
    engines::place(asked, preset, &installed)
        .map_err(|(code, message)| ApiError::bad_request(code, message))
}

/// The worker types installed for this platform.
pub(crate) async fn installed_backends(state: &SharedState) -> Result<Vec<WorkerType>, ApiError> {
    let catalog = Arc::clone(&state.worker_catalog);
    Ok(blocking(move || Ok(catalog.list()?))
        .await?
        .into_iter()
        .map(|r| r.artifact)
        .filter(|b| b.status == ArtifactStatus::Available && b.platform == Platform::current())
        .map(|b| b.worker_type)
        .collect())
}

/// Checks a spawn request (model available, binary installed, memory) and starts the
/// worker in a job that ends when it is ready, or failed for good.
pub async fn start_spawn(state: &SharedState, req: SpawnRequest) -> Result<Arc<Job>, ApiError> {
    let found = entry_of(state, &req.model).await?;
    let ask = Ask {
        worker: req.worker,
        engine: req.engine,
        engine_args: req.engine_args,
        device: req.device,
        idle_ttl_secs: req.idle_ttl_secs,
        threads: req.threads,
        room: admission::Room::forced(req.force),
        pull: req.pull,
    };
    // the model's preset fills in what the request leaves out
    let preset = found.as_ref().map(|e| e.preset.clone()).unwrap_or_default();
    let placed = place(state, ask.asked(), &preset).await?;
    spawn(state, &req.model, found, ask, placed).await
}

/// Makes sure a worker serves the model: answers with a live one, else spawns one.
pub async fn start_load(state: &SharedState, req: LoadRequest) -> Result<Arc<Job>, ApiError> {
    let found = entry_of(state, &req.id).await?;
    let ask = Ask {
        worker: req.worker,
        engine: req.engine,
        engine_args: Vec::new(),
        device: req.device,
        idle_ttl_secs: req.idle_ttl_secs,
        threads: None,
        room: admission::Room::forced(req.force),
        pull: true,
    };
    load(state, &req.id, found, ask).await
}

/// The one endpoint's load of a catalog model: a live worker, else one spawned
/// after idle workers of other models made room for it. `idle_ttl_secs` (0 for
/// none) becomes its idle TTL.
pub(crate) async fn load_for_request(
    state: &SharedState,
    model: ModelEntry,
    idle_ttl_secs: Option<u64>,
) -> Result<Arc<Job>, ApiError> {
    let id = model.id.clone();
    let ask = Ask {
        worker: None,
        engine: None,
        engine_args: Vec::new(),
        device: 0,
        idle_ttl_secs,
        threads: None,
        room: admission::Room::Evict,
        pull: false,
    };
    load(state, &id, Some(model), ask).await
}

/// A live worker of the model where the rule places it (its TTL replaced by the
/// load's when it gives one), else a new one.
async fn load(
    state: &SharedState,
    id: &str,
    found: Option<ModelEntry>,
    ask: Ask,
) -> Result<Arc<Job>, ApiError> {
    let preset = found.as_ref().map(|e| e.preset.clone()).unwrap_or_default();
    let placed = place(state, ask.asked(), &preset).await?;
    let serving = state.workers.list().into_iter().find(|w| {
        w.model_ref == id
            && placed.engine.is_none_or(|e| e == w.engine)
            && w.backend == placed.wtype.backend()
            && w.device == placed.device
            && w.state.is_live()
    });
    let Some(w) = serving else {
        return spawn(state, id, found, ask, placed).await;
    };
    let (record, said) = match ask.idle_ttl_secs {
        Some(secs) => {
            let before = w.idle_ttl_secs;
            let now = state.workers.set_idle_ttl(&w.id, Some(secs)).unwrap_or(w);
            let ttl = |t: Option<u64>| t.map_or_else(|| "none".to_owned(), |s| format!("{s}s"));
            let said = format!(
                "{} already serves the model; its idle TTL is now {} (was {})",
                now.id,
                ttl(now.idle_ttl_secs),
                ttl(before)
            );
            (now, said)
        }
        None => {
            let said = format!("{} already serves the model", w.id);
            (w, said)
        }
    };
    let record = json!(record);
    Ok(state.jobs.spawn("model_load", move |job| async move {
        job.narrate("load", &said);
        Ok(record)
    }))
}

/// Spawns a worker for the model `name` names (its catalog entry when `found`,
/// else a reference pulled first in the same job) where `placed` says.
async fn spawn(
    state: &SharedState,
    name: &str,
    found: Option<ModelEntry>,
    ask: Ask,
    placed: engines::Placement,
) -> Result<Arc<Job>, ApiError> {
    let threads = threads(ask.threads)?;
    if placed.wtype == WorkerType::CpuLlm && placed.device != 0 {
        return Err(ApiError::bad_request(
            "invalid_device",
            format!("the cpu worker has one device, 0; got {}", placed.device),
        ));
    }
    // The binary first: a spawn that cannot run records nothing.
    let binary = choose_binary(state, placed.engine, placed.wtype).await?;
    let preset = found.as_ref().map(|e| e.preset.clone()).unwrap_or_default();
    let mut engine_args = if ask.engine_args.is_empty() {
        preset.engine_args.clone()
    } else {
        ask.engine_args.clone()
    };
    check_engine_args(binary.engine, &engine_args)?;
    let (entry, fetch) = match found {
        Some(entry) => {
            match &entry.status {
                ArtifactStatus::Available => {}
                ArtifactStatus::Downloading => {
                    return Err(conflict(
                        "model_not_ready",
                        format!("model {name:?} is still downloading"),
                    ));
                }
                ArtifactStatus::Paused => {
                    return Err(conflict(
                        "model_not_ready",
                        format!("model {name:?} is a paused download: pull it again to finish it"),
                    ));
                }
                ArtifactStatus::Failed { error } => {
                    return Err(conflict(
                        "model_not_ready",
                        format!("model {name:?} is failed: {error}"),
                    ));
                }
            }
            (entry, None)
        }
        None if !ask.pull => {
            return Err(ApiError::not_found(format!(
                "model {name:?} is not in the catalog: pull it first (rbee models pull)"
            )));
        }
        None => {
            // A reference: resolved now (a bad one is a 4xx), downloaded in the job.
            let request = ProvisionRequest::new(name.to_owned());
            if !state.provisioner.supports(&request.reference) {
                return Err(ApiError::not_found(format!(
                    "model {name:?} is not in the catalog, nor a reference to pull (hf:ORG/REPO, https://..., file:/...)"
                )));
            }
            match crate::ops::models::resolve_and_record(state, request).await? {
                crate::ops::models::Recorded::Available(r) => (r.artifact, None),
                crate::ops::models::Recorded::ToFetch {
                    plan,
                    new_entry,
                    evicted,
                } => (*plan, Some((new_entry, evicted))),
            }
        }
    };

    // an embedding model (or a reranker) is served by llama-server started in its
    // embedding (or reranking) mode
    let architecture = entry.gguf.as_ref().and_then(|g| g.architecture.as_deref());
    engines::kind_args(
        binary.engine,
        engines::ModelKind::of(entry.gguf.as_ref()),
        &mut engine_args,
    );
    if let Some(arch) = architecture {
        engines::runs(binary.engine, arch)
            .map_err(|message| ApiError::bad_request("unsupported_architecture", message))?;
    }
    let device_of = placed.memory_device();
    // a model to fetch is admitted once it is here and its header read
    let context = match fetch {
        None => {
            admission::admit(state, &entry, device_of, ask.room)
                .await?
                .context
        }
        Some(_) => memory::context_for(&entry),
    };
    let draft = match draft_path(state, &entry).await? {
        None => None,
        Some(_) if binary.engine != worker_catalog::Engine::LlamaCpp => {
            return Err(ApiError::bad_request(
                "unsupported",
                format!(
                    "{}'s preset names a draft model, which only llama.cpp runs: spawn it with --engine llama.cpp",
                    entry.id
                ),
            ));
        }
        Some(path) => {
            // which flags this build takes for a draft, as it says itself
            let help = worker_provisioner::ask_binary(&binary.path, "--help", binary.library_dir())
                .await
                .unwrap_or_default();
            let flags = engines::llama::draft_flags(&help);
            Some(engines::Draft {
                path,
                max: entry.preset.draft_max,
                min: entry.preset.draft_min,
                flags,
            })
        }
    };

    let slot_cache = slot_cache(
        state,
        &entry,
        &binary,
        context,
        preset.slots,
        &engine_args,
        draft.as_ref(),
    );
    let id = new_id();
    let plan = SpawnPlan {
        id: id.clone(),
        model_ref: entry.id.clone(),
        model_path: entry.path.clone(),
        backend: placed.wtype.backend().to_owned(),
        engine: binary.engine,
        engine_version: binary.engine.version_text(&binary.version),
        engine_args,
        context,
        slots: preset.slots,
        device: placed.device,
        binary: binary.path.clone(),
        library_dir: binary.library_dir().map(std::path::Path::to_path_buf),
        binary_id: binary.id.clone(),
        threads,
        idle_ttl: match ask
            .idle_ttl_secs
            .or(preset.keep_alive_secs)
            .unwrap_or(state.config.worker_idle_ttl_secs)
        {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        },
        log_path: state
            .home
            .join("logs")
            .join("workers")
            .join(format!("{id}.log")),
        draft,
        slot_cache,
        projector: entry.projector_in_use().map(|p| p.path.clone()),
    };
    let s = Arc::clone(state);
    let room = ask.room;
    Ok(state.jobs.spawn("worker_spawn", move |job| async move {
        if let Some((new_entry, evicted)) = fetch {
            job.narrate(
                "pull",
                &format!("{} is not here yet: downloading it first", entry.id),
            );
            crate::ops::models::narrate_evictions(&job, &evicted);
            crate::ops::models::fetch_model(&s, &job, entry.clone(), new_entry).await?;
            if room != admission::Room::Ignore {
                // what was fetched, as recorded (its header read)
                let fetched = entry_of(&s, &entry.id)
                    .await
                    .map_err(|e| e.parts())?
                    .unwrap_or_else(|| entry.clone());
                admission::admit(&s, &fetched, device_of, room)
                    .await
                    .map_err(|e| e.parts())?;
            }
        }
        let mut events = s.workers.events.subscribe();
        job.narrate(
            "spawn",
            &format!("starting {id} ({}) for {}", plan.binary_id, plan.model_ref),
        );
        let mut first = s.workers.spawn(plan);
        loop {
            tokio::select! {
                outcome = &mut first => {
                    // The events sent before the outcome go on the stream first.
                    while let Ok(e) = events.try_recv() {
                        if e.worker_id == id {
                            job.narrate(e.event, &e.message);
                        }
                    }
                    return match outcome {
                        Ok(Ok(record)) => Ok(json!(record)),
                        Ok(Err(reason)) => Err(("worker_failed", reason)),
                        Err(_) => Err(("worker_failed", "the supervisor ended".to_owned())),
                    };
                }
                event = events.recv() => {
                    if let Ok(e) = event && e.worker_id == id {
                        job.narrate(e.event, &e.message);
                    }
                }
                () = job.cancel.cancelled() => {
                    s.workers.stop(&id).await;
                    return Err(("cancelled", "cancelled: the worker was stopped".to_owned()));
                }
            }
        }
    }))
}

/// Where a worker's slots are saved at unload and restored at load (warm swaps):
/// llama.cpp's alone, while the hive keeps any, for a model whose sha256 is known;
/// the folder is that of these settings, so another model, build or preset never
/// restores it.
fn slot_cache(
    state: &SharedState,
    entry: &ModelEntry,
    binary: &WorkerBinary,
    context: u64,
    slots: Option<u32>,
    engine_args: &[String],
    draft: Option<&engines::Draft>,
) -> Option<PathBuf> {
    if binary.engine != Engine::LlamaCpp || state.config.kv_cache_max_bytes == 0 {
        return None;
    }
    let sha = entry.sha256.as_deref()?;
    let settings = [
        sha.to_owned(),
        binary.id.clone(),
        binary.engine.version_text(&binary.version),
        context.to_string(),
        slots.map_or(engines::llama::SLOTS, u64::from).to_string(),
        engine_args.join("\u{1f}"),
        draft
            .map(|d| d.path.display().to_string())
            .unwrap_or_default(),
        entry
            .projector_in_use()
            .map(|p| p.sha256.clone())
            .unwrap_or_default(),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    match crate::workers::kv_cache::prepare(&state.home, &entry.id, &settings) {
        Ok(dir) => Some(dir),
        Err(e) => {
            tracing::warn!(model = %entry.id, "its KV caches cannot be kept: {e}");
            None
        }
    }
}

/// The file of the draft model the preset names, if any; a 409 when it is no
/// longer available (deleted since the preset was set).
async fn draft_path(state: &SharedState, model: &ModelEntry) -> Result<Option<PathBuf>, ApiError> {
    let Some(id) = model.preset.draft.as_deref() else {
        return Ok(None);
    };
    match entry_of(state, id).await? {
        Some(d) if d.status == ArtifactStatus::Available => Ok(Some(d.path)),
        _ => Err(conflict(
            "draft_not_ready",
            format!(
                "{}'s draft {id} is no longer available: set another (rbee models set {} --draft ID) or none (--draft '')",
                model.id, model.id
            ),
        )),
    }
}

/// Stops a worker; 404 when unknown.
pub async fn stop(state: &SharedState, id: &str) -> Result<Value, ApiError> {
    match state.workers.stop(id).await {
        Some(record) => Ok(json!(record)),
        None => Err(ApiError::not_found(format!("no worker {id:?}"))),
    }
}

/// What a load request asks for.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    /// The model: a catalog id, or a reference to pull first.
    pub id: String,
    /// `cpu`, `cuda`, `metal`, `vulkan` or `rocm` (default: the model's preset's,
    /// else a GPU's when a binary for one is installed, else `cpu`).
    #[serde(default)]
    pub worker: Option<String>,
    /// `rbee` or `llama.cpp` (default: llama.cpp when installed, else rbee).
    #[serde(default)]
    pub engine: Option<String>,
    /// The device index (default 0).
    #[serde(default)]
    pub device: u32,
    /// Stop the worker after this many seconds without a request (0: never).
    #[serde(default)]
    pub idle_ttl_secs: Option<u64>,
    /// Start even when the model does not fit in the device's memory budget.
    #[serde(default)]
    pub force: bool,
}

/// Stops every worker serving the model; answers with their ids (none is not an error).
pub async fn unload(state: &SharedState, id: &str) -> Result<Value, ApiError> {
    let ids = state.workers.using_model(id);
    for w in &ids {
        state.workers.stop(w).await;
    }
    Ok(json!({"id": id, "stopped": ids}))
}
