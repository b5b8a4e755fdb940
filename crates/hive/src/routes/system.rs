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
    crate::ops::blocking(move || {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        let cpu_model = sys.cpus().first().map(|c| c.brand().trim().to_owned());
        let free_disk = download::available_space(&home).ok();
        Ok(ApiJson(json!({
            "cpu": {
                "model": cpu_model,
                "logical_cores": sys.cpus().len(),
                "physical_cores": sysinfo::System::physical_core_count(),
            },
            "ram": {"total_bytes": sys.total_memory(), "available_bytes": sys.available_memory()},
            "gpus": [],
            "disk": {"path": home, "free_bytes": free_disk},
        })))
    })
    .await
}
