//! OpenAI-compatible routes under one base URL, `/openai/v1`: `GET /models`,
//! `POST /chat/completions`, `/completions` and `/embeddings`; the last three also at
//! `/v1`, where OpenAI's clients look by default. `model` names a
//! catalog id or an alias; streams pass through as the worker sends them. Errors are
//! OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use worker_catalog::Engine;

use super::SharedGateway;
use super::{GatewayError, ensure_worker, names, proxy};

/// The routes.
pub fn router() -> Router<SharedGateway> {
    Router::new()
        .route("/openai/v1/models", get(models))
        .route("/openai/v1/chat/completions", post(chat))
        .route("/openai/v1/completions", post(completions))
        .route("/openai/v1/embeddings", post(embeddings))
        .route("/openai/v1/responses", post(responses))
        .route("/openai/v1/rerank", post(rerank))
        // at the path OpenAI's clients, Ollama, LM Studio and llama-server use
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses))
        // Jina's and Cohere's shape, at the paths llama-server serves it
        .route("/v1/rerank", post(rerank))
        .route("/rerank", post(rerank))
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let mut r = (
            self.status,
            axum::Json(json!({"error": {
                "message": self.message,
                "type": kind,
                "param": null,
                "code": self.code,
            }})),
        )
            .into_response();
        super::retry_after(&mut r);
        r
    }
}

/// Every available model, by alias (`rbee_id` is its catalog id; both name it); in
/// a fleet, the peers' models after this hive's (`rbee_hive` names the hive).
#[utoipa::path(get, operation_id = "openai_models", path = "/openai/v1/models", tag = "openai", responses((status = 200, description = "The available models, in OpenAI's list", body = Object)))]
pub(crate) async fn models(State(state): State<SharedGateway>) -> Result<Response, GatewayError> {
    let catalog = std::sync::Arc::clone(&state.hive.catalog);
    let list = crate::ops::blocking(move || Ok(catalog.list()?))
        .await
        .map_err(GatewayError::from)?;
    let by_id: std::collections::HashMap<&str, &model_catalog::ModelEntry> = list
        .iter()
        .map(|r| (r.artifact.id.as_str(), &r.artifact))
        .collect();
    let data: Vec<Value> = list
        .iter()
        .filter(|r| r.artifact.status == artifact_catalog::ArtifactStatus::Available)
        .map(|r| {
            json!({
                "id": r.artifact.alias(),
                "object": "model",
                "created": r.added_at.timestamp(),
                "owned_by": "rbee-hive",
                "rbee_id": r.artifact.id,
                "capabilities": crate::ops::derived::capabilities(&r.artifact, |b| by_id.get(b).copied()),
            })
        })
        .collect();
    let mut data = data;
    // in a fleet, the peers' models too, each once, with the hive that has it
    if let Some(fleet) = &state.hive.fleet {
        for peer in fleet.peers() {
            for m in &peer.models {
                if !data.iter().any(|d| d["id"] == m.alias.as_str()) {
                    data.push(json!({
                        "id": m.alias,
                        "object": "model",
                        "created": 0,
                        "owned_by": "rbee-hive",
                        "rbee_id": m.id,
                        "rbee_hive": peer.id,
                    }));
                }
            }
        }
    }
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

/// A JSON object body with a string `model`, or a 400 that says what is wrong.
pub(super) fn parse_body(bytes: &[u8]) -> Result<(Value, String), GatewayError> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| {
        GatewayError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not JSON: {e}"),
        )
    })?;
    if !body.is_object() {
        return Err(GatewayError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    let model = match &body["model"] {
        Value::String(m) => m.clone(),
        Value::Null => {
            return Err(GatewayError::new(
                StatusCode::BAD_REQUEST,
                "invalid_model",
                "the body needs `model`: a catalog id or an alias (GET /openai/v1/models)",
            ));
        }
        other => {
            return Err(GatewayError::new(
                StatusCode::BAD_REQUEST,
                "invalid_model",
                format!("`model` must be a string, got {other}"),
            ));
        }
    };
    Ok((body, model))
}

/// What a worker route is, when only llama.cpp's server has it.
fn only_llama_serves(path: &str) -> Option<&'static str> {
    match path {
        "/v1/embeddings" => Some("embeddings"),
        "/v1/responses" => Some("Responses API"),
        "/v1/rerank" => Some("reranking"),
        "/v1/messages" | "/v1/messages/count_tokens" => Some("Anthropic Messages API"),
        _ => None,
    }
}

