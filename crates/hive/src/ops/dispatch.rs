//! `POST /v1/jobs`: every operation by name, each checked before its job starts, so a
//! bad request is a 4xx, never a failed job. It only dispatches: the work, and its
//! checks, are in the resource's own module, whoever starts it. An operation that
//! has a resource route takes that route's own request (`ModelLoad(LoadRequest)`),
//! so the two cannot drift.

use std::sync::Arc;

use provisioning::ProvisionRequest;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::jobs::Job;
use crate::ops::binaries::InstallRequest;
use crate::ops::err;
use crate::ops::models::{model_delete, model_get, model_list, start_provision, verify_models};
use crate::ops::workers::{LoadRequest, SpawnRequest};
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
        /// Leave out the multimodal projector that would come with it.
        #[serde(default)]
        no_mmproj: bool,
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
    ModelLoad(LoadRequest),
    /// Stop the workers that serve a model.
    ModelUnload {
        /// The model's catalog id.
        id: String,
    },
    /// Build or download a worker binary.
    WorkerInstall(InstallRequest),
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
    WorkerSpawn(SpawnRequest),
    /// Stop a worker.
    WorkerStop {
        /// Its id.
        id: String,
    },
    /// List the workers.
    WorkerList,
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
            Self::ModelLoad(_) => "model_load",
            Self::ModelDownloadBatch { .. } => "model_download_batch",
            Self::WorkerSpawnBatch { .. } => "worker_spawn_batch",
            Self::ModelUnload { .. } => "model_unload",
            Self::WorkerInstall(_) => "worker_install",
            Self::WorkerRemove { .. } => "worker_remove",
            Self::WorkerCatalogList => "worker_catalog_list",
            Self::WorkerCatalogGet { .. } => "worker_catalog_get",
            Self::WorkerSpawn(_) => "worker_spawn",
            Self::WorkerStop { .. } => "worker_stop",
            Self::WorkerList => "worker_list",
        }
    }
}

/// Checks an operation and starts its job.
pub async fn start(state: &SharedState, op: Operation) -> Result<Arc<Job>, ApiError> {
    let name = op.name();
    match op {
        Operation::ModelDownload {
            model_ref,
            sha256,
            no_mmproj,
        } => {
            start_provision(
                state,
                name,
                ProvisionRequest::new(model_ref)
                    .with_sha256(sha256)
                    .without_projector(no_mmproj),
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
        Operation::ModelLoad(req) => crate::ops::workers::start_load(state, req).await,
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
        Operation::WorkerInstall(req) => crate::ops::binaries::start_install(state, req).await,
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
        Operation::WorkerSpawn(req) => crate::ops::workers::start_spawn(state, req).await,
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

#[cfg(test)]
mod tests {
    use super::Operation;

    fn parse(v: serde_json::Value) -> Result<Operation, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn todays_documents_still_parse() {
        let spawn = parse(serde_json::json!({
            "operation": "worker_spawn", "model": "m", "worker": "cpu", "engine": "llama.cpp",
            "engine_args": ["--temp", "0"], "device": 0, "force": true, "pull": false,
            "idle_ttl_secs": 30, "threads": 2
        }));
        match spawn {
            Ok(Operation::WorkerSpawn(r)) => {
                assert_eq!(
                    (r.model.as_str(), r.force, r.pull, r.threads),
                    ("m", true, false, Some(2))
                );
            }
            other => panic!("{other:?}"),
        }
        match parse(serde_json::json!({"operation": "worker_spawn", "model": "m"})) {
            Ok(Operation::WorkerSpawn(r)) => assert!(r.pull && !r.force, "the defaults hold"),
            other => panic!("{other:?}"),
        }
        match parse(serde_json::json!({"operation": "model_load", "id": "m", "idle_ttl_secs": 0})) {
            Ok(Operation::ModelLoad(r)) => {
                assert_eq!((r.id.as_str(), r.idle_ttl_secs), ("m", Some(0)))
            }
            other => panic!("{other:?}"),
        }
        match parse(serde_json::json!({
            "operation": "worker_install", "worker": "llama.cpp:cpu", "source": "/src",
            "cmake_args": ["-DGGML_NATIVE=OFF"]
        })) {
            Ok(Operation::WorkerInstall(r)) => assert_eq!(r.cmake_args.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(serde_json::json!({"operation": "model_download", "model_ref": "hf:a/b"})),
            Ok(Operation::ModelDownload { .. })
        ));
    }

    #[test]
    fn unknown_fields_and_operations_are_refused() {
        for bad in [
            serde_json::json!({"operation": "worker_spawn", "model": "m", "modle": "x"}),
            serde_json::json!({"operation": "model_load", "id": "m", "extra": 1}),
            serde_json::json!({"operation": "rm_rf"}),
            serde_json::json!({"model": "m"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
