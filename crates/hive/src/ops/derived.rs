//! Models made over another model's file, as Ollama's `/api/create` and `/api/copy`
//! make them: a name of its own, a system prompt and sampling parameters, and no
//! copy of the weights. Such a model's provider is [`model_catalog::DERIVED`]; its
//! file is its base's (so it is never deleted with it, nor counted twice on disk),
//! and a base with models made over it is neither deleted nor evicted.

use std::collections::BTreeMap;
use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use axum::http::StatusCode;
use model_catalog::{DERIVED, ModelCatalog, ModelEntry, Preset};
use provisioning::ArtifactProvisioner as _;
use serde_json::Value;

use crate::error::ApiError;
use crate::ops::blocking;
use crate::state::SharedState;

/// What a new model takes from the one it is made from, and what it changes.
#[derive(Debug, Clone, Default)]
pub struct Derive {
    /// Its name, `name[:tag]` (`:latest` when no tag is given).
    pub name: String,
    /// A system prompt; `None` keeps the one it is made from.
    pub system: Option<String>,
    /// Sampling parameters by Ollama's names; `None` keeps the ones it is made from.
    pub parameters: Option<BTreeMap<String, Value>>,
}

/// The ids of the models made over `id`'s file.
pub fn made_over(models: &[ModelEntry], id: &str) -> Vec<String> {
    models
        .iter()
        .filter(|m| m.derived_from() == Some(id))
        .map(|m| m.id.clone())
        .collect()
}

/// What a model answers ([`crate::engines::capabilities`]): a model made over
/// another answers as its base runs, found by `find`.
pub fn capabilities<'a>(
    model: &'a ModelEntry,
    find: impl FnOnce(&str) -> Option<&'a ModelEntry>,
) -> Vec<&'static str> {
    crate::engines::capabilities(model.derived_from().and_then(find).unwrap_or(model))
}

/// The model a derived one runs, with its own system prompt and parameters over
/// the base's preset: what the one endpoint loads and asks. Any other model is
/// itself. A base that is gone is a 409 that says so.
pub fn runnable(catalog: &ModelCatalog, model: ModelEntry) -> Result<ModelEntry, ApiError> {
    let Some(base_id) = model.derived_from() else {
        return Ok(model);
    };
    let base = catalog
        .get(base_id)?
        .map(|r| r.artifact)
        .filter(|b| b.status == ArtifactStatus::Available)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "model_not_ready",
                format!(
                    "{} is made over {base_id}, which is no longer available",
                    model.id
                ),
            )
        })?;
    let mut run = base;
    if model.preset.system.is_some() {
        run.preset.system.clone_from(&model.preset.system);
    }
    if !model.preset.parameters.is_empty() {
        run.preset.parameters.clone_from(&model.preset.parameters);
    }
    Ok(run)
}

/// Makes (or makes again) the model `want` names over `from`'s file, and answers
/// with it. A name that is a model of its own is a 409; a derived model of that
/// name is replaced, as Ollama replaces it.
pub async fn derive(
    state: &SharedState,
    from: ModelEntry,
    want: Derive,
) -> Result<ModelEntry, ApiError> {
    let name = crate::ops::presets::alias(&want.name)?;
    if state.provisioner.supports(&name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("{name:?} is a reference to pull, not a name for a model made here"),
        ));
    }
    if let Some(system) = &want.system
        && system.len() > crate::ops::presets::SYSTEM_MAX
    {
        return Err(ApiError::bad_request(
            "invalid_preset",
            format!(
                "system is {} bytes; at most {}",
                system.len(),
                crate::ops::presets::SYSTEM_MAX
            ),
        ));
    }
    if let Some(p) = &want.parameters {
        crate::ops::presets::check_parameters(p)?;
    }
    let catalog = Arc::clone(&state.catalog);
    blocking(move || {
        // a model made over a derived one is made over its base
        let (base, inherited) = match from.derived_from() {
            Some(base_id) => {
                let base = catalog.get(base_id)?.map(|r| r.artifact).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "model_not_ready",
                        format!("{} is made over {base_id}, which is gone", from.id),
                    )
                })?;
                (base, from.preset.clone())
            }
            None => (from, Preset::default()),
        };
        if base.status != ArtifactStatus::Available {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "model_not_ready",
                format!("{} is not available", base.id),
            ));
        }
        let taken = catalog
            .list()?
            .into_iter()
            .map(|r| r.artifact)
            .find(|m| m.id == name || m.alias() == name);
        if let Some(other) = &taken
            && other.provider != DERIVED
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "name_taken",
                format!(
                    "{name} names {}, a model of its own: choose another name",
                    other.id
                ),
            ));
        }
        let mut entry = ModelEntry::new(&name, DERIVED, &format!("{name}@{}", base.id), &base.path);
        entry.name.clone_from(&name);
        entry.size = base.size;
        entry.status = ArtifactStatus::Available;
        entry.sha256.clone_from(&base.sha256);
        entry.verified = base.verified;
        entry.hashed_at = base.hashed_at;
        entry.gguf.clone_from(&base.gguf);
        entry.shards.clone_from(&base.shards);
        entry.external = true;
        entry.preset = Preset {
            alias: Some(name.clone()),
            system: want.system.or(inherited.system).filter(|s| !s.is_empty()),
            parameters: want.parameters.unwrap_or(inherited.parameters),
            ..Preset::default()
        };
        if let Some(old) = taken {
            catalog.remove(&old.id)?;
        }
        Ok(catalog.register(entry)?.artifact)
    })
    .await
}
