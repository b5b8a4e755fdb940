//! Worker-binary operations: install (by any vendor), list, get, remove.

use std::sync::Arc;
use std::time::Duration;

use artifact_catalog::ArtifactStatus;
use axum::http::StatusCode;
use provisioning::{ArtifactProvisioner as _, ProvisionContext, ProvisionRequest};
use serde_json::{Value, json};
use worker_catalog::{Engine, WorkerBinary, WorkerType};

use crate::error::ApiError;
use crate::jobs::Job;
use crate::ops::blocking;
use crate::state::SharedState;

/// What an install request asks for.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// The backend, `cpu`, `cuda`, `metal`, `vulkan` or `rocm`, optionally after its
    /// engine: `llama.cpp:cpu`, `rbee:cuda`.
    pub worker: String,
    /// `local` (build our worker from this workspace, the default), a release
    /// archive's URL, `file:/path` of a binary to register, or the absolute path of a
    /// llama.cpp source tree to build with cmake.
    #[serde(default)]
    pub source: Option<String>,
    /// The release archive's sha256 (required for a URL).
    #[serde(default)]
    pub sha256: Option<String>,
    /// More cmake settings for a llama.cpp build (`-DGGML_NATIVE=OFF`), after the
    /// defaults.
    #[serde(default)]
    pub cmake_args: Vec<String>,
}

/// The engine and backend an install names: `cpu`, `llama.cpp:cpu`, `rbee:cuda`.
fn engine_and_type(worker: &str) -> Result<(Option<Engine>, WorkerType), ApiError> {
    match worker.rsplit_once(':') {
        Some((engine_name, backend)) => Ok((engine(Some(engine_name))?, worker_type(backend)?)),
        None => Ok((None, worker_type(worker)?)),
    }
}

/// The provisioning reference of an install.
fn install_reference(
    engine: Option<Engine>,
    wtype: WorkerType,
    source: &str,
) -> Result<String, ApiError> {
    let tree = std::path::Path::new(source);
    Ok(match (engine, source) {
        (Some(Engine::LlamaCpp), "local") => {
            return Err(ApiError::bad_request(
                "invalid_reference",
                "llama.cpp is built from its own source tree: pass it as the source (rbee worker-binaries install llama.cpp:cpu --source /path/to/llama.cpp), or a release URL, or add a built llama-server".to_owned(),
            ));
        }
        (_, "local") => format!("local:{}", wtype.backend()),
        (Some(Engine::Rbee), _) if tree.is_absolute() => {
            return Err(ApiError::bad_request(
                "invalid_reference",
                "our worker builds from this workspace (source local), or is added with file:/path/to/llm-worker-rbee".to_owned(),
            ));
        }
        (_, _) if tree.is_absolute() => format!("llama.cpp:{}@{source}", wtype.backend()),
        (_, other) => other.to_owned(),
    })
}

/// Resolves an install (a bad source is a 4xx), records the binary as installing,
/// and builds or downloads it in a job.
pub async fn start_install(state: &SharedState, req: InstallRequest) -> Result<Arc<Job>, ApiError> {
    crate::ops::check_sha256(req.sha256.as_deref())?;
    let (wanted_engine, wtype) = engine_and_type(&req.worker)?;
    let source = req.source.unwrap_or_else(|| "local".into());
    let request = ProvisionRequest {
        build_args: req.cmake_args,
        ..ProvisionRequest::new(install_reference(wanted_engine, wtype, &source)?)
            .with_sha256(req.sha256)
    };
    let resolved = tokio::time::timeout(
        Duration::from_secs(30),
        state.worker_provisioner.resolve(&request),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "resolving took too long",
        )
    })?
    .map_err(ApiError::from)?;
    let mut resolved = resolved;
    if request.reference.starts_with("file:") {
        // our own binary does not say its backend: the request's word is taken; a
        // llama.cpp build that lists no GPU now may still be one
        if resolved.plan.engine == Engine::Rbee || wtype != WorkerType::CpuLlm {
            let plan = &mut resolved.plan;
            plan.worker_type = wtype;
            plan.id =
                WorkerBinary::make_engine_id(plan.engine, wtype, &plan.version, plan.platform);
            resolved.id.clone_from(&plan.id);
        }
    } else if resolved.plan.worker_type != wtype {
        return Err(ApiError::bad_request(
            "invalid_reference",
            format!(
                "{} is a {} worker, not {wtype}",
                request.reference, resolved.plan.worker_type
            ),
        ));
    }
    if let Some(e) = wanted_engine
        && e != resolved.plan.engine
    {
        return Err(ApiError::bad_request(
            "invalid_reference",
            format!("{} is {}, not {e}", request.reference, resolved.plan.engine),
        ));
    }
    let catalog = Arc::clone(&state.worker_catalog);
    let plan = resolved.plan.clone();
    blocking(move || {
        if catalog.get(&plan.id)?.is_some() {
            catalog.update(plan)?;
        } else {
            catalog.add(plan)?;
        }
        Ok(())
    })
    .await?;
    let s = Arc::clone(state);
    Ok(state.jobs.spawn("worker_install", move |job| async move {
        let id = resolved.id.clone();
        let ctx = ProvisionContext {
            reporter: Arc::new(crate::ops::JobNarrator(Arc::clone(&job))),
            cancel: job.cancel.clone(),
        };
        let outcome = s.worker_provisioner.fetch(resolved, &ctx).await;
        let catalog = Arc::clone(&s.worker_catalog);
        match outcome {
            Ok(binary) => blocking(move || {
                // a build learns its version, and so its id, only once it is built
                if binary.id != id {
                    catalog.remove(&id)?;
                    if catalog.get(&binary.id)?.is_none() {
                        return Ok(binary_json(&catalog.add(binary)?));
                    }
                }
                Ok(binary_json(&catalog.update(binary)?))
            })
            .await
            .map_err(|e| e.parts()),
            Err(e) => {
                let (code, message) = (e.code(), e.to_string());
                let m2 = message.clone();
                let _ = blocking(move || {
                    catalog.set_status(&id, ArtifactStatus::Failed { error: m2 })?;
                    Ok(())
                })
                .await;
                Err((code, message))
            }
        }
    }))
}

