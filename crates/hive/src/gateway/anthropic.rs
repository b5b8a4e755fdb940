//! Anthropic's Messages API on the one endpoint: `POST /v1/messages` (system prompts,
//! turns, `max_tokens`, `stop_sequences`, tools and tool results, streaming in
//! Anthropic's event sequence) and `POST /v1/messages/count_tokens`, passed to
//! llama.cpp's server, which speaks it; our own worker does not, and says so with a
//! 400. `model` names a catalog id or an alias; the hive's token may come as
//! `x-api-key`, as Anthropic's clients send it. Errors are Anthropic's shape,
//! `{"type": "error", "error": {"type", "message"}}`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{GatewayError, SharedGateway};

/// The routes.
pub fn router() -> Router<SharedGateway> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// An error in Anthropic's shape.
#[derive(Debug)]
pub struct AnthropicError(pub GatewayError);

impl From<GatewayError> for AnthropicError {
    fn from(e: GatewayError) -> Self {
        Self(e)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut r = (
            e.status,
            axum::Json(crate::error::anthropic_error(e.status, &e.message)),
        )
            .into_response();
        super::retry_after(&mut r);
        r
    }
}

#[utoipa::path(post, operation_id = "anthropic_messages", path = "/v1/messages", tag = "anthropic", request_body = Object, responses((status = 200, description = "The message, whole or as Anthropic's server-sent events", content((Object = "application/json"), (Object = "text/event-stream"))), (status = 400, description = "Bad request, or the model's engine has no Messages API", body = Object), (status = 404, description = "No such model", body = Object), (status = 429, description = "The model's queue is full", body = Object)))]
pub(crate) async fn messages(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    Ok(super::openai::forward(state, body, "/v1/messages").await?)
}

#[utoipa::path(post, operation_id = "anthropic_count_tokens", path = "/v1/messages/count_tokens", tag = "anthropic", request_body = Object, responses((status = 200, description = "`{\"input_tokens\": N}`", body = Object), (status = 400, description = "Bad request, or the model's engine has no Messages API", body = Object), (status = 404, description = "No such model", body = Object)))]
pub(crate) async fn count_tokens(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    Ok(super::openai::forward(state, body, "/v1/messages/count_tokens").await?)
}
