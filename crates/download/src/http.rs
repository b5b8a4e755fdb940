//! Talking to the server: requests, status classification, Retry-After.

use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};

use crate::DownloadError;

/// What to do after a failed request.
pub(crate) enum Failure {
    /// Try again, after the server's `Retry-After` if it gave one.
    Retry {
        error: DownloadError,
        after: Option<Duration>,
    },
    /// Trying again cannot help.
    Fatal(DownloadError),
}

impl Failure {
    /// The error, whether or not it is worth another try.
    pub(crate) fn into_error(self) -> DownloadError {
        match self {
            Self::Retry { error, .. } | Self::Fatal(error) => error,
        }
    }
}

/// Classifies a response that is not what was asked for.
pub(crate) fn status_failure(url: &str, resp: &Response) -> Failure {
    let status = resp.status();
    let reason = status.canonical_reason().unwrap_or("").to_owned();
    let server_says = resp
        .headers()
        .get("x-error-message")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let error = DownloadError::Http {
        url: url.to_owned(),
        status: status.as_u16(),
        reason: server_says.clone().unwrap_or(reason),
    };
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Failure::Fatal(DownloadError::Unauthorized {
                url: url.to_owned(),
                status: status.as_u16(),
                hint: server_says
                    .unwrap_or_else(|| "the server refused access; a token may be needed".into()),
            })
        }
        StatusCode::NOT_FOUND | StatusCode::GONE => Failure::Fatal(DownloadError::NotFound {
            url: url.to_owned(),
        }),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Failure::Retry {
            error,
            after: retry_after(resp.headers()),
        },
        s if s.is_server_error() => Failure::Retry {
            error,
            after: retry_after(resp.headers()),
        },
        _ => Failure::Fatal(error),
    }
}

/// Classifies a transport error: all are worth another try, but a certificate this
/// machine does not trust, which no retry changes.
pub(crate) fn transport_failure(url: &str, e: &reqwest::Error) -> Failure {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    // rustls says so in its error's text, the one part of the chain reqwest keeps
    if let Some(at) = message.find("invalid peer certificate") {
        return Failure::Fatal(DownloadError::Certificate {
            url: url.to_owned(),
            message: message[at..].to_owned(),
        });
    }
    Failure::Retry {
        error: DownloadError::Network {
            url: url.to_owned(),
            message,
        },
        after: None,
    }
}

/// The longest `Retry-After` honoured; a server asking for more gets this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// The ETag, when it is a strong one (a weak one cannot guard a range).
pub(crate) fn strong_etag(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::ETAG)?.to_str().ok()?;
    (!v.starts_with("W/")).then(|| v.to_owned())
}

/// `Content-Range: bytes START-END/TOTAL` as (start, end inclusive, total).
pub(crate) fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, end.parse().ok()?, total))
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request with the credential's `Authorization` (reqwest drops it on a
/// redirect to another host).
pub(crate) fn authorize(
    rb: reqwest::RequestBuilder,
    credential: Option<&crate::Credential>,
) -> reqwest::RequestBuilder {
    match credential {
        Some(crate::Credential::Bearer(t)) => match bearer(t) {
            Some(v) => rb.header(header::AUTHORIZATION, v),
            None => rb,
        },
        Some(crate::Credential::Basic { username, password }) => {
            rb.basic_auth(username, Some(password))
        }
        None => rb,
    }
}

pub(crate) fn bearer(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// `X-Linked-Etag`, when it is a sha256 (the hub sends the LFS sha256 there).
pub(crate) fn linked_sha256(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-linked-etag")?.to_str().ok()?;
    let v = v.trim().trim_start_matches("W/").trim_matches('"');
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_ascii_lowercase())
}
