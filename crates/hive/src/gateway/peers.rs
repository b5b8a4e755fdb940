//! Requests this hive cannot serve, sent to a peer of its fleet (`--etcd`). Before a
//! route of the one endpoint runs, the request's `model` is looked at: a model this
//! hive has loaded with a slot free is served here; otherwise the fleet's rule
//! ([`Fleet::route`]) names the peers to try, in order, and the first that answers
//! gives the answer, streamed through unbuffered and marked `x-rbee-hive`. With no
//! peer to try, or none answering, the request is served here as without a fleet.
//!
//! A request that came from a peer (`x-rbee-hop`) is never sent on again; with a
//! fleet token, it must carry that token (`x-rbee-fleet-token`), checked by the
//! hive's auth. The client's own credentials never leave this hive.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::{INFERENCE_ROUTES, MAX_BODY, SharedGateway};
use crate::engines::memory;
use crate::fleet::view::{Candidate, Fleet, HIVE_HEADER, HOP_HEADER, Here, TOKEN_HEADER, Wanted};
use crate::metrics::{PeerLabel, PeerLabels};
use crate::ops::admission;
use crate::workers::WorkerState;
use model_catalog::ModelEntry;
use provisioning::ArtifactProvisioner as _;

/// The request headers a peer gets, besides the body; nothing that authenticates the
/// client here.
const PASSED_ON: &[header::HeaderName] =
    &[header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT];
/// Anthropic's version headers, passed on too.
const PASSED_ON_BY_NAME: &[&str] = &["anthropic-version", "anthropic-beta"];
/// The answer's headers the client gets, besides the status.
const PASSED_BACK: &[header::HeaderName] = &[
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::RETRY_AFTER,
];

/// The middleware on the one endpoint's routes.
pub async fn to_a_peer(State(gw): State<SharedGateway>, request: Request, next: Next) -> Response {
    let Some(fleet) = gw.hive.fleet.clone() else {
        return next.run(request).await;
    };
    if request.method() != Method::POST
        || request.headers().contains_key(HOP_HEADER)
        || !INFERENCE_ROUTES.contains(&request.uri().path())
    {
        return next.run(request).await;
    }
    let too_long = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY);
    if too_long {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        // the family's error shape is put on by the outer layer
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is longer than {} MiB", MAX_BODY >> 20),
        )
            .into_response();
    };
    let model = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("model")?.as_str().map(str::to_owned));
    let here_request = |bytes: Bytes| Request::from_parts(parts.clone(), Body::from(bytes));
    let Some(model) = model.filter(|m| !m.trim().is_empty()) else {
        return next.run(here_request(bytes)).await;
    };
    let local = super::names::find(&gw, &model).await.ok().flatten();
    let here = here(&gw, &fleet, &model, local.as_ref()).await;
    let alias = local.as_ref().map(model_catalog::ModelEntry::alias);
    let wanted = Wanted {
        name: &model,
        alias: alias.as_deref(),
        sha256: local.as_ref().and_then(|m| m.sha256.as_deref()),
    };
    let candidates = fleet.route(wanted, here);
    let mut garbled = None;
    for candidate in &candidates {
        match send(
            &gw,
            &fleet,
            candidate,
            &parts.uri,
            &parts.headers,
            bytes.clone(),
        )
        .await
        {
            Ok(answer) => return answer,
            Err(Failed::Garbled(why)) => {
                tracing::warn!(peer = %candidate.card.id, %model, "fleet: trying the next hive: {why}");
                garbled.get_or_insert(why);
            }
            Err(Failed::Unanswered(why)) => {
                tracing::warn!(peer = %candidate.card.id, %model, "fleet: trying the next hive: {why}");
            }
        }
    }
    // a peer that answered nonsense, for a model this hive cannot serve itself, is
    // a 502 that names it; anything else is served here as without a fleet
    if let Some(why) = garbled
        && !matches!(here, Here::Fits)
    {
        return crate::error::refusal(
            parts.uri.path(),
            StatusCode::BAD_GATEWAY,
            "peer_failed",
            &why,
        );
    }
    next.run(here_request(bytes)).await
}

/// Why a peer gave no answer to pass on.
enum Failed {
    /// It did not answer, or answered a 5xx of its own: the next one is tried.
    Unanswered(String),
    /// It answered something that is not HTTP, or a JSON answer that is not JSON.
    Garbled(String),
}

/// What this hive can do about `name` itself.
async fn here(gw: &SharedGateway, fleet: &Fleet, name: &str, local: Option<&ModelEntry>) -> Here {
    let hive = &gw.hive;
    let missing = || Here::Missing {
        pullable: hive.config.gateway_pull && hive.provisioner.supports(name),
        room: fleet.own().map_or(0, |c| c.most_free()),
    };
    let Some(model) = local else {
        return missing();
    };
    if model.status != artifact_catalog::ArtifactStatus::Available {
        return missing();
    }
    let free_slot = hive.workers.list().iter().any(|w| {
        w.model_ref == model.id
            && w.state == WorkerState::Ready
            && w.requests_in_flight < w.slots_total.unwrap_or(1).max(1)
    });
    if free_slot {
        return Here::Ready;
    }
    let Ok(placed) =
        crate::ops::workers::place(hive, crate::engines::Asked::default(), &model.preset).await
    else {
        return Here::Fits;
    };
    let device = placed.memory_device();
    let need = memory::of_model(model).total_bytes;
    match memory::budget(device, admission::margins(hive)) {
        Some(b) if need > b.bytes => Here::TooBig,
        _ => Here::Fits,
    }
}

