//! Secrets a request carries, and comparing them: the API token (`Authorization:
//! Bearer`, the scheme in any case, or `x-api-key`) and a worker's key. A leaf:
//! the auth middleware, the audit log and the worker registry use it.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq as _;

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
