//! The audit middleware: every mutating request, who made it and what came of it,
//! written to the audit log before the answer goes out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use serde_json::Value;
use sha2::Digest as _;

use crate::audit::AuditEntry;
use crate::state::SharedState;

/// Who is calling: a short hash of the bearer token, or `anonymous`.
pub fn caller(request: &Request) -> String {
    crate::secret::bearer(request.headers()).map_or_else(
        || "anonymous".to_owned(),
        |t| {
            let digest = hex::encode(sha2::Sha256::digest(t.as_bytes()));
            format!("token:{}", &digest[..12])
        },
    )
}

/// The operation and target of a mutating request, from its route and body.
fn describe(method: &Method, route: &str, path: &str, body: &Value) -> (String, Option<String>) {
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let last = path.rsplit('/').next().map(percent_decode);
    let tail_id = |prefix: &str| {
        path.strip_prefix(prefix)
            .map(|rest| percent_decode(rest.trim_end_matches("/heartbeat")))
    };
    match (method.as_str(), route) {
        ("POST", "/v1/models/download") => ("model_download".into(), field("model_ref")),
        ("POST", "/v1/models/import") => ("model_import".into(), field("path")),
        ("POST", "/v1/models/mmproj") => ("model_pair_projector".into(), field("id")),
        ("POST", "/v1/models/verify") => ("model_verify".into(), None),
        ("POST", "/v1/models/scan") => {
            ("model_scan".into(), body.get("dirs").map(Value::to_string))
        }
        ("POST", "/v1/models/push") => (
            "model_push".into(),
            field("id").map(|id| match field("target") {
                Some(t) => format!("{id} to {t}"),
                None => id,
            }),
        ),
        ("POST", "/v1/models/download-batch") => (
            "model_download_batch".into(),
            body.get("model_refs").map(Value::to_string),
        ),
        ("POST", "/v1/workers/spawn-batch") => ("worker_spawn_batch".into(), None),
        ("POST", "/v1/models/load") => ("model_load".into(), field("id")),
        ("POST", "/v1/models/unload") => ("model_unload".into(), field("id")),
        ("DELETE", "/v1/models/{*id}") => ("model_delete".into(), tail_id("/v1/models/")),
        ("PATCH", "/v1/models/{*id}") => ("model_set_preset".into(), tail_id("/v1/models/")),
        ("POST", "/v1/workers/spawn") => ("worker_spawn".into(), field("model")),
        ("DELETE", "/v1/workers/{id}") => ("worker_stop".into(), last),
        ("POST", "/v1/worker-binaries/install") => (
            "worker_install".into(),
            field("worker").map(|w| match field("source") {
                Some(s) => format!("{w} from {s}"),
                None => w,
            }),
        ),
        ("DELETE", "/v1/worker-binaries/{id}") => ("worker_remove".into(), last),
        ("DELETE", "/v1/jobs/{id}") => ("job_cancel".into(), last),
        ("POST", "/api/pull") => ("model_download".into(), field("model").or(field("name"))),
        ("DELETE", "/api/delete") => ("model_delete".into(), field("model").or(field("name"))),
        ("POST", "/api/create") => ("model_create".into(), field("model").or(field("name"))),
        ("POST", "/api/copy") => ("model_copy".into(), field("destination")),
        ("POST", "/v1/jobs") => {
            let op = field("operation").unwrap_or_else(|| "job".into());
            let target = ["model_ref", "path", "id", "model", "worker"]
                .iter()
                .find_map(|k| field(k));
            (op, target)
        }
        (m, r) => (format!("{} {r}", m.to_ascii_lowercase()), None),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The middleware: records every mutating request but worker heartbeats.
pub async fn record(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let mutating = matches!(
        method,
        Method::POST | Method::DELETE | Method::PUT | Method::PATCH
    );
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // asking a model is not a change (a load it causes is a job of its own)
    let inference = crate::gateway::INFERENCE_ROUTES.contains(&route.as_str());
    if !mutating || inference || route == "/v1/workers/{id}/heartbeat" {
        return next.run(request).await;
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let caller = caller(&request);
    let path = request.uri().path().to_owned();
    // The body names the target; it is read here (the body limit applies) and handed on.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, super::MAX_BODY)
        .await
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (operation, target) = describe(&method, &route, &path, &json);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status().as_u16();
    let entry = AuditEntry {
        time: Utc::now(),
        client,
        caller,
        operation,
        target,
        status,
        outcome: if response.status().is_success() {
            "ok".into()
        } else {
            format!("error {status}")
        },
    };
    // Written before the answer goes out: a client that saw the answer finds the line.
    let log = Arc::clone(&state.audit);
    let _ = tokio::task::spawn_blocking(move || log.append(&entry)).await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_targets() {
        let body =
            serde_json::json!({"model_ref": "hf:a/b", "operation": "worker_spawn", "model": "m"});
        assert_eq!(
            describe(
                &Method::POST,
                "/v1/models/download",
                "/v1/models/download",
                &body
            ),
            ("model_download".into(), Some("hf:a/b".into()))
        );
        assert_eq!(
            describe(
                &Method::DELETE,
                "/v1/models/{*id}",
                "/v1/models/hf%3Aa%2Fb%2Fc.gguf",
                &Value::Null
            ),
            ("model_delete".into(), Some("hf:a/b/c.gguf".into()))
        );
        assert_eq!(
            describe(&Method::POST, "/v1/jobs", "/v1/jobs", &body),
            ("worker_spawn".into(), Some("hf:a/b".into()))
        );
        assert_eq!(
            describe(
                &Method::DELETE,
                "/v1/jobs/{id}",
                "/v1/jobs/job-1",
                &Value::Null
            )
            .0,
            "job_cancel"
        );
    }
}
