//! `/v1/models`.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiJson, accepted};
use crate::error::ApiError;
use crate::ops::dispatch::{self, Operation};
use crate::ops::models;
use crate::state::SharedState;

/// The routes.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1/models/download", post(download))
        .route("/v1/models/import", post(import))
        .route("/v1/models/verify", post(verify))
        .route("/v1/models/download-batch", post(download_batch))
        .route("/v1/models/push", post(push))
        .route("/v1/models/scan", post(scan))
        .route("/v1/models/plan", post(plan))
        .route("/v1/models/load", post(load))
        .route("/v1/models/unload", post(unload))
        .route("/v1/models/mmproj", post(mmproj))
        .route(
            "/v1/models/{*id}",
            get(get_one).delete(delete).patch(set_preset),
        )
}

/// What to download.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadBody {
    /// `hf:ORG/REPO[@REV][:QUANT | /path.gguf]`, `https://...` or `file:/...`.
    pub model_ref: String,
    /// The sha256 the file must have, 64 hex digits.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Leave out the multimodal projector that would come with the model.
    #[serde(default)]
    pub no_mmproj: bool,
}

/// Where else to look.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    /// More folders, absolute; the machine's own stores are always scanned.
    #[serde(default)]
    pub dirs: Vec<String>,
}

/// What to plan.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// A reference, as a download takes it.
    pub model_ref: String,
    /// The contexts (tokens) to work the memory out at; none: 2048, 8192, 32768 and
    /// 131072 below the model's own, and its own.
    #[serde(default)]
    pub contexts: Vec<u64>,
}

/// What to push, and where.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// The model's catalog id.
    pub id: String,
    /// `oci://HOST[:PORT]/REPO:TAG`.
    pub target: String,
}

/// What to import.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// An absolute path to a GGUF file on this machine.
    pub path: String,
}

/// A projector to pair with a model.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectorBody {
    /// The model's catalog id.
    pub id: String,
    /// An absolute path to its projector (`mmproj-*.gguf`) on this machine; `null`
    /// unpairs it.
    pub path: Option<String>,
}

/// Pairs a multimodal projector with a model (copied into the model's folder), or
/// unpairs it; the model as it is now.
#[utoipa::path(post, operation_id = "models_mmproj", path = "/v1/models/mmproj", tag = "models", request_body = ProjectorBody, responses((status = 200, description = "The model", body = Object), (status = 400, description = "Not a projector, or not this model's", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 404, description = "No such model or file", body = crate::error::ErrorBody), (status = 409, description = "The model is not available", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn mmproj(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<ProjectorBody>,
) -> Result<ApiJson<serde_json::Value>, ApiError> {
    let model = crate::ops::projector::pair(&state, &body.id, body.path).await?;
    Ok(ApiJson(serde_json::json!(model)))
}

/// A page of the catalog in OpenAI's list shape: OpenAI's clients read it as their
/// own model list, and each entry carries the catalog's fields beside `id`,
/// `object`, `created` and `owned_by`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The entries of this page, in id order.
    pub data: Vec<Value>,
}

/// Which page of the list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Entries to skip (default 0).
    #[serde(default)]
    offset: usize,
    /// Entries to return, 1 to 1000 (default 100).
    #[serde(default = "default_limit")]
    limit: usize,
    /// In a fleet: the peers' models too, after this page, each with `hive`, the
    /// hive that has it.
    #[serde(default)]
    fleet: bool,
}

fn default_limit() -> usize {
    100
}

/// The models in the catalog, in id order, downloading ones with their progress:
/// a page of them; `X-Total-Count` says how many there are, and `Link: rel="next"`
/// where the next page is.
#[utoipa::path(get, operation_id = "models_list", path = "/v1/models", tag = "models", params(Page), responses((status = 200, description = "Catalog entries, in OpenAI's list shape", body = ModelList), (status = 400, description = "Bad page", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<SharedState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    if page.limit == 0 || page.limit > models::MAX_PAGE {
        return Err(ApiError::bad_request(
            "bad_request",
            format!(
                "limit must be 1 to {}, got {}",
                models::MAX_PAGE,
                page.limit
            ),
        ));
    }
    let (mut body, total) = models::model_list_page(&state, page.offset, page.limit).await?;
    if page.fleet
        && let Some(fleet) = &state.fleet
    {
        body = with_peers(&body, fleet)?.into();
    }
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    r.headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    let next = page.offset.saturating_add(page.limit);
    if next < total
        && let Ok(v) = HeaderValue::from_str(&format!(
            "</v1/models?offset={next}&limit={}>; rel=\"next\"",
            page.limit
        ))
    {
        r.headers_mut().insert(header::LINK, v);
    }
    Ok(r)
}

