//! `/v1/models`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::ops::{self, Operation};
use crate::routes::ApiJson;
use crate::state::SharedState;

/// The routes.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1/models/download", post(download))
        .route("/v1/models/import", post(import))
        .route("/v1/models/{*id}", get(get_one).delete(delete))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadBody {
    model_ref: String,
    #[serde(default)]
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    path: String,
}

/// `202 {"job_id", "stream_url"}`.
pub fn accepted(job: &crate::jobs::Job) -> impl IntoResponse + use<> {
    let id = job.info().job_id;
    (
        StatusCode::ACCEPTED,
        ApiJson(json!({"job_id": id, "stream_url": format!("/v1/jobs/{id}/stream")})),
    )
}

async fn list(State(state): State<SharedState>) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(ops::model_list(&state).await?))
}

async fn get_one(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(ops::model_get(&state, &id).await?))
}

async fn delete(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(ops::model_delete(&state, &id).await?))
}

async fn download(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<DownloadBody>,
) -> Result<impl IntoResponse, ApiError> {
    let job = ops::start(
        &state,
        Operation::ModelDownload {
            model_ref: body.model_ref,
            sha256: body.sha256,
        },
    )
    .await?;
    Ok(accepted(&job))
}

async fn import(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<impl IntoResponse, ApiError> {
    let job = ops::start(&state, Operation::ModelImport { path: body.path }).await?;
    Ok(accepted(&job))
}
