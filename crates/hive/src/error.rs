//! The one error type of the HTTP layer.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model_provisioner::ProvisionError;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

// The shapes errors are answered in, for the OpenAPI document.

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A short machine-readable code, such as `not_found`.
    pub code: String,
    /// What was wrong, for people.
    pub message: String,
}

/// An error on Ollama's routes, in Ollama's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct OllamaErrorBody {
    /// What went wrong.
    pub error: String,
}

/// An error answered as `{"error": {"code", "message"}}` with its status. A 4xx says
/// exactly what was wrong with the request; a 5xx is logged in full and answered
/// with a short message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500, logged here in full.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error: {e}"),
        )
    }

    /// The status.
    pub fn status_code(&self) -> StatusCode {
        self.status
    }

    /// (code, message), for a job's error event.
    pub fn parts(self) -> (&'static str, String) {
        (self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// Whether a path is one of OpenAI's (`/openai/v1/...`, and the gateway's routes at
/// `/v1`): its errors come in OpenAI's shape.
fn is_openai_path(path: &str) -> bool {
    path.starts_with("/openai/")
        || matches!(
            path,
            "/v1/chat/completions"
                | "/v1/completions"
                | "/v1/embeddings"
                | "/v1/responses"
                | "/v1/rerank"
                | "/rerank"
        )
}

/// An error in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`.
pub fn anthropic_error(status: StatusCode, message: &str) -> serde_json::Value {
    json!({"type": "error", "error": {"type": anthropic_type(status), "message": message}})
}

/// Anthropic's error type for a status.
fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// A request refused at the edge (host, origin, media type, token) in the shape its
/// route family answers errors in: Ollama's `{"error": "..."}` under `/api/`,
/// OpenAI's under `/openai/`, the hive's own elsewhere.
pub fn refusal(path: &str, status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = if path.starts_with("/api/") {
        json!({ "error": message })
    } else if path.starts_with("/v1/messages") {
        anthropic_error(status, message)
    } else if is_openai_path(path) {
        let kind = if status == StatusCode::UNAUTHORIZED {
            "authentication_error"
        } else {
            "invalid_request_error"
        };
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    } else {
        json!({"error": {"code": code, "message": message}})
    };
    (status, Json(body)).into_response()
}

impl From<ProvisionError> for ApiError {
    fn from(e: ProvisionError) -> Self {
        let status = match &e {
            ProvisionError::NotFound(_) => StatusCode::NOT_FOUND,
            ProvisionError::Unauthorized(_) => StatusCode::FORBIDDEN,
            ProvisionError::Offline(_) => StatusCode::SERVICE_UNAVAILABLE,
            e if e.is_client_error() => StatusCode::BAD_REQUEST,
            ProvisionError::Download { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<artifact_catalog::CatalogError> for ApiError {
    fn from(e: artifact_catalog::CatalogError) -> Self {
        use artifact_catalog::CatalogError as C;
        match e {
            C::NotFound { .. } => Self::not_found(e.to_string()),
            C::AlreadyExists { .. } | C::SourceExists { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            C::InvalidId { .. } => Self::bad_request("invalid_id", e.to_string()),
            e => Self::internal(e),
        }
    }
}
