//! A model's multimodal projector (`mmproj`), paired by hand: `POST
//! /v1/models/mmproj`, `rbee models import MODEL --mmproj FILE`. The file is checked
//! before anything changes (a GGUF of llama.cpp's `clip` architecture, that sees or
//! hears, whose output width is the model's embedding length), then copied into the
//! model's folder (hashed on the way) and recorded with the model. A spawn passes it
//! (`--mmproj`), and the one estimate counts it.

use std::path::Path;
use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use axum::http::StatusCode;
use model_catalog::{ModelEntry, ModelProjector};

use crate::error::ApiError;
use crate::ops::blocking;
use crate::state::SharedState;

fn bad(message: String) -> ApiError {
    ApiError::bad_request("invalid_projector", message)
}

/// What the projector at `path` is, checked against `model`.
fn check(path: &Path, model: &ModelEntry) -> Result<gguf::Projector, ApiError> {
    let file = fs_err::File::open(path)
        .map_err(|e| ApiError::not_found(format!("cannot open the projector: {e}")))?;
    let header = gguf::read(std::io::BufReader::new(file), &gguf::ReadOptions::default())
        .map_err(|e| bad(format!("{} is not a GGUF projector: {e}", path.display())))?;
    let summary = header.summary();
    let Some(projector) = summary.projector else {
        return Err(bad(format!(
            "{} is not a multimodal projector: its architecture is {}, not clip",
            path.display(),
            summary.architecture.as_deref().unwrap_or("not said")
        )));
    };
    if !projector.vision && !projector.audio {
        return Err(bad(format!(
            "{} has neither a vision nor an audio encoder",
            path.display()
        )));
    }
    if let Some(fault) = projector.image_fault() {
        return Err(bad(format!("{}: {fault}", path.display())));
    }
    let width = model.gguf.as_ref().and_then(|g| g.embedding_length);
    if let (Some(out), Some(width)) = (projector.projection_dim, width)
        && out != width
    {
        return Err(bad(format!(
            "{} gives embeddings {out} wide, and {} takes {width}: it is another model's projector",
            path.display(),
            model.id
        )));
    }
    if model
        .gguf
        .as_ref()
        .and_then(|g| g.projector.as_ref())
        .is_some()
    {
        return Err(bad(format!(
            "{} is itself a projector: pair a projector with a language model",
            model.id
        )));
    }
    Ok(projector)
}

/// Pairs the projector at `path` (absolute) with the model `id`, or unpairs it
/// (`None`); answers with the model.
pub async fn pair(
    state: &SharedState,
    id: &str,
    path: Option<String>,
) -> Result<ModelEntry, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    let id = id.to_owned();
    blocking(move || {
        let Some(record) = catalog.get(&id)? else {
            return Err(ApiError::not_found(format!(
                "model {id:?} is not in the catalog"
            )));
        };
        let mut entry = record.artifact;
        if entry.status != ArtifactStatus::Available {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "model_not_ready",
                format!("model {id:?} is not available"),
            ));
        }
        if let Some(base) = entry.derived_from() {
            return Err(bad(format!(
                "{id} is made over {base}: pair the projector with {base}"
            )));
        }
        let old = entry.projector.take();
        // only the hive's own copy goes; one adopted where it lies is another tool's
        let ours = |p: &Path| p.starts_with(catalog.models_dir());
        let Some(path) = path else {
            if let Some(old) = old
                && ours(&old.path)
            {
                let _ = fs_err::remove_file(&old.path);
            }
            return Ok(catalog.update(entry)?.artifact);
        };
        let source = Path::new(&path);
        if !source.is_absolute() {
            return Err(ApiError::bad_request(
                "invalid_path",
                format!("the path must be absolute, got {path:?}"),
            ));
        }
        let summary = check(source, &entry)?;
        let name = source.file_name().map_or_else(
            || "mmproj.gguf".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let dir = catalog.model_dir(&id)?;
        fs_err::create_dir_all(&dir).map_err(ApiError::internal)?;
        let target = dir.join(format!("mmproj-{}", name.trim_start_matches("mmproj-")));
        let partial = dir.join(".mmproj.partial");
        let (size, sha256) = {
            let mut from = fs_err::File::open(source).map_err(ApiError::internal)?;
            let mut to = fs_err::File::create(&partial).map_err(ApiError::internal)?;
            artifact_catalog::copy_hashing(&mut from, &mut to, &mut |_| {})
                .map_err(ApiError::internal)?
        };
        fs_err::rename(&partial, &target).map_err(ApiError::internal)?;
        if let Some(old) = old
            && old.path != target
            && ours(&old.path)
        {
            let _ = fs_err::remove_file(&old.path);
        }
        entry.projector = Some(ModelProjector {
            path: target,
            size,
            sha256,
            summary,
            source_url: None,
        });
        Ok(catalog.update(entry)?.artifact)
    })
    .await
}
