//! `/openapi.json`, generated from the handlers' own annotations.

use axum::Json;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::routes;

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

/// A started job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The job's id.
    pub job_id: String,
    /// Where its SSE events are.
    pub stream_url: String,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "rbee-hive", description = "The per-machine daemon of rbee: models, worker binaries, workers, jobs, metrics."),
    paths(
        routes::system::health,
        routes::system::capabilities,
        routes::system::audit,
        routes::models::list,
        routes::models::get_one,
        routes::models::delete,
        routes::models::download,
        routes::models::import,
        routes::models::verify,
        routes::models::download_batch,
        routes::models::load,
        routes::models::unload,
        routes::jobs::list,
        routes::jobs::create,
        routes::jobs::get_one,
        routes::jobs::cancel,
        routes::jobs::stream_events,
        routes::workers::list,
        routes::workers::get_one,
        routes::workers::spawn,
        routes::workers::spawn_batch,
        routes::workers::stop,
        routes::workers::heartbeat,
        routes::workers::logs,
        routes::workers::binaries,
        routes::workers::binary,
        routes::workers::install,
        routes::workers::remove_binary,
        routes::workers::heartbeats,
        crate::metrics::render,
        document,
    ),
    components(schemas(ErrorBody, ErrorDetail, Accepted, crate::ops::Operation, routes::models::DownloadBody, routes::models::ImportBody, routes::models::VerifyBody, routes::models::UnloadBody, routes::models::DownloadBatchBody, routes::workers::SpawnBatchBody, crate::worker_ops::LoadRequest, crate::worker_ops::SpawnRequest, crate::worker_ops::InstallRequest)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "This document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
