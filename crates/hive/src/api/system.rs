//! `/health` and `/v1/capabilities`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::api::ApiJson;
use crate::error::ApiError;
use crate::state::SharedState;

/// The routes.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/health", get(health))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/audit", get(audit))
        .route("/v1/storage", get(storage))
        .route("/v1/hive/gc", axum::routing::post(gc))
        .route("/v1/hive/repair", axum::routing::post(repair))
}

/// Repairs a damaged catalog: rows that cannot be read are set aside (quarantined),
/// and the hive's own model folders no entry names are re-adopted from their files
/// (their sha256 hashed after, in the background). The hive does the same at start.
#[utoipa::path(post, operation_id = "system_repair", path = "/v1/hive/repair", tag = "system", responses((status = 200, description = "What was re-adopted and set aside", body = Object), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn repair(State(state): State<SharedState>) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(crate::ops::repair::repair(&state).await?))
}

/// Where the bytes are: per model, the hive's own and external models, partial
/// downloads, push sessions, worker logs and binaries, and the space free.
#[utoipa::path(get, operation_id = "system_storage", path = "/v1/storage", tag = "system", responses((status = 200, description = "Bytes by where they are", body = Object), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn storage(State(state): State<SharedState>) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(crate::ops::storage::usage(&state).await?))
}

/// What cleanup does.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    /// Only say what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// Cleans up: partial downloads no model can resume (past the grace period),
/// left-over files of installs that died, the oldest logs of stopped workers beyond
/// the limit; lists what it removed and the bytes freed.
#[utoipa::path(post, operation_id = "system_gc", path = "/v1/hive/gc", tag = "system", request_body = GcBody, responses((status = 200, description = "What was removed", body = Object), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn gc(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<GcBody>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(crate::ops::gc::gc(&state, body.dry_run).await?))
}

/// Whether the daemon is up; needs no token.
/// With `--etcd`, `fleet` says whether the hive is in its fleet (`joined`), still
/// `joining`, or cut off from etcd (`unreachable`, serving its own models).
#[utoipa::path(get, operation_id = "system_health", path = "/health", tag = "system", security(()), responses((status = 200, description = "`{\"status\": \"ok\", \"version\", \"fleet\"?: {\"name\", \"state\"}}`", body = Object)))]
pub async fn health(State(state): State<SharedState>) -> ApiJson<Value> {
    let mut out = json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")});
    if let Some(fleet) = &state.fleet {
        let link = serde_json::to_value(fleet.link()).unwrap_or_default();
        out["fleet"] = json!({"name": fleet.name, "state": link["state"]});
    }
    ApiJson(out)
}

/// CPU, RAM, GPUs and free disk.
#[utoipa::path(get, operation_id = "system_capabilities", path = "/v1/capabilities", tag = "system", responses((status = 200, description = "What this machine has", body = Object)))]
pub async fn capabilities(State(state): State<SharedState>) -> Result<ApiJson<Value>, ApiError> {
    let home = state.home.clone();
    let health = state
        .catalog_health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    crate::ops::blocking(move || {
        let mut caps = crate::capabilities::capabilities(&home);
        if let Some(o) = caps.as_object_mut() {
            o.insert(
                "catalog".to_owned(),
                json!({"ok": health.is_clean(), "health": health}),
            );
        }
        Ok(ApiJson(caps))
    })
    .await
}

/// Which audit entries.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many, the latest (default 1000).
    pub limit: Option<usize>,
}

/// The audit log: one entry per mutating request, oldest first.
#[utoipa::path(get, operation_id = "system_audit", path = "/v1/audit", tag = "system", params(AuditQuery), responses((status = 200, description = "Audit entries, oldest first", body = Vec<Object>), (status = 400, description = "Bad query", body = crate::error::ErrorBody)))]
pub async fn audit(
    State(state): State<SharedState>,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Value>, ApiError> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let log = std::sync::Arc::clone(&state.audit);
    let limit = q.limit.unwrap_or(1000).min(100_000);
    crate::ops::blocking(move || Ok(ApiJson(json!(log.read(q.since, limit))))).await
}
