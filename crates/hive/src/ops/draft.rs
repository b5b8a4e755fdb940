//! A model's draft (speculative decoding): another catalog model, never a path, that
//! proposes tokens the model then checks. It must speak the same vocabulary: the
//! same tokenizer, the same number of tokens, and the same tokens, compared by a
//! sha256 over every token of both headers. What it needs in memory beside the model
//! is measured by the one estimate, at the model's context.

use std::path::Path;
use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use axum::http::StatusCode;
use model_catalog::ModelEntry;
use sha2::{Digest as _, Sha256};

use crate::engines::memory;
use crate::error::ApiError;
use crate::ops::blocking;
use crate::state::SharedState;

/// A model's vocabulary, as its GGUF header has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vocabulary {
    /// `tokenizer.ggml.model`.
    tokenizer: Option<String>,
    /// How many tokens.
    size: u64,
    /// sha256 over every token, each followed by a NUL.
    digest: String,
}

fn vocabulary(path: &Path) -> Result<Vocabulary, String> {
    let file = fs_err::File::open(path).map_err(|e| e.to_string())?;
    let g = gguf::read(std::io::BufReader::new(file), &gguf::ReadOptions::full())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tokens = g
        .get("tokenizer.ggml.tokens")
        .and_then(gguf::Value::as_array)
        .and_then(|a| a.values.as_ref())
        .ok_or_else(|| format!("{} has no tokenizer.ggml.tokens", path.display()))?;
    let mut hash = Sha256::new();
    for t in tokens {
        hash.update(t.as_str().unwrap_or_default().as_bytes());
        hash.update([0]);
    }
    Ok(Vocabulary {
        tokenizer: g
            .get("tokenizer.ggml.model")
            .and_then(gguf::Value::as_str)
            .map(str::to_owned),
        size: tokens.len() as u64,
        digest: hex::encode(hash.finalize()),
    })
}

fn refuse(message: String) -> ApiError {
    ApiError::bad_request("invalid_draft", message)
}

/// The draft `target`'s preset names, checked: in the catalog (by id or alias),
/// available, not the model itself, a language model with the same vocabulary.
/// Answers its id and what it needs in memory at the target's context.
pub async fn check(state: &SharedState, target: &ModelEntry) -> Result<(String, u64), ApiError> {
    let Some(name) = target.preset.draft.clone() else {
        return Err(refuse("no draft named".into()));
    };
    let catalog = Arc::clone(&state.catalog);
    let wanted = name.clone();
    let draft = blocking(move || {
        if let Some(r) = catalog.get(&wanted)? {
            return Ok(Some(r.artifact));
        }
        let lower = wanted.to_ascii_lowercase();
        Ok(catalog
            .list()?
            .into_iter()
            .map(|r| r.artifact)
            .find(|m| m.alias() == lower || m.alias() == format!("{lower}:latest")))
    })
    .await?
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "draft_not_found",
            format!("draft {name:?} is not a model in the catalog (a draft is a catalog model's id or alias, never a path)"),
        )
    })?;
    if draft.id == target.id {
        return Err(refuse(format!("{} cannot be its own draft", target.id)));
    }
    if draft.status != ArtifactStatus::Available {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "draft_not_ready",
            format!("draft {} is not available: {:?}", draft.id, draft.status),
        ));
    }
    if crate::engines::ModelKind::of(draft.gguf.as_ref()) != crate::engines::ModelKind::Generation {
        return Err(refuse(format!(
            "draft {} is not a language model",
            draft.id
        )));
    }
    let (target_path, draft_path) = (target.path.clone(), draft.path.clone());
    let (mine, theirs) =
        blocking(move || Ok((vocabulary(&target_path), vocabulary(&draft_path)))).await?;
    let mine = mine.map_err(|e| refuse(format!("cannot read the model's vocabulary: {e}")))?;
    let theirs = theirs.map_err(|e| refuse(format!("cannot read the draft's vocabulary: {e}")))?;
    if mine != theirs {
        return Err(refuse(format!(
            "draft {} speaks another vocabulary: {} tokens ({}) against the model's {} ({}){}",
            draft.id,
            theirs.size,
            theirs.tokenizer.as_deref().unwrap_or("?"),
            mine.size,
            mine.tokenizer.as_deref().unwrap_or("?"),
            if mine.size == theirs.size {
                ", and the tokens differ"
            } else {
                ""
            }
        )));
    }
    let bytes =
        memory::footprint(draft.gguf.as_ref(), draft.size, memory::context_for(target)).total_bytes;
    Ok((draft.id, bytes))
}