/// A page of the list with the fleet's peers' models after it.
fn with_peers(page: &[u8], fleet: &crate::fleet::view::Fleet) -> Result<Vec<u8>, ApiError> {
    let mut list: Value =
        serde_json::from_slice(page).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(data) = list["data"].as_array_mut() {
        for peer in fleet.peers() {
            for m in &peer.models {
                let mut v = serde_json::to_value(m).unwrap_or_default();
                v["object"] = json!("model");
                v["hive"] = json!(peer.id);
                data.push(v);
            }
        }
    }
    serde_json::to_vec(&list).map_err(|e| ApiError::internal(e.to_string()))
}

/// What to add to one model.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Detail {
    /// Also every key of the GGUF header, read from the file now (arrays longer than
    /// 16 as their type and length), with the GGUF version and tensor count.
    #[serde(default)]
    metadata: bool,
}

/// One model.
#[utoipa::path(get, operation_id = "models_get_one", path = "/v1/models/{id}", tag = "models", params(("id" = String, Path, description = "The model id, URL-encoded"), Detail), responses((status = 200, description = "The entry", body = Object), (status = 400, description = "Bad query", body = crate::error::ErrorBody), (status = 404, description = "Not in the catalog", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    detail: Result<Query<Detail>, QueryRejection>,
) -> Result<ApiJson<Value>, ApiError> {
    let Query(detail) = detail.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let mut v = models::model_get(&state, &id).await?;
    if detail.metadata {
        v["header"] = models::header_of(&v).await;
    }
    Ok(ApiJson(v))
}

/// Changes how the model is run: its preset (context, slots, engine, engine_args,
/// alias, keep_alive_secs, pinned); `null` clears a field.
#[utoipa::path(patch, operation_id = "models_set_preset", path = "/v1/models/{id}", tag = "models", params(("id" = String, Path, description = "The model id, URL-encoded")), request_body = Object, responses((status = 200, description = "The model with its new preset", body = Object), (status = 400, description = "A bad field, or an engine not installed", body = crate::error::ErrorBody), (status = 404, description = "Not in the catalog", body = crate::error::ErrorBody), (status = 409, description = "The alias names another model", body = crate::error::ErrorBody)))]
pub async fn set_preset(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(
        crate::ops::presets::patch(&state, &id, body).await?,
    ))
}

/// Removes a model's entry and files.
#[utoipa::path(delete, operation_id = "models_delete", path = "/v1/models/{id}", tag = "models", params(("id" = String, Path, description = "The model id, URL-encoded")), responses((status = 200, description = "Removed", body = Object), (status = 404, description = "Not in the catalog", body = crate::error::ErrorBody), (status = 409, description = "Downloading or in use", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(models::model_delete(&state, &id).await?))
}

/// Starts downloading a model; a bad or unknown reference is answered at once.
#[utoipa::path(post, operation_id = "models_download", path = "/v1/models/download", tag = "models", request_body = DownloadBody, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Bad request", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 404, description = "No such repo, file or quant", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody), (status = 507, description = "It cannot fit on disk or in the quota, even after evicting what can go", body = crate::error::ErrorBody)))]
pub async fn download(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<DownloadBody>,
) -> Result<impl IntoResponse, ApiError> {
    let job = dispatch::start(
        &state,
        Operation::ModelDownload {
            model_ref: body.model_ref,
            sha256: body.sha256,
            no_mmproj: body.no_mmproj,
        },
    )
    .await?;
    Ok(accepted(&job))
}

/// Adopts the models the Hugging Face and llama.cpp caches, Ollama's store, LM
/// Studio's folder and `dirs` hold, where they lie, as a job whose result lists what
/// was added, updated, already known or gone, and what could not be read.
#[utoipa::path(post, operation_id = "models_scan", path = "/v1/models/scan", tag = "models", request_body = ScanBody, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "A folder that is not there", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn scan(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<ScanBody>,
) -> Result<impl IntoResponse, ApiError> {
    let job = dispatch::start(&state, Operation::ModelScan { dirs: body.dirs }).await?;
    Ok(accepted(&job))
}

