//! The HTTP API: one module of handlers per resource, the OpenAPI document, and the
//! auth middleware. The one endpoint's routes are the gateway's.

pub mod audit;
pub mod auth;
pub mod fleet;
pub mod guard;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod plain_errors;
pub mod system;
pub mod workers;

use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// The most a request body to the hive's own API may be (the one endpoint takes
/// longer ones: [`crate::gateway::MAX_BODY`]).
pub const MAX_BODY: usize = 1 << 20;

/// A JSON body whose rejection is a JSON error saying what was wrong.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        Self::new(r.status(), "bad_request", r.body_text())
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A started job: `202 {"job_id", "stream_url"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The job's id.
    pub job_id: String,
    /// Where its SSE events are.
    pub stream_url: String,
}

/// The 202 that answers a request that started a job.
pub fn accepted(job: &crate::jobs::Job) -> impl IntoResponse + use<> {
    let job_id = job.info().job_id;
    let stream_url = format!("/v1/jobs/{job_id}/stream");
    (
        StatusCode::ACCEPTED,
        ApiJson(Accepted { job_id, stream_url }),
    )
}
