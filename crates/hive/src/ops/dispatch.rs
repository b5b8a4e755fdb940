//! `POST /v1/jobs`: every operation by name, each checked before its job starts, so a
//! bad request is a 4xx, never a failed job. It only dispatches: the work is in the
//! resource's own module.

use std::sync::Arc;

use artifact_catalog::provision::ProvisionRequest;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::jobs::Job;
use crate::ops::err;
use crate::ops::models::{model_delete, model_get, model_list, start_provision, verify_models};
use crate::state::SharedState;

/// Every operation, as `POST /v1/jobs` takes it: `{"operation": "model_download", ...}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(tag = "operation", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Fetch a model by reference.
    ModelDownload {
        /// `hf:ORG/REPO[:QUANT]`, `https://...`, `file:/...`.
        model_ref: String,
        /// The sha256 it must have.
        #[serde(default)]
        sha256: Option<String>,
    },
    /// Register a local GGUF file.
    ModelImport {
        /// An absolute path.
        path: String,
    },
    /// List the catalog.
    ModelList,
    /// One catalog entry.
    ModelGet {
        /// Its id.
        id: String,
    },
    /// Remove an entry and its files.
    ModelDelete {
        /// Its id.
        id: String,
    },
    /// Check every available model's files (existence and size; with `rehash`, their
    /// sha256 too); problems mark the model failed, no file is deleted.
    ModelVerify {
        /// Hash every file again.
        #[serde(default)]
        rehash: bool,
    },
    /// Adopt the models other tools keep (the Hugging Face and llama.cpp caches,
    /// Ollama's store, LM Studio's folder), and those in `dirs`, where they lie.
    ModelScan {
        /// More folders (absolute); none: the stores this machine has.
        #[serde(default)]
        dirs: Vec<String>,
    },
    /// Push an available model to an OCI registry, as a ModelPack artifact.
    ModelPush {
        /// The model's catalog id.
        id: String,
        /// `oci://HOST[:PORT]/REPO:TAG`.
        target: String,
    },
    /// Fetch several models; one parent job, a child job each.
    ModelDownloadBatch {
        /// The references.
        model_refs: Vec<String>,
    },
    /// Start several workers; one parent job, a child job each.
    WorkerSpawnBatch {
        /// What to spawn, each as `POST /v1/workers/spawn` takes it.
        workers: Vec<crate::ops::workers::SpawnRequest>,
    },
    /// Make sure a ready worker serves a model (spawn one, pulling the model, if needed).
    ModelLoad {
        /// The model's catalog id, or a reference.
        id: String,
        /// `cpu`, `cuda`, `metal`, `vulkan` or `rocm` (default: the model's preset's,
        /// else `cpu`).
        #[serde(default)]
        worker: Option<String>,
        /// `rbee` or `llama.cpp` (default: llama.cpp when installed, else rbee).
        #[serde(default)]
        engine: Option<String>,
        /// The device index.
        #[serde(default)]
        device: u32,
        /// Stop the worker after this many idle seconds (0: never).
        #[serde(default)]
        idle_ttl_secs: Option<u64>,
    },
    /// Stop the workers that serve a model.
    ModelUnload {
        /// The model's catalog id.
        id: String,
    },
    /// Build or download a worker binary.
    WorkerInstall {
        /// The backend, optionally after its engine: `cpu`, `llama.cpp:cuda`.
        worker: String,
        /// `local` (build our worker, the default), a release archive's URL,
        /// `file:/path` of a binary, or a llama.cpp source tree's absolute path.
        #[serde(default)]
        source: Option<String>,
        /// The release archive's sha256 (required for a URL).
        #[serde(default)]
        sha256: Option<String>,
        /// More cmake settings for a llama.cpp build.
        #[serde(default)]
        cmake_args: Vec<String>,
    },
    /// Remove a worker binary.
    WorkerRemove {
        /// Its id.
        id: String,
    },
    /// List the worker binaries.
    WorkerCatalogList,
    /// One worker binary.
    WorkerCatalogGet {
        /// Its id.
        id: String,
    },
    /// Start a worker for an available model.
    WorkerSpawn {
        /// The model's catalog id.
        model: String,
        /// `cpu`, `cuda`, `metal`, `vulkan` or `rocm` (default: the model's preset's,
        /// else `cpu`).
        #[serde(default)]
        worker: Option<String>,
        /// `rbee` or `llama.cpp` (default: llama.cpp when installed, else rbee).
        #[serde(default)]
        engine: Option<String>,
        /// More arguments for llama.cpp (none may change host, port, model, API key).
        #[serde(default)]
        engine_args: Vec<String>,
        /// The device index.
        #[serde(default)]
        device: u32,
        /// Start even when the memory estimate exceeds the free memory.
        #[serde(default)]
        force: bool,
        /// Download a model that is not in the catalog first (default true).
        #[serde(default = "yes")]
        pull: bool,
        /// Stop the worker after this many idle seconds (0: never).
        #[serde(default)]
        idle_ttl_secs: Option<u64>,
        /// CPU threads (default: the physical cores).
        #[serde(default)]
        threads: Option<u32>,
    },
    /// Stop a worker.
    WorkerStop {
        /// Its id.
        id: String,
    },
    /// List the workers.
    WorkerList,
}

