//! Bearer-token auth: with a token set, every route but `/health` and the
//! dashboard's page and assets (which hold no data) needs
//! `Authorization: Bearer <token>` (the scheme in any case) or `x-api-key: <token>`
//! (Anthropic's clients), compared as sha256 digests in constant time. A worker's
//! heartbeat may instead carry that worker's own key: workers never hold the hive's
//! token.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use subtle::ConstantTimeEq as _;

use crate::state::SharedState;

/// The token a request carries: `Authorization: Bearer T` (any case of `Bearer`),
/// else `x-api-key: T`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let from_authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    from_authorization
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|t| !t.is_empty())
}

/// Whether two secrets are equal, in constant time whatever their lengths.
pub fn same_secret(given: &str, expected: &str) -> bool {
    bool::from(sha(given).ct_eq(&sha(expected)))
}

/// With a token, every route but `/health` and the dashboard's files needs it.
pub async fn auth(State(state): State<SharedState>, request: Request, next: Next) -> Response {
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

fn sha(s: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap_or_else(|_| unreachable!()));
        }
        h
    }

    #[test]
    fn the_scheme_is_matched_in_any_case_and_x_api_key_is_taken() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer t1")])),
            Some("t1")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer t1")])),
            Some("t1")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "BEARER  t1 ")])),
            Some("t1")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic dTpw")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[("x-api-key", "k")])), Some("k"));
        assert_eq!(bearer(&headers(&[])), None);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abcd"));
    }
}
