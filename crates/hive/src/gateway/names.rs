//! What a request's `model` names: a catalog id, or an alias in Ollama's `name:tag`
//! form ([`ModelEntry::alias`]: the preset's, else derived from the model's
//! repository or file and its quantization, `smollm2-135m-instruct:q4_k_m`). A name
//! without a tag matches when one model has it.

use std::collections::HashMap;
use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use axum::http::StatusCode;
use model_catalog::{ModelCatalog, ModelEntry};
use provisioning::ArtifactProvisioner as _;

use super::Gateway;
use super::GatewayError;
use crate::ops::blocking;

/// The available model a request names; an unknown name is a 404 that lists none of
/// the others (the list is `GET /models` or `/api/tags`).
pub async fn resolve(state: &Gateway, name: &str) -> Result<ModelEntry, GatewayError> {
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err(GatewayError::new(
            StatusCode::BAD_REQUEST,
            "invalid_model",
            "the request names no model",
        ));
    }
    let entry = match find(state, &name).await? {
        Some(e) => e,
        None if state.hive.config.gateway_pull && state.hive.provisioner.supports(&name) => {
            pull(state, &name).await?
        }
        // a bare NAME:TAG no model here has: Ollama's library's, as Ollama's
        // clients mean it
        None if state.hive.config.gateway_pull
            && name.contains(':')
            && model_provisioner::oci::OllamaName::parse(&name).is_ok() =>
        {
            from_the_library(state, &name).await?
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
        ArtifactStatus::Available if entry.derived_from().is_some() => {
            // a model made over another runs that one, with its own defaults
            let catalog = Arc::clone(&state.hive.catalog);
            blocking(move || crate::ops::derived::runnable(&catalog, entry))
                .await
                .map_err(GatewayError::from)
        }
        ArtifactStatus::Available => Ok(entry),
        other => Err(GatewayError::new(
            StatusCode::CONFLICT,
            "model_not_ready",
            format!("model {name:?} is not available: {other:?}"),
        )),
    }
}

/// The catalog's model that `name` names (an id, an alias, a unique bare name),
/// whatever its status; nothing is pulled.
pub async fn find(state: &Gateway, name: &str) -> Result<Option<ModelEntry>, GatewayError> {
    let catalog = Arc::clone(&state.hive.catalog);
    let wanted = name.to_owned();
    let exact = blocking(move || Ok(catalog.get(&wanted)?.map(|r| r.artifact)))
        .await
        .map_err(GatewayError::from)?;
    if exact.is_some() {
        return Ok(exact);
    }
    match state
        .aliases
        .find(&state.hive.catalog, state.hive.catalog.generation(), name)
        .await?
    {
        Some(id) => {
            let catalog = Arc::clone(&state.hive.catalog);
            blocking(move || Ok(catalog.get(&id)?.map(|r| r.artifact)))
                .await
                .map_err(GatewayError::from)
        }
        None => Ok(None),
    }
}

/// Pulls a reference into the catalog (as `model_download` does, one job), and waits.
async fn pull(state: &Gateway, reference: &str) -> Result<ModelEntry, GatewayError> {
    pull_or(state, reference, GatewayError::from).await
}

/// Pulls `name` from Ollama's library. A name the library does not have (or a
/// library that cannot be reached) is the 404 of a name nobody has, with the reason.
async fn from_the_library(state: &Gateway, name: &str) -> Result<ModelEntry, GatewayError> {
    let registry = state.hive.config.ollama_registry.clone();
    pull_or(state, &format!("ollama:{name}"), |e| {
        let (_, message) = e.parts();
        GatewayError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "model {name:?} is not in this hive's catalog, nor to be had from Ollama's library ({registry}): {message}"
            ),
        )
    })
    .await
}

/// [`pull`], with a refusal before the download (a reference that does not
/// resolve) answered as `refused` says.
async fn pull_or(
    state: &Gateway,
    reference: &str,
    refused: impl FnOnce(crate::error::ApiError) -> GatewayError,
) -> Result<ModelEntry, GatewayError> {
    let job = crate::ops::dispatch::start(
        &state.hive,
        crate::ops::dispatch::Operation::ModelDownload {
            model_ref: reference.to_owned(),
            sha256: None,
            no_mmproj: false,
        },
    )
    .await
    .map_err(refused)?;
    let record: model_catalog::ModelRecord = job.wait().await.map_err(|u| {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "pull_failed",
            format!("pulling {reference} {}: {}", u.state.name(), u.message),
        )
    })?;
    Ok(record.artifact)
}

/// Alias to catalog id.
type Aliases = Arc<HashMap<String, String>>;

/// Aliases to catalog ids, built from the catalog once and again only after it was
/// written (its generation moved), so a request by alias reads one entry, not all.
#[derive(Debug, Default)]
pub struct AliasIndex {
    built: tokio::sync::Mutex<Option<(u64, Aliases)>>,
}

impl AliasIndex {
    /// The id a name stands for: an alias, or a bare name (or `name:latest`) that
    /// one model's alias has.
    async fn find(
        &self,
        catalog: &Arc<ModelCatalog>,
        generation: u64,
        name: &str,
    ) -> Result<Option<String>, GatewayError> {
        let map = self.get(catalog, generation).await?;
        let lower = name.to_ascii_lowercase();
        if let Some(id) = map.get(&lower) {
            return Ok(Some(id.clone()));
        }
        let bare = lower.strip_suffix(":latest").unwrap_or(&lower);
        let mut same = map
            .iter()
            .filter(|(alias, _)| alias.split(':').next() == Some(bare));
        Ok(match (same.next(), same.next()) {
            (Some((_, id)), None) => Some(id.clone()),
            _ => None,
        })
    }

    /// The index as of `generation` (read before the catalog: a write during the
    /// rebuild moves it past this).
    async fn get(
        &self,
        catalog: &Arc<ModelCatalog>,
        generation: u64,
    ) -> Result<Aliases, GatewayError> {
        let mut built = self.built.lock().await;
        if let Some((g, map)) = built.as_ref()
            && *g == generation
        {
            return Ok(Arc::clone(map));
        }
        let catalog = Arc::clone(catalog);
        let map: HashMap<String, String> = blocking(move || {
            Ok(catalog
                .list()?
                .into_iter()
                .map(|r| (r.artifact.alias(), r.artifact.id))
                .collect())
        })
        .await
        .map_err(GatewayError::from)?;
        let map = Arc::new(map);
        *built = Some((generation, Arc::clone(&map)));
        Ok(map)
    }
}
