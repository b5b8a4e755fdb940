//! `/health` and `/v1/capabilities`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::routes::ApiJson;
use crate::state::SharedState;

/// The routes.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/health", get(health))
        .route("/v1/capabilities", get(capabilities))
}

/// Whether the daemon is up; needs no token.
#[utoipa::path(get, path = "/health", tag = "system", security(()), responses((status = 200, description = "`{\"status\": \"ok\", \"version\"}`", body = Object)))]
pub async fn health() -> ApiJson<Value> {
    ApiJson(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// CPU, RAM, GPUs and free disk.
#[utoipa::path(get, path = "/v1/capabilities", tag = "system", responses((status = 200, description = "What this machine has", body = Object)))]
pub async fn capabilities(State(state): State<SharedState>) -> Result<ApiJson<Value>, ApiError> {
    let home = state.home.clone();
    crate::ops::blocking(move || Ok(ApiJson(crate::capabilities::capabilities(&home)))).await
}
