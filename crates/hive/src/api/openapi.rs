//! `/openapi.json`, generated from the handlers' own annotations.

use axum::Json;
use utoipa::OpenApi;

use super::Accepted;
use crate::error::{ErrorBody, ErrorDetail, OllamaErrorBody};

#[derive(OpenApi)]
#[openapi(
    info(title = "rbee-hive", description = "The per-machine daemon of rbee: models, worker binaries, workers, jobs, metrics."),
    paths(
        super::system::health,
        super::system::capabilities,
        super::system::audit,
        super::system::storage,
        super::fleet::fleet,
        super::system::gc,
        super::system::repair,
        super::models::list,
        super::models::get_one,
        super::models::delete,
        super::models::set_preset,
        super::models::download,
        super::models::import,
        super::models::mmproj,
        super::models::verify,
        super::models::download_batch,
        super::models::push,
        super::models::scan,
        super::models::plan,
        super::models::load,
        super::models::unload,
        super::jobs::list,
        super::jobs::create,
        super::jobs::get_one,
        super::jobs::cancel,
        super::jobs::stream_events,
        super::workers::list,
        super::workers::get_one,
        super::workers::spawn,
        super::workers::spawn_batch,
        super::workers::stop,
        super::workers::heartbeat,
        super::workers::logs,
        super::workers::binaries,
        super::workers::binary,
        super::workers::install,
        super::workers::remove_binary,
        super::workers::heartbeats,
        super::metrics::render,
        document,
        crate::gateway::openai::models,
        crate::gateway::openai::chat,
        crate::gateway::openai::completions,
        crate::gateway::openai::embeddings,
        crate::gateway::openai::responses,
        crate::gateway::openai::rerank,
        crate::gateway::anthropic::messages,
        crate::gateway::anthropic::count_tokens,
        crate::gateway::ollama::version,
        crate::gateway::ollama::tags,
        crate::gateway::ollama::ps,
        crate::gateway::ollama::show,
        crate::gateway::ollama::chat,
        crate::gateway::ollama::generate,
        crate::gateway::ollama::embed,
        crate::gateway::ollama::embeddings,
        crate::gateway::ollama::delete,
        crate::gateway::ollama::pull,
        crate::gateway::modelfile::create,
        crate::gateway::modelfile::copy,
    ),
    components(schemas(ErrorBody, ErrorDetail, OllamaErrorBody, Accepted, crate::ops::dispatch::Operation, super::models::DownloadBody, super::models::ImportBody, super::models::ProjectorBody, super::models::VerifyBody, super::models::UnloadBody, super::models::DownloadBatchBody, super::models::PushBody, super::models::ScanBody, super::models::PlanBody, super::models::ModelList, super::system::GcBody, super::workers::SpawnBatchBody, crate::ops::workers::LoadRequest, crate::ops::workers::SpawnRequest, crate::ops::binaries::InstallRequest)),
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
        // each route family answers errors in its own shape
        let error = |path: &str, description: &str| {
            let schema = if path.starts_with("/api/") {
                "OllamaErrorBody"
            } else {
                "ErrorBody"
            };
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name(schema))),
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
                let mut common = vec![
                    ("400", "Malformed request"),
                    ("403", "A foreign Host or web origin"),
                ];
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
                        .or_insert_with(|| error(path, description).into());
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
