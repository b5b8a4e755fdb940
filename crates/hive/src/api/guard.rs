//! The edge: what a request must be before any route sees it, with or without a
//! token. Web pages in the user's browser are not trusted, so:
//!
//! - **Host** (DNS rebinding): `localhost` (and `*.localhost`), a loopback address,
//!   the address the hive listens on (any address of this machine when it listens on
//!   all of them), this machine's name, the name in `--advertise-url`, or a name in
//!   `--allowed-hosts`. A page whose name was rebound to 127.0.0.1 still sends its
//!   own name, and is refused.
//! - **Origin** (CSRF): absent (not a browser), the hive's own, or one in
//!   `--allowed-origins` (globs). `Sec-Fetch-Site: cross-site` or `same-site` without
//!   an allowed origin is refused too (a page on another port of localhost is
//!   same-site).
//! - **Bodies** of POST, PUT and PATCH are `application/json`: a form or a
//!   `text/plain` fetch, which a browser sends without a preflight, is refused.
//! - **CORS**: preflights are answered for allowed origins alone
//!   ([`cors`]); a refused origin never gets an `Access-Control-Allow-Origin`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};
use wildmatch::WildMatch;

use crate::config::Config;
use crate::error::refusal;

/// What the edge lets in, computed once from the configuration.
#[derive(Debug)]
pub struct Edge {
    listen: IpAddr,
    machine: Option<String>,
    hosts: Vec<WildMatch>,
    origins: Vec<WildMatch>,
}

impl Edge {
    /// The edge of a hive with this configuration.
    pub fn new(config: &Config) -> Self {
        let machine = fs_err::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        Self {
            listen: config.host,
            machine,
            // the name peers of its fleet reach it by is its own
            hosts: config
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .chain(
                    config
                        .advertise_url
                        .as_ref()
                        .and_then(|u| u.host_str().map(str::to_ascii_lowercase)),
                )
                .map(|h| WildMatch::new(&h))
                .collect(),
            origins: config
                .allowed_origins
                .iter()
                .map(|o| WildMatch::new(o.trim().trim_end_matches('/')))
                .collect(),
        }
    }

    /// Whether `host` (a Host header's name or address, without the port) names
    /// this hive.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            // an address cannot be rebound: loopback, the listen address, or any of
            // this machine's when the hive listens on all of them
            return ip.is_loopback() || ip == self.listen || self.listen.is_unspecified();
        }
        host == "localhost"
            || host.ends_with(".localhost")
            || self
                .machine
                .as_deref()
                .is_some_and(|m| host == m || host == format!("{m}.local"))
            || self.hosts.iter().any(|h| h.matches(&host))
    }

    /// Whether an origin is in `--allowed-origins`.
    pub fn origin_listed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.origins.iter().any(|o| o.matches(origin))
    }

    /// Whether `origin` is the hive itself, reached by the name and port the request
    /// names in `host` (the Host header, already allowed).
    fn own_origin(&self, origin: &str, host: &str) -> bool {
        let Ok(url) = url::Url::parse(origin) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let Some(origin_host) = url.host_str() else {
            return false;
        };
        let origin_port = url.port_or_known_default();
        let (request_host, request_port) = split_host(host);
        let request_port = request_port.or_else(|| url.port_or_known_default());
        if origin_port != request_port {
            return false;
        }
        if origin_host.eq_ignore_ascii_case(request_host) {
            return true;
        }
        // the hive's page at one of its own names calling it at another
        let listen = self.listen;
        let own = |h: &str| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<IpAddr>().is_ok_and(|ip| {
                    ip == listen
                        || (listen.is_loopback() || listen.is_unspecified())
                            && (ip == IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                                || ip == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
                })
        };
        own(origin_host) && own(request_host)
    }
}

/// A Host header's name and port: `localhost:7835`, `[::1]:7835`, `example`.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((addr, tail)) => (addr, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

/// The checks, as middleware in front of every route.
pub async fn guard(edge: Arc<Edge>, request: Request, next: Next) -> Response {
    match check(&edge, &request) {
        Ok(()) => next.run(request).await,
        Err((status, code, message)) => refusal(request.uri().path(), status, code, &message),
    }
}

type Refused = (StatusCode, &'static str, String);

fn check(edge: &Edge, request: &Request) -> Result<(), Refused> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    if let Some(host) = &host {
        let (name, _) = split_host(host);
        if !edge.host_allowed(name) {
            return Err((
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "Host {name:?} does not name this hive: it answers to localhost, 127.0.0.1, [::1] and the address it listens on; to reach it by this name, add it to --allowed-hosts (RBEE_ALLOWED_HOSTS)"
                ),
            ));
        }
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let listed = origin.is_some_and(|o| edge.origin_listed(o));
    if let Some(origin) = origin
        && !listed
        && !host.as_deref().is_some_and(|h| edge.own_origin(origin, h))
    {
        return Err(foreign(&format!("requests from the web origin {origin:?}")));
    }
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if matches!(site, "cross-site" | "same-site") && !listed && origin.is_none() {
        return Err(foreign(&format!(
            "requests from another site (Sec-Fetch-Site: {site})"
        )));
    }
    if matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) && has_body(request)
        && !is_json(headers.get(header::CONTENT_TYPE))
    {
        let given = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be sent as Content-Type: application/json (got {given}); with curl, add -H 'Content-Type: application/json'"
            ),
        ));
    }
    Ok(())
}