/// The fit check of a reference, from its remote GGUF header alone (a few MiB read
/// with `Range` requests): architecture, parameters, quantization, context, size
/// over every shard, disk needed against the free space and the quota (with the
/// models a pull would evict), memory by context against RAM and each GPU, and the
/// installed engines that run it. Nothing is fetched or recorded.
#[utoipa::path(post, operation_id = "models_plan", path = "/v1/models/plan", tag = "models", request_body = PlanBody, responses((status = 200, description = "The plan", body = Object), (status = 400, description = "Bad reference, or not a GGUF file", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 404, description = "No such repo, file or quant", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody), (status = 502, description = "The model's server did not answer as one should", body = crate::error::ErrorBody), (status = 504, description = "It took too long", body = crate::error::ErrorBody)))]
pub async fn plan(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<PlanBody>,
) -> Result<ApiJson<serde_json::Value>, ApiError> {
    Ok(ApiJson(
        crate::ops::plan::plan(&state, &body.model_ref, &body.contexts).await?,
    ))
}

/// Pushes an available model to an OCI registry as a ModelPack artifact, as a job
/// whose result names the manifest's digest.
#[utoipa::path(post, operation_id = "models_push", path = "/v1/models/push", tag = "models", request_body = PushBody, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Bad target", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 404, description = "Not in the catalog", body = crate::error::ErrorBody), (status = 409, description = "Not available", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn push(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<PushBody>,
) -> Result<impl IntoResponse, ApiError> {
    let job = dispatch::start(
        &state,
        Operation::ModelPush {
            id: body.id,
            target: body.target,
        },
    )
    .await?;
    Ok(accepted(&job))
}

/// Makes sure a ready worker serves the model (spawns one, pulling the model first if
/// it is a reference not in the catalog), as a job whose result is the worker.
#[utoipa::path(post, operation_id = "models_load", path = "/v1/models/load", tag = "models", request_body = crate::ops::workers::LoadRequest, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Bad request", body = crate::error::ErrorBody), (status = 404, description = "Unknown model or no worker binary", body = crate::error::ErrorBody), (status = 409, description = "Model not available, or not enough memory", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn load(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<crate::ops::workers::LoadRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let job = crate::ops::workers::start_load(&state, body).await?;
    Ok(accepted(&job))
}

/// What to download, several at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadBatchBody {
    /// The references, 1 to 100.
    pub model_refs: Vec<String>,
}

/// Downloads several models: one parent job whose narration names each child job,
/// and whose result lists each outcome; one failure does not stop the others.
#[utoipa::path(post, operation_id = "models_download_batch", path = "/v1/models/download-batch", tag = "models", request_body = DownloadBatchBody, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Empty or too big", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn download_batch(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<DownloadBatchBody>,
) -> Result<impl IntoResponse, ApiError> {
    let op = Operation::ModelDownloadBatch {
        model_refs: body.model_refs,
    };
    let job = dispatch::start(&state, op).await?;
    Ok(accepted(&job))
}

/// Which model to unload.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnloadBody {
    /// The model's catalog id.
    pub id: String,
}

/// Stops every worker serving the model.
#[utoipa::path(post, operation_id = "models_unload", path = "/v1/models/unload", tag = "models", request_body = UnloadBody, responses((status = 200, description = "The stopped workers", body = Object), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn unload(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<UnloadBody>,
) -> Result<ApiJson<Value>, ApiError> {
    crate::ops::workers::unload(&state, &body.id)
        .await
        .map(ApiJson)
}

/// What to check.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// Hash every file again (slow: reads every byte).
    #[serde(default)]
    pub rehash: bool,
}

/// Checks every available model's files; problems mark the model failed.
#[utoipa::path(post, operation_id = "models_verify", path = "/v1/models/verify", tag = "models", request_body = VerifyBody, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn verify(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let job = dispatch::start(
        &state,
        Operation::ModelVerify {
            rehash: body.rehash,
        },
    )
    .await?;
    Ok(accepted(&job))
}

/// Registers a local GGUF file (hard link, else copy).
#[utoipa::path(post, operation_id = "models_import", path = "/v1/models/import", tag = "models", request_body = ImportBody, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Bad request", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 404, description = "No such file", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn import(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<impl IntoResponse, ApiError> {
    let job = dispatch::start(&state, Operation::ModelImport { path: body.path }).await?;
    Ok(accepted(&job))
}
