//! `GET /v1/fleet`: the lab's hives as this hive sees them (with `--etcd`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::api::ApiJson;
use crate::error::ApiError;
use crate::state::SharedState;

/// The routes.
pub fn router() -> Router<SharedState> {
    Router::new().route("/v1/fleet", get(fleet))
}

/// The fleet: its name, this hive's id and link to etcd, and every hive's card
/// (this one first, marked `self`): URL, version, devices with their budget and
/// free memory, models, loaded models with free slots and queue.
#[utoipa::path(get, operation_id = "fleet_list", path = "/v1/fleet", tag = "system", responses((status = 200, description = "The fleet's hives", body = Object), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 404, description = "This hive is in no fleet (no --etcd)", body = crate::error::ErrorBody)))]
pub async fn fleet(State(state): State<SharedState>) -> Result<ApiJson<Value>, ApiError> {
    let Some(fleet) = &state.fleet else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_fleet",
            "this hive is in no fleet: start it with --etcd http://HOST:2379 (and --fleet NAME)",
        ));
    };
    let mut hives = Vec::new();
    if let Some(own) = fleet.own() {
        let mut v = serde_json::to_value(own).unwrap_or_default();
        v["self"] = json!(true);
        hives.push(v);
    }
    for peer in fleet.peers() {
        let mut v = serde_json::to_value(peer).unwrap_or_default();
        v["self"] = json!(false);
        hives.push(v);
    }
    Ok(ApiJson(json!({
        "object": "list",
        "fleet": fleet.name,
        "hive_id": fleet.hive_id,
        "link": fleet.link(),
        "data": hives,
    })))
}