fn yes() -> bool {
    true
}

impl Operation {
    /// The operation's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ModelDownload { .. } => "model_download",
            Self::ModelImport { .. } => "model_import",
            Self::ModelList => "model_list",
            Self::ModelGet { .. } => "model_get",
            Self::ModelDelete { .. } => "model_delete",
            Self::ModelVerify { .. } => "model_verify",
            Self::ModelPush { .. } => "model_push",
            Self::ModelScan { .. } => "model_scan",
            Self::ModelLoad { .. } => "model_load",
            Self::ModelDownloadBatch { .. } => "model_download_batch",
            Self::WorkerSpawnBatch { .. } => "worker_spawn_batch",
            Self::ModelUnload { .. } => "model_unload",
            Self::WorkerInstall { .. } => "worker_install",
            Self::WorkerRemove { .. } => "worker_remove",
            Self::WorkerCatalogList => "worker_catalog_list",
            Self::WorkerCatalogGet { .. } => "worker_catalog_get",
            Self::WorkerSpawn { .. } => "worker_spawn",
            Self::WorkerStop { .. } => "worker_stop",
            Self::WorkerList => "worker_list",
        }
    }
}

fn check_sha256(sha: Option<&str>) -> Result<(), ApiError> {
    match sha {
        Some(s) if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err(ApiError::bad_request(
                "invalid_sha256",
                format!("sha256 must be 64 hex digits, got {s:?}"),
            ))
        }
        _ => Ok(()),
    }
}

