//! Bearer-token auth: with a token set, every route but `/health` and the
//! dashboard's page and assets (which hold no data) needs
//! `Authorization: Bearer <token>`, compared as sha256 digests in constant time.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::state::SharedState;

/// With a token, every route but `/health` and the dashboard's files needs
/// `Authorization: Bearer <token>`.
pub async fn auth(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let Some(token) = state.config.api_token.as_deref().filter(|t| !t.is_empty()) else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" || crate::dashboard::is_dashboard(request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // constant time, and the same for a wrong length
    let (a, b) = (sha(given), sha(token));
    if bool::from(a.ct_eq(&b)) {
        return next.run(request).await;
    }
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

fn sha(s: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).into()
}
