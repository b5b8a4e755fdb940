//! Which requests a model answers, by its kind ([`ModelKind`], from its GGUF): a
//! request of another kind is refused before any worker starts, in the route
//! family's shape, never sent to a worker that cannot answer it.

use axum::http::StatusCode;
use model_catalog::ModelEntry;

use super::GatewayError;
use crate::engines::ModelKind;

/// What a route asks of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// Chat, completions, Responses, Messages.
    Text,
    /// Embeddings.
    Embeddings,
    /// A ranking of documents against a query.
    Ranking,
}

impl Wants {
    /// What the worker route `path` (`/v1/embeddings`) asks for.
    pub fn of_route(path: &str) -> Self {
        match path {
            "/v1/embeddings" => Self::Embeddings,
            "/v1/rerank" => Self::Ranking,
            _ => Self::Text,
        }
    }
}

/// Refuses what `model`'s kind, as it is served ([`ModelKind::served`]: its GGUF's,
/// or its preset's mode), cannot answer.
pub fn check(model: &ModelEntry, wants: Wants) -> Result<(), GatewayError> {
    let kind = ModelKind::served(model.gguf.as_ref(), &model.preset.engine_args);
    let name = model.alias();
    let refusal = match (kind, wants) {
        (ModelKind::Rerank, Wants::Ranking)
        | (ModelKind::Embedding, Wants::Embeddings)
        | (ModelKind::Generation, Wants::Text) => return Ok(()),
        (ModelKind::Generation, Wants::Embeddings) => format!(
            "{name} is a language model: its worker makes no embeddings. Ask an embedding model, or start this one in llama.cpp's embedding mode: rbee models set {name} --engine-arg=--embeddings"
        ),
        (_, Wants::Ranking) => format!(
            "{name} is {}, not a reranker: /v1/rerank needs a GGUF with rank pooling (a reranker such as bge-reranker)",
            kind.name()
        ),
        (ModelKind::Rerank, _) => format!("{name} is a reranker: ask it at /v1/rerank"),
        (ModelKind::Embedding, _) => {
            format!("{name} is an embedding model: ask it at /v1/embeddings or /api/embed")
        }
    };
    Err(GatewayError::new(
        StatusCode::BAD_REQUEST,
        "wrong_model_kind",
        refusal,
    ))
}