/// Resolves, loads, and forwards to the worker's own route of the same name.
pub(super) async fn forward(
    state: SharedGateway,
    bytes: Result<Bytes, BytesRejection>,
    path: &str,
) -> Result<Response, GatewayError> {
    let (mut body, name) = parse_body(&bytes?)?;
    if let Some(stream) = body.get("stream")
        && !stream.is_boolean()
        && !stream.is_null()
    {
        return Err(GatewayError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("`stream` must be true or false, got {stream}"),
        ));
    }
    super::fields::check_numbers(&body)
        .map_err(|m| GatewayError::new(StatusCode::BAD_REQUEST, "invalid_body", m))?;
    let remote = state.remote_images.is_some();
    let images = if path.starts_with("/v1/messages") {
        super::images::in_anthropic(&body, remote)?
    } else {
        super::images::in_openai(&body, remote)?
    };
    let model = names::resolve(&state, &name).await?;
    super::kinds::check(&model, super::kinds::Wants::of_route(path))?;
    super::images::check(&model, images)?;
    if images > 0
        && let Some((scope, client)) = &state.remote_images
    {
        super::image_fetch::inline(client, *scope, &mut body).await?;
    }
    let ticket = super::queue::enter(&state, &model)?;
    let worker = ensure_worker(&state, &model, None).await?;
    let what = if images > 0 {
        Some("vision")
    } else {
        only_llama_serves(path)
    };
    if worker.engine == Engine::Rbee
        && let Some(what) = what
    {
        return Err(GatewayError::new(
            StatusCode::BAD_REQUEST,
            "unsupported",
            format!(
                "llm-worker-rbee has no {what}; llama.cpp's server does (rbee models set {} --engine llama.cpp)",
                model.alias()
            ),
        ));
    }
    body["model"] = json!(model.id);
    super::defaults::apply(&model.preset, path, &mut body);
    let upstream = proxy::post(&state, &worker, path, &body, ticket).await?;
    let status = upstream.status;
    let content_type = upstream
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".to_owned());
    let streaming = content_type.starts_with("text/event-stream");
    let stream = upstream.bytes().map_ok_or_error_event(streaming);
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .map_err(|e| {
            GatewayError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })
}

/// A byte stream whose failure becomes, in a server-sent-event stream, a last
/// `data: {"error": ...}` event (so the client sees why it ended), and otherwise an
/// error that cuts the body.
trait ErrorEvent {
    fn map_ok_or_error_event(
        self,
        sse: bool,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send;
}

impl<S> ErrorEvent for S
where
    S: futures_util::Stream<Item = Result<Bytes, String>> + Send,
{
    fn map_ok_or_error_event(
        self,
        sse: bool,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        use futures_util::StreamExt as _;
        self.map(move |chunk| match chunk {
            Ok(b) => Ok(b),
            Err(e) if sse => {
                let event = json!({"error": {"message": e, "type": "server_error", "code": "worker_failed"}});
                Ok(Bytes::from(format!("data: {event}\n\n")))
            }
            Err(e) => Err(std::io::Error::other(e)),
        })
    }
}

#[utoipa::path(post, operation_id = "openai_chat", path = "/openai/v1/chat/completions", tag = "openai", request_body = Object, responses((status = 200, description = "The answer, whole or as server-sent events", content((Object = "application/json"), (Object = "text/event-stream"))), (status = 404, description = "No such model", body = crate::error::ErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::ErrorBody)))]
pub(crate) async fn chat(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    forward(state, body, "/v1/chat/completions").await
}

#[utoipa::path(post, operation_id = "openai_completions", path = "/openai/v1/completions", tag = "openai", request_body = Object, responses((status = 200, description = "The answer, whole or as server-sent events", content((Object = "application/json"), (Object = "text/event-stream"))), (status = 404, description = "No such model", body = crate::error::ErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::ErrorBody)))]
pub(crate) async fn completions(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    forward(state, body, "/v1/completions").await
}

#[utoipa::path(post, operation_id = "openai_embeddings", path = "/openai/v1/embeddings", tag = "openai", request_body = Object, responses((status = 200, description = "Embeddings", body = Object), (status = 404, description = "No such model", body = crate::error::ErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::ErrorBody)))]
pub(crate) async fn embeddings(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    forward(state, body, "/v1/embeddings").await
}

#[utoipa::path(post, operation_id = "openai_responses", path = "/v1/responses", tag = "openai", request_body = Object, responses((status = 200, description = "The response, whole or as server-sent events (llama.cpp's engine)", content((Object = "application/json"), (Object = "text/event-stream"))), (status = 400, description = "The model's engine has no Responses API", body = crate::error::ErrorBody), (status = 404, description = "No such model", body = crate::error::ErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::ErrorBody)))]
pub(crate) async fn responses(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    forward(state, body, "/v1/responses").await
}

#[utoipa::path(post, operation_id = "rerank", path = "/v1/rerank", tag = "openai", request_body = Object, responses((status = 200, description = "Each document's relevance to the query (Jina's and Cohere's shape)", body = Object), (status = 400, description = "No query or documents, or the model is no reranker", body = crate::error::ErrorBody), (status = 404, description = "No such model", body = crate::error::ErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::ErrorBody)))]
pub(crate) async fn rerank(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    let bytes = body?;
    let (body, _) = parse_body(&bytes)?;
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let documents = body.get("documents").and_then(Value::as_array);
    if query.is_empty() || documents.is_none_or(Vec::is_empty) {
        return Err(GatewayError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "a rerank needs `query` (a string) and `documents` (a non-empty list)",
        ));
    }
    forward(state, Ok(bytes), "/v1/rerank").await
}
