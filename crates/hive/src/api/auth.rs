//! Bearer-token auth: with a token set, every route but `/health` and the
//! dashboard's page and assets (which hold no data) needs
//! `Authorization: Bearer <token>` (the scheme in any case) or `x-api-key: <token>`
//! (Anthropic's clients), compared as sha256 digests in constant time. A worker's
//! heartbeat may instead carry that worker's own key: workers never hold the hive's
//! token. A request from a peer hive (`x-rbee-hop`) must carry the fleet's token
//! when the fleet has one, and that token stands in for the API token on the one
//! endpoint's inference routes alone.

use crate::fleet::view::{HOP_HEADER, TOKEN_HEADER};
use crate::secret::{bearer, same_secret};
use crate::state::SharedState;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

/// With a token, every route but `/health` and the dashboard's files needs it.
pub async fn auth(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    // a request from a peer hive: with a fleet token it must carry it, and then it
    // needs no API token to ask a model
    if request.headers().contains_key(HOP_HEADER)
        && let Some(fleet_token) = state.fleet.as_ref().and_then(|f| f.token.as_deref())
    {
        let given = request
            .headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_secret(given, fleet_token) {
            return crate::error::refusal(
                request.uri().path(),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a request from a peer hive needs the fleet's token (x-rbee-fleet-token)",
            )
            .into_response();
        }
        // the fleet token lets a peer ask a model, and nothing else
        if crate::gateway::INFERENCE_ROUTES.contains(&request.uri().path()) {
            return next.run(request).await;
        }
    }
    let Some(token) = state.config.api_token.as_deref().filter(|t| !t.is_empty()) else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/health" || crate::dashboard::is_dashboard(path) {
        return next.run(request).await;
    }
    let given = bearer(request.headers()).unwrap_or("");
    if same_secret(given, token) {
        return next.run(request).await;
    }
    // a worker's heartbeat, with that worker's own key
    if let Some(worker) = path
        .strip_prefix("/v1/workers/")
        .and_then(|rest| rest.strip_suffix("/heartbeat"))
        && state.workers.key_matches(
            &percent_encoding::percent_decode_str(worker).decode_utf8_lossy(),
            given,
        )
    {
        return next.run(request).await;
    }
    let mut r = crate::error::refusal(
        path,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token (Authorization: Bearer TOKEN, or x-api-key)",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}
