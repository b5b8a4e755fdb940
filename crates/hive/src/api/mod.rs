//! The HTTP API: one module of handlers per resource, the OpenAPI document, and the
//! auth middleware. The one endpoint's routes are the gateway's.

pub mod auth;
pub mod guard;
pub mod jobs;
pub mod models;
pub mod openapi;
pub mod system;
pub mod workers;

use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;

use crate::error::ApiError;

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
