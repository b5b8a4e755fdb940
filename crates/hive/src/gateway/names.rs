//! What a request's `model` names: a catalog id, or an alias in Ollama's `name:tag`
//! form ([`ModelEntry::alias`]: the preset's, else derived from the model's
//! repository or file and its quantization, `smollm2-135m-instruct:q4_k_m`). A name
//! without a tag matches when one model has it.

use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use artifact_catalog::provision::ArtifactProvisioner as _;
use axum::http::StatusCode;
use model_catalog::ModelEntry;

use super::GatewayError;
use crate::ops::blocking;
use crate::state::SharedState;

/// The available model a request names; an unknown name is a 404 that lists none of
/// the others (the list is `GET /models` or `/api/tags`).
pub async fn resolve(state: &SharedState, name: &str) -> Result<ModelEntry, GatewayError> {
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err(GatewayError::new(
            StatusCode::BAD_REQUEST,
            "invalid_model",
            "the request names no model",
        ));
    }
    let catalog = Arc::clone(&state.catalog);
    let wanted = name.clone();
    let found = blocking(move || {
        if let Some(r) = catalog.get(&wanted)? {
            return Ok(Some(r.artifact));
        }
        let lower = wanted.to_ascii_lowercase();
        let all: Vec<ModelEntry> = catalog.list()?.into_iter().map(|r| r.artifact).collect();
        if let Some(e) = all.iter().find(|e| e.alias() == lower) {
            return Ok(Some(e.clone()));
        }
        // `name` alone, or Ollama's default tag, when one model has that name
        let bare = lower.strip_suffix(":latest").unwrap_or(&lower);
        let mut same = all
            .iter()
            .filter(|e| e.alias().split(':').next() == Some(bare));
        match (same.next(), same.next()) {
            (Some(e), None) => Ok(Some(e.clone())),
            _ => Ok(None),
        }
    })
    .await
    .map_err(GatewayError::from)?;
    let entry = match found {
        Some(e) => e,
        None if state.config.gateway_pull && state.provisioner.supports(&name) => {
            pull(state, &name).await?
        }
        None => {
            return Err(GatewayError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("model {name:?} is not in this hive's catalog (pull it first)"),
            ));
        }
    };
    match &entry.status {
        ArtifactStatus::Available => Ok(entry),
        other => Err(GatewayError::new(
            StatusCode::CONFLICT,
            "model_not_ready",
            format!("model {name:?} is not available: {other:?}"),
        )),
    }
}

/// Pulls a reference into the catalog (as `model_download` does, one job), and waits.
async fn pull(state: &SharedState, reference: &str) -> Result<ModelEntry, GatewayError> {
    let job = crate::ops::dispatch::start(
        state,
        crate::ops::dispatch::Operation::ModelDownload {
            model_ref: reference.to_owned(),
            sha256: None,
        },
    )
    .await?;
    let (ended, result) = crate::batch::wait_job(&job).await;
    if ended != "completed" {
        return Err(GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "pull_failed",
            format!(
                "pulling {reference} {ended}: {}",
                result["message"].as_str().unwrap_or_default()
            ),
        ));
    }
    let id = result["id"].as_str().unwrap_or_default().to_owned();
    let catalog = Arc::clone(&state.catalog);
    blocking(move || Ok(catalog.get(&id)?.map(|r| r.artifact)))
        .await?
        .ok_or_else(|| {
            GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "pull_failed",
                format!("{reference} was pulled but is not in the catalog"),
            )
        })
}
