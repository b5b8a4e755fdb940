//! Every error answers in JSON. What the framework answers by itself, in plain text or
//! with no body (a body too large, a path that is not UTF-8, a method a route does not
//! take), is rewritten here in the route family's error shape, its status and headers
//! kept. What a handler answered in JSON passes untouched.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::refusal;

/// The most of a plain error's text that is kept (they are a line).
const MAX_TEXT: usize = 16 << 10;

/// The middleware.
pub async fn as_json(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || !is_plain(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut out = refusal(&path, status, code_of(status), &message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}

/// Whether an answer is plain text, or has no type at all (axum's own rejections).
fn is_plain(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::to_str)
        .is_none_or(|t| t.is_ok_and(|t| t.starts_with("text/plain")))
}

fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}