/// Checks an operation and starts its job.
pub async fn start(state: &SharedState, op: Operation) -> Result<Arc<Job>, ApiError> {
    let name = op.name();
    match op {
        Operation::ModelDownload { model_ref, sha256 } => {
            check_sha256(sha256.as_deref())?;
            start_provision(
                state,
                name,
                ProvisionRequest::new(model_ref).with_sha256(sha256),
            )
            .await
        }
        Operation::ModelImport { path } => {
            if !std::path::Path::new(&path).is_absolute() {
                return Err(ApiError::bad_request(
                    "invalid_path",
                    format!("the path must be absolute, got {path:?}"),
                ));
            }
            start_provision(state, name, ProvisionRequest::new(format!("file:{path}"))).await
        }
        Operation::ModelList => {
            let s = Arc::clone(state);
            Ok(state.jobs.spawn(
                name,
                move |_| async move { model_list(&s).await.map_err(err) },
            ))
        }
        Operation::ModelGet { id } => {
            let record = model_get(state, &id).await?;
            Ok(state.jobs.spawn(name, move |_| async move { Ok(record) }))
        }
        Operation::ModelDelete { id } => {
            model_get(state, &id).await?;
            let s = Arc::clone(state);
            Ok(state.jobs.spawn(name, move |_| async move {
                model_delete(&s, &id).await.map_err(err)
            }))
        }
        Operation::ModelScan { dirs } => crate::ops::scan::start_scan(state, name, &dirs),
        Operation::ModelPush { id, target } => {
            crate::ops::models::start_push(state, name, &id, target).await
        }
        Operation::ModelDownloadBatch { model_refs } => {
            let items = model_refs
                .into_iter()
                .map(|r| {
                    let s = Arc::clone(state);
                    let request = ProvisionRequest::new(r.clone());
                    let started: crate::batch::Started =
                        Box::pin(
                            async move { start_provision(&s, "model_download", request).await },
                        );
                    (r, started)
                })
                .collect();
            crate::batch::start(state, name, items)
        }
        Operation::WorkerSpawnBatch { workers } => {
            let items = workers
                .into_iter()
                .map(|w| {
                    let label = format!(
                        "{} on {} {}",
                        w.model,
                        w.worker.as_deref().unwrap_or("the preset's backend"),
                        w.device
                    );
                    let s = Arc::clone(state);
                    let started: crate::batch::Started =
                        Box::pin(async move { crate::ops::workers::start_spawn(&s, w).await });
                    (label, started)
                })
                .collect();
            crate::batch::start(state, name, items)
        }
        Operation::ModelLoad {
            id,
            worker,
            engine,
            device,
            idle_ttl_secs,
        } => {
            let req = crate::ops::workers::LoadRequest {
                id,
                worker,
                engine,
                device,
                idle_ttl_secs,
            };
            crate::ops::workers::start_load(state, req).await
        }
        Operation::ModelUnload { id } => {
            let s = Arc::clone(state);
            Ok(state.jobs.spawn(name, move |_| async move {
                crate::ops::workers::unload(&s, &id).await.map_err(err)
            }))
        }
        Operation::ModelVerify { rehash } => {
            let s = Arc::clone(state);
            Ok(state.jobs.spawn(name, move |job| async move {
                job.narrate(
                    "verify",
                    if rehash {
                        "checking every model's files and hashing them again"
                    } else {
                        "checking that every model's files are there, whole"
                    },
                );
                let report = verify_models(&s, rehash).await.map_err(err)?;
                job.narrate(
                    "verify",
                    &format!(
                        "{} checked, {} hashed, {} with problems",
                        report["checked"],
                        report["hashed"],
                        report["problems"].as_array().map_or(0, Vec::len)
                    ),
                );
                Ok(report)
            }))
        }
        Operation::WorkerInstall {
            worker,
            source,
            sha256,
            cmake_args,
        } => {
            check_sha256(sha256.as_deref())?;
            let req = crate::ops::binaries::InstallRequest {
                worker,
                source,
                sha256,
                cmake_args,
            };
            crate::ops::binaries::start_install(state, req).await
        }
        Operation::WorkerRemove { id } => {
            crate::ops::binaries::binary_get(state, &id).await?;
            let s = Arc::clone(state);
            Ok(state.jobs.spawn(name, move |_| async move {
                crate::ops::binaries::binary_remove(&s, &id)
                    .await
                    .map_err(err)
            }))
        }
        Operation::WorkerCatalogList => {
            let s = Arc::clone(state);
            Ok(state.jobs.spawn(name, move |_| async move {
                crate::ops::binaries::binary_list(&s).await.map_err(err)
            }))
        }
        Operation::WorkerCatalogGet { id } => {
            let record = crate::ops::binaries::binary_get(state, &id).await?;
            Ok(state.jobs.spawn(name, move |_| async move { Ok(record) }))
        }
        Operation::WorkerSpawn {
            model,
            worker,
            engine,
            engine_args,
            device,
            force,
            pull,
            idle_ttl_secs,
            threads,
        } => {
            let req = crate::ops::workers::SpawnRequest {
                model,
                worker,
                engine,
                engine_args,
                device,
                force,
                pull,
                idle_ttl_secs,
                threads,
            };
            crate::ops::workers::start_spawn(state, req).await
        }
        Operation::WorkerStop { id } => {
            if state.workers.get(&id).is_none() {
                return Err(ApiError::not_found(format!("no worker {id:?}")));
            }
            let s = Arc::clone(state);
            Ok(state.jobs.spawn(name, move |_| async move {
                crate::ops::workers::stop(&s, &id).await.map_err(err)
            }))
        }
        Operation::WorkerList => {
            let list = json!({"workers": state.workers.list()});
            Ok(state.jobs.spawn(name, move |_| async move { Ok(list) }))
        }
    }
}
