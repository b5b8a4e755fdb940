//! What a request's `model` names: a catalog id, or an alias in Ollama's
//! `name:tag` form derived from the model's repository (or file) and quantization,
//! `smollm2-135m-instruct:q4_k_m`. A name without a tag matches when one model has it.

use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use axum::http::StatusCode;
use model_catalog::ModelEntry;

use super::GatewayError;
use crate::ops::blocking;
use crate::state::SharedState;

/// The alias of a model: its preset's, else `<repository or file, lowercase, without
/// -GGUF>:<quant>`.
pub fn alias_of(entry: &ModelEntry) -> String {
    if let Some(a) = &entry.preset.alias {
        return a.clone();
    }
    let file = entry
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&entry.id);
    alias(
        &entry.reference,
        file,
        entry.gguf.as_ref().and_then(|g| g.quantization.as_deref()),
    )
}

/// The alias of a model of this reference, file name and quantization.
pub fn alias(reference: &str, file_name: &str, quant: Option<&str>) -> String {
    let base = repository(reference)
        .unwrap_or_else(|| file_name.strip_suffix(".gguf").unwrap_or(file_name))
        .to_ascii_lowercase();
    let mut stem = base.as_str();
    for suffix in ["-gguf", "_gguf", ".gguf"] {
        stem = stem.strip_suffix(suffix).unwrap_or(stem);
    }
    let tag = quant.map_or_else(|| "latest".to_owned(), str::to_ascii_lowercase);
    // a file named after its quant (`smollm2-135m-instruct.q4_1`) keeps it once
    for sep in ['.', '-', '_'] {
        if let Some(s) = stem.strip_suffix(&format!("{sep}{tag}")) {
            stem = s;
        }
    }
    format!("{stem}:{tag}")
}

/// The repository's name of an `hf:ORG/REPO...` reference.
fn repository(reference: &str) -> Option<&str> {
    let rest = reference.strip_prefix("hf:")?;
    let repo = rest.split([':', '@']).next()?;
    repo.split('/').nth(1)
}

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
        if let Some(e) = all.iter().find(|e| alias_of(e) == lower) {
            return Ok(Some(e.clone()));
        }
        // `name` alone, or Ollama's default tag, when one model has that name
        let bare = lower.strip_suffix(":latest").unwrap_or(&lower);
        let mut same = all
            .iter()
            .filter(|e| alias_of(e).split(':').next() == Some(bare));
        match (same.next(), same.next()) {
            (Some(e), None) => Ok(Some(e.clone())),
            _ => Ok(None),
        }
    })
    .await
    .map_err(GatewayError::from)?;
    let Some(entry) = found else {
        return Err(GatewayError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("model {name:?} is not in this hive's catalog (pull it first)"),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        assert_eq!(
            alias(
                "hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M",
                "SmolLM2-135M-Instruct-Q4_K_M.gguf",
                Some("Q4_K_M")
            ),
            "smollm2-135m-instruct:q4_k_m"
        );
        assert_eq!(
            alias(
                "file:/data/SmolLM2-135M-Instruct.Q4_1.gguf",
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                Some("Q4_1")
            ),
            "smollm2-135m-instruct:q4_1"
        );
        assert_eq!(
            alias("file:/data/gemma.gguf", "gemma.gguf", None),
            "gemma:latest"
        );
    }
}
