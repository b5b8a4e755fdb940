//! Images a request names by `http(s)` URL, fetched by the hive on the request's
//! behalf, only when `--allow-remote-images` says so. A fetch is a door: what it may
//! reach is the flag's scope (`public`: addresses on the internet only, checked on
//! every name and every redirect, so a URL cannot point the hive at this machine or
//! its network; `any`: those too), and what it brings is bounded (size, time,
//! redirects) and must be an image. The fetched image replaces its URL in the body
//! as base64, so the worker is given the bytes and fetches nothing itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::GatewayError;
use crate::config::RemoteImages;

/// The most an image fetched from a URL may weigh.
pub const IMAGE_MAX_BYTES: u64 = 10 << 20;
/// The most time one fetch takes, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// The most redirects one fetch follows.
const REDIRECTS_MAX: usize = 3;

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::new(StatusCode::BAD_REQUEST, "invalid_image", message)
}

/// Whether an address is on the public internet: not this machine, not a private,
/// shared, link-local, multicast or reserved network.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// A resolver that keeps only public addresses, so that no name (nor a name that
/// changes its answer between two lookups) leads the hive to a private one.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a URL's host may be reached under `scope`, before any lookup (an
/// address written in the URL is never looked up).
fn reachable(url: &reqwest::Url, scope: RemoteImages) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{} is not an http(s) URL", url.scheme()));
    }
    let ip = match url.host() {
        None => return Err("the URL has no host".to_owned()),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(d)) => {
            if scope == RemoteImages::Public && d.eq_ignore_ascii_case("localhost") {
                return Err("localhost is this machine".to_owned());
            }
            return Ok(());
        }
    };
    if scope == RemoteImages::Public && !is_public(ip) {
        return Err(format!(
            "{ip} is not a public address (--allow-remote-images any reaches private ones)"
        ));
    }
    Ok(())
}

/// The client image fetches go through, for `scope`: no proxy from the environment
/// (the checks are on the addresses it connects to), every redirect checked.
pub fn client(scope: RemoteImages) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > REDIRECTS_MAX {
                return attempt.error(format!("more than {REDIRECTS_MAX} redirects"));
            }
            match reachable(attempt.url(), scope) {
                Ok(()) => attempt.follow(),
                Err(why) => {
                    let to = attempt.url().to_string();
                    attempt.error(format!("a redirect to {to}: {why}"))
                }
            }
        }))
        .user_agent(concat!("rbee-hive/", env!("CARGO_PKG_VERSION")));
    if scope == RemoteImages::Public {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    b.build().unwrap_or_default()
}

/// An error with its causes, as one line.
fn why(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The image at `url`: its media type (from its bytes) and the bytes.
async fn fetch(
    client: &reqwest::Client,
    scope: RemoteImages,
    url: &str,
) -> Result<(&'static str, Vec<u8>), GatewayError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("image URL {url:?}: {e}")))?;
    reachable(&parsed, scope).map_err(|why| bad(format!("image URL {url}: {why}")))?;
    let failed =
        |e: &dyn std::fmt::Display| bad(format!("the image at {url} could not be fetched: {e}"));
    let response = client
        .get(parsed)
        .send()
        .await
        .map_err(|e| failed(&why(&e)))?;
    if !response.status().is_success() {
        return Err(failed(&format!("it answered {}", response.status())));
    }
    if response
        .content_length()
        .is_some_and(|n| n > IMAGE_MAX_BYTES)
    {
        return Err(failed(&format!("it is over {} MiB", IMAGE_MAX_BYTES >> 20)));
    }
    let mut bytes = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| failed(&why(&e)))?;
        if bytes.len() as u64 + chunk.len() as u64 > IMAGE_MAX_BYTES {
            return Err(failed(&format!("it is over {} MiB", IMAGE_MAX_BYTES >> 20)));
        }
        bytes.extend_from_slice(&chunk);
    }
    let kind = super::images::sniff(&bytes).ok_or_else(|| {
        bad(format!(
            "what {url} holds is not an image (PNG, JPEG, GIF, WebP or BMP)"
        ))
    })?;
    Ok((kind, bytes))
}

/// Fetches each image a body names by URL (OpenAI's `image_url` and `input_image`,
/// Anthropic's `url` sources) and puts it in the body as base64.
pub async fn inline(
    client: &reqwest::Client,
    scope: RemoteImages,
    body: &mut Value,
) -> Result<(), GatewayError> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    for key in ["messages", "input"] {
        let Some(list) = body.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for message in list {
            let Some(parts) = message.get_mut("content").and_then(Value::as_array_mut) else {
                continue;
            };
            for part in parts {
                let url_at = match part["type"].as_str() {
                    Some("image_url") if part["image_url"].is_object() => "/image_url/url",
                    Some("image_url" | "input_image") => "/image_url",
                    Some("image") if part["source"]["type"] == "url" => "/source/url",
                    _ => continue,
                };
                let Some(url) = part.pointer(url_at).and_then(Value::as_str) else {
                    continue;
                };
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    continue;
                }
                let (kind, bytes) = fetch(client, scope, url).await?;
                if url_at == "/source/url" {
                    part["source"] =
                        json!({"type": "base64", "media_type": kind, "data": b64(&bytes)});
                } else if let Some(slot) = part.pointer_mut(url_at) {
                    *slot = json!(format!("data:{kind};base64,{}", b64(&bytes)));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_url_to_this_machine_is_refused_before_any_lookup() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        for u in [
            "http://127.0.0.1:7835/v1/models",
            "http://[::1]/x.png",
            "http://localhost/x.png",
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
        ] {
            assert!(reachable(&url(u), RemoteImages::Public).is_err(), "{u}");
        }
        assert!(reachable(&url("http://127.0.0.1:9/x.png"), RemoteImages::Any).is_ok());
        assert!(reachable(&url("ftp://example.com/x.png"), RemoteImages::Any).is_err());
        assert!(reachable(&url("https://example.com/x.png"), RemoteImages::Public).is_ok());
    }
}