/// A worker binary as the API shows it: the catalog entry, and its engine's version
/// as that engine writes it (`0.1.0`, llama.cpp's `b6123`).
fn binary_json(record: &artifact_catalog::ArtifactMetadata<WorkerBinary>) -> Value {
    let b = &record.artifact;
    let mut v = json!(record);
    v["engine_version"] = json!(b.engine.version_text(&b.version));
    v
}

/// Every worker binary, as JSON.
pub async fn binary_list(state: &SharedState) -> Result<Value, ApiError> {
    let catalog = Arc::clone(&state.worker_catalog);
    blocking(move || {
        Ok(Value::Array(
            catalog.list()?.iter().map(binary_json).collect(),
        ))
    })
    .await
}

/// One worker binary; 404 when absent.
pub async fn binary_get(state: &SharedState, id: &str) -> Result<Value, ApiError> {
    let catalog = Arc::clone(&state.worker_catalog);
    let id = id.to_owned();
    blocking(move || match catalog.get(&id)? {
        Some(r) => Ok(binary_json(&r)),
        None => Err(ApiError::not_found(format!(
            "worker binary {id:?} is not installed"
        ))),
    })
    .await
}

/// Removes a worker binary and its folder; 409 while a worker runs it.
pub async fn binary_remove(state: &SharedState, id: &str) -> Result<Value, ApiError> {
    let users: Vec<String> = state
        .workers
        .list()
        .into_iter()
        .filter(|w| w.binary_id == id && w.state.is_live())
        .map(|w| w.id)
        .collect();
    if !users.is_empty() {
        return Err(conflict(
            "in_use",
            format!(
                "worker binary {id:?} runs {}: stop them first",
                users.join(", ")
            ),
        ));
    }
    let catalog = Arc::clone(&state.worker_catalog);
    let id = id.to_owned();
    blocking(move || {
        let Some(record) = catalog.get(&id)? else {
            return Err(ApiError::not_found(format!(
                "worker binary {id:?} is not installed"
            )));
        };
        if record.artifact.status == ArtifactStatus::Downloading {
            return Err(conflict(
                "conflict",
                format!("worker binary {id:?} is being installed"),
            ));
        }
        catalog.remove(&id)?;
        let dir = catalog.binary_dir(&id)?;
        if dir.starts_with(catalog.workers_dir()) && dir.exists() {
            fs_err::remove_dir_all(&dir).map_err(ApiError::internal)?;
        }
        Ok(json!({"id": id, "removed": true}))
    })
    .await
}

pub(crate) fn worker_type(s: &str) -> Result<WorkerType, ApiError> {
    s.parse()
        .map_err(|e: String| ApiError::bad_request("invalid_worker_type", e))
}

pub(crate) fn engine(s: Option<&str>) -> Result<Option<Engine>, ApiError> {
    s.map(str::parse::<Engine>)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_engine", e))
}

pub(crate) fn conflict(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

/// The engines already on this machine, registered where they lie at start when no
/// worker binary is installed, as `rbee worker-binaries add` would: an
/// `llm-worker-rbee` beside the hive's own executable, and llama.cpp's `llama-server`
/// named by `LLAMA_SERVER`, else found on `PATH`. One that is not what it claims
/// (`--version` says otherwise) is said and skipped. The ids registered.
pub async fn find_engines(state: &SharedState) -> Vec<String> {
    let catalog = Arc::clone(&state.worker_catalog);
    match blocking(move || Ok(catalog.list()?.is_empty())).await {
        Ok(true) => {}
        Ok(false) => return Vec::new(),
        Err(e) => {
            tracing::warn!("cannot read the worker catalog: {}", e.parts().1);
            return Vec::new();
        }
    }
    let mut found = Vec::new();
    for path in engine_candidates() {
        let req = InstallRequest {
            worker: "cpu".to_owned(),
            source: Some(format!("file:{}", path.display())),
            sha256: None,
            cmake_args: Vec::new(),
        };
        let outcome = match start_install(state, req).await {
            Ok(job) => job.wait::<WorkerBinary>().await.map_err(|u| u.message),
            Err(e) => Err(e.parts().1),
        };
        match outcome {
            Ok(b) => {
                tracing::info!(
                    "found {} at {}: registered where it lies",
                    b.id,
                    b.path.display()
                );
                found.push(b.id);
            }
            Err(message) => tracing::warn!("{} is not used: {message}", path.display()),
        }
    }
    found
}

/// Where engines may already be: ours beside this executable, llama.cpp's where
/// `LLAMA_SERVER` says or on `PATH`; only files that are there.
fn engine_candidates() -> Vec<std::path::PathBuf> {
    let ours = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(format!("llm-worker-rbee{}", std::env::consts::EXE_SUFFIX)));
    let llama = std::env::var_os("LLAMA_SERVER")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| which::which("llama-server").ok());
    [ours, llama]
        .into_iter()
        .flatten()
        .filter(|p| p.is_file())
        .collect()
}