fn foreign(what: &str) -> Refused {
    (
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        format!(
            "{what} are refused: web pages may not drive the hive; to allow a web UI, add its origin to --allowed-origins (RBEE_ALLOWED_ORIGINS)"
        ),
    )
}

fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_none_or(|n| n > 0)
        })
}

/// `application/json`, with parameters, or a `+json` type.
fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|t| t.ends_with("+json"))
}

/// CORS for the origins in `--allowed-origins` alone: their preflights are answered
/// and their requests get `Access-Control-Allow-Origin`; no other origin gets it.
pub fn cors(edge: Arc<Edge>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| edge.origin_listed(o))
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
        ])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn edge(args: &[&str]) -> Edge {
        let mut all = vec!["rbee-hive"];
        all.extend_from_slice(args);
        Edge::new(&Config::parse_from(all))
    }

    fn request(method: &str, headers: &[(&'static str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri("/v1/models");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty())
            .unwrap_or_else(|_| unreachable!())
    }

    fn code(edge: &Edge, method: &str, headers: &[(&'static str, &str)]) -> Option<u16> {
        check(edge, &request(method, headers))
            .err()
            .map(|(s, _, _)| s.as_u16())
    }

    #[test]
    fn hosts_that_name_the_hive() {
        let e = edge(&["--allowed-hosts", "gpu.lan,*.example.org"]);
        for ok in [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "::1",
            "app.localhost",
            "gpu.lan",
            "x.example.org",
            "LOCALHOST.",
        ] {
            assert!(e.host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "example.org",
            "10.0.0.1",
            "localhost.attacker.example",
            "",
        ] {
            assert!(!e.host_allowed(bad), "{bad}");
        }
        let any = edge(&["--host", "0.0.0.0", "--api-token", "t"]);
        assert!(any.host_allowed("192.168.1.20"));
        assert!(!any.host_allowed("attacker.example"));
        assert!(edge(&["--allowed-hosts", "*"]).host_allowed("anything.example"));
    }

    #[test]
    fn origins_foreign_sites_and_bodies() {
        let e = edge(&[
            "--allowed-origins",
            "http://localhost:3000,https://*.example.org",
        ]);
        let host = ("host", "127.0.0.1:7835");
        assert_eq!(code(&e, "GET", &[host]), None);
        assert_eq!(
            code(&e, "GET", &[("host", "attacker.example:7835")]),
            Some(403)
        );
        // the hive's own page, by either loopback name
        assert_eq!(
            code(&e, "GET", &[host, ("origin", "http://127.0.0.1:7835")]),
            None
        );
        assert_eq!(
            code(&e, "GET", &[host, ("origin", "http://localhost:7835")]),
            None
        );
        // another port, another loopback address, another site, a sandboxed frame
        for bad in [
            "http://127.0.0.1:8000",
            "http://127.0.0.2:7835",
            "http://evil.example",
            "null",
            "file://",
        ] {
            assert_eq!(
                code(&e, "POST", &[host, ("origin", bad)]),
                Some(403),
                "{bad}"
            );
        }
        for ok in ["http://localhost:3000", "https://ui.example.org"] {
            assert_eq!(code(&e, "GET", &[host, ("origin", ok)]), None, "{ok}");
        }
        assert_eq!(
            code(&e, "GET", &[host, ("sec-fetch-site", "cross-site")]),
            Some(403)
        );
        assert_eq!(
            code(&e, "GET", &[host, ("sec-fetch-site", "same-site")]),
            Some(403)
        );
        assert_eq!(
            code(&e, "GET", &[host, ("sec-fetch-site", "same-origin")]),
            None
        );
        assert_eq!(code(&e, "GET", &[host, ("sec-fetch-site", "none")]), None);
        let json = ("content-type", "application/json; charset=utf-8");
        let len = ("content-length", "2");
        assert_eq!(code(&e, "POST", &[host, json, len]), None);
        assert_eq!(
            code(&e, "POST", &[host, ("content-type", "text/plain"), len]),
            Some(415)
        );
        assert_eq!(
            code(
                &e,
                "POST",
                &[
                    host,
                    ("content-type", "application/x-www-form-urlencoded"),
                    len
                ]
            ),
            Some(415)
        );
        assert_eq!(code(&e, "PATCH", &[host, len]), Some(415));
        assert_eq!(
            code(&e, "POST", &[host, ("transfer-encoding", "chunked")]),
            Some(415)
        );
        // no body, nothing to check
        assert_eq!(code(&e, "POST", &[host, ("content-length", "0")]), None);
        assert_eq!(code(&e, "POST", &[host]), None);
        assert_eq!(
            code(&e, "DELETE", &[host, ("content-type", "text/plain"), len]),
            None
        );
    }

    #[test]
    fn host_headers_split() {
        assert_eq!(split_host("localhost:7835"), ("localhost", Some(7835)));
        assert_eq!(split_host("[::1]:7835"), ("::1", Some(7835)));
        assert_eq!(split_host("::1"), ("::1", None));
        assert_eq!(split_host("example"), ("example", None));
    }
}