/// Sends the request to one peer. A JSON answer is read whole and checked before it
/// is passed on; a stream passes through as it comes.
async fn send(
    gw: &SharedGateway,
    fleet: &Fleet,
    candidate: &Candidate,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Failed> {
    let card = &candidate.card;
    let metrics = &gw.hive.metrics;
    let count = |outcome: &str| {
        metrics
            .fleet_forwarded
            .get_or_create(&PeerLabels {
                peer: card.id.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut request = gw
        .peer_http
        .post(format!("{}{path}", card.url.trim_end_matches('/')))
        .header(HOP_HEADER, &fleet.hive_id)
        .body(body);
    for name in PASSED_ON {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v);
        }
    }
    for name in PASSED_ON_BY_NAME {
        if let Some(v) = headers.get(*name) {
            request = request.header(*name, v);
        }
    }
    if let Some(token) = &fleet.token {
        request = request.header(TOKEN_HEADER, token);
    }
    let sent = Instant::now();
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) if e.is_connect() || e.is_timeout() => {
            count("unreachable");
            return Err(Failed::Unanswered(format!(
                "the hive {} at {} did not answer: {e}",
                card.id, card.url
            )));
        }
        Err(e) => {
            count("garbled");
            return Err(Failed::Garbled(format!(
                "the hive {} at {} answered something that is not HTTP: {e}",
                card.id, card.url
            )));
        }
    };
    metrics
        .fleet_peer_latency
        .get_or_create(&PeerLabel {
            peer: card.id.clone(),
        })
        .observe(sent.elapsed().as_secs_f64());
    let status = answer.status();
    if matches!(status.as_u16(), 401 | 403) {
        count("refused");
        return Err(Failed::Unanswered(format!(
            "the hive {} at {} refused this hive ({status}): give every hive the same --fleet-token-file",
            card.id, card.url
        )));
    }
    if status.is_server_error() {
        count("refused");
        return Err(Failed::Unanswered(format!(
            "the hive {} at {} answered {status}",
            card.id, card.url
        )));
    }
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut out = Response::builder().status(status.as_u16());
    for name in PASSED_BACK {
        if let Some(v) = answer.headers().get(name) {
            out = out.header(name, v);
        }
    }
    if let Ok(id) = HeaderValue::from_str(&card.id) {
        out = out.header(HIVE_HEADER, id);
    }
    let streamed = content_type.starts_with("text/event-stream")
        || content_type.starts_with("application/x-ndjson");
    let body = if streamed {
        let anthropic = uri.path().starts_with("/v1/messages");
        let peer = card.id.clone();
        let stream = answer.bytes_stream().map(move |chunk| match chunk {
            Ok(b) => Ok(b),
            Err(e) => last_words(
                &content_type,
                anthropic,
                &format!("the hive {peer} stopped answering: {e}"),
            ),
        });
        Body::from_stream(stream)
    } else {
        let whole = read_capped(answer, MAX_ANSWER).await;
        match whole {
            Ok(b) if serde_json::from_slice::<serde::de::IgnoredAny>(&b).is_ok() => Body::from(b),
            Ok(_) => {
                count("garbled");
                return Err(Failed::Garbled(format!(
                    "the hive {} at {} answered {status} with a body that is not JSON",
                    card.id, card.url
                )));
            }
            Err(why) => {
                count("garbled");
                return Err(Failed::Garbled(format!(
                    "the hive {} at {}: {why}",
                    card.id, card.url
                )));
            }
        }
    };
    count("answered");
    tracing::info!(peer = %card.id, why = ?candidate.why, path = uri.path(), "fleet: sent to a peer");
    out.body(body)
        .map_err(|e| Failed::Garbled(format!("the answer of {}: {e}", card.url)))
}

/// The most of a whole (not streamed) answer from a peer that is read.
const MAX_ANSWER: usize = 64 << 20;

/// A whole answer's body, at most `cap` bytes.
async fn read_capped(answer: reqwest::Response, cap: usize) -> Result<Bytes, String> {
    let mut out = bytes::BytesMut::new();
    let mut body = answer.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("its answer was cut: {e}"))?;
        if out.len().saturating_add(chunk.len()) > cap {
            return Err(format!("its answer is longer than {} MiB", cap >> 20));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// How a stream from a peer that dies ends: an error event in the stream's own
/// format, or a cut body where the format has none.
fn last_words(content_type: &str, anthropic: bool, message: &str) -> Result<Bytes, std::io::Error> {
    if content_type.starts_with("text/event-stream") {
        let event = if anthropic {
            let data = json!({"type": "error", "error": {"type": "api_error", "message": message}});
            format!("event: error\ndata: {data}\n\n")
        } else {
            let data = json!({"error": {"message": message, "type": "server_error", "code": "peer_failed"}});
            format!("data: {data}\n\n")
        };
        Ok(Bytes::from(event))
    } else if content_type.starts_with("application/x-ndjson") {
        Ok(Bytes::from(format!("{}\n", json!({ "error": message }))))
    } else {
        Err(std::io::Error::other(message.to_owned()))
    }
}
