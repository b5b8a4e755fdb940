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
        routes::models::set_preset,
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
    modifiers(&BearerAuth, &CommonResponses),
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

/// The answers every route can give, added to each operation that lacks them: 400
/// for a malformed parameter, 401 for a missing or wrong token (every route but
/// `/health`), and for a request body 413 (too large), 415 (not JSON) and 422 (JSON
/// of the wrong shape).
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let mut common = vec![("400", "Malformed request")];
                if path != "/health" {
                    common.push(("401", "Missing or wrong token"));
                }
                if op.request_body.is_some() {
                    common.extend([
                        ("413", "Body too large"),
                        ("415", "The body is not JSON"),
                        ("422", "JSON of the wrong shape"),
                    ]);
                }
                for (code, description) in common {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// The API's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`.
#[utoipa::path(get, operation_id = "openapi_document", path = "/openapi.json", tag = "system", responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
