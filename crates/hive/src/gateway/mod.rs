//! The one endpoint: OpenAI-compatible routes under `/openai/v1` and Ollama's own
//! routes under `/api`, for every model in the catalog. A request names a model by
//! catalog id or alias; the gateway finds a ready worker serving it, or loads one
//! (as `model_load` does, one load per model however many requests wait for it),
//! then proxies the request to it, streams passing through chunk by chunk.
//!
//! - `admission.rs`: the RAM budget, and eviction of idle workers to keep to it;
//! - `names.rs`: model names and aliases;
//! - `queue.rs`: each model's bounded queue, and the wait for a worker's slot;
//! - `proxy.rs`: forwarding to a worker, streams included;
//! - `peers.rs`: a request this hive cannot serve, sent to a peer of its fleet;
//! - `meter.rs`: time to first token and tokens/s, read from the answers;
//! - `openai.rs`, `ollama.rs`: the two route families, each with its error shape.

pub mod anthropic;
pub mod defaults;
pub mod fields;
pub mod image_fetch;
pub mod images;
pub mod kinds;
pub mod meter;
pub mod modelfile;
pub mod names;
pub mod ollama;
pub mod openai;
pub mod peers;
pub mod proxy;
pub mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use model_catalog::ModelEntry;

use crate::state::SharedState;
use crate::workers::{WorkerRecord, WorkerState};

/// The most a request body through the one endpoint may be.
pub const MAX_BODY: usize = 16 << 20;

/// How long a request waits for its model's worker to be ready.
const LOAD_DEADLINE: Duration = Duration::from_secs(600);

/// Why a gateway request could not be served; each route family renders it in its
/// own shape.
#[derive(Debug, Clone)]
pub struct GatewayError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short machine-readable code.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl GatewayError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl From<crate::error::ApiError> for GatewayError {
    fn from(e: crate::error::ApiError) -> Self {
        let status = e.status_code();
        let (code, message) = e.parts();
        Self::new(status, code, message)
    }
}

impl From<axum::extract::rejection::BytesRejection> for GatewayError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        Self::new(
            status,
            code,
            format!("{} (at most {} MiB)", r.body_text(), MAX_BODY >> 20),
        )
    }
}

/// The one endpoint's state: the hive's, and the gateway's own (the loads in
/// progress, one lock per model, so that concurrent requests for a cold model share
/// its one load; the queue; the alias index).
#[derive(Debug)]
pub struct Gateway {
    /// The hive's state.
    pub hive: SharedState,
    loads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held from the budget check until the new worker is registered (and so
    /// counted), so that two loads never both take the same free room.
    admit: tokio::sync::Mutex<()>,
    /// Aliases to ids, rebuilt when the catalog changes.
    pub aliases: names::AliasIndex,
    /// Each model's requests in progress.
    pub tickets: queue::Tickets,
    /// The client requests go to workers with: no overall timeout, as a stream may
    /// run for minutes.
    pub http: reqwest::Client,
    /// The client requests go to peer hives with: a peer that does not take the
    /// connection soon is passed over.
    pub peer_http: reqwest::Client,
    /// What image URLs may reach, and the client that fetches them, when
    /// `--allow-remote-images` is set.
    pub remote_images: Option<(crate::config::RemoteImages, reqwest::Client)>,
}

/// The one endpoint's routes that ask a model and change nothing (the audit log
/// leaves them out; their bodies may be longer than the hive's own API takes).
pub const INFERENCE_ROUTES: &[&str] = &[
    "/openai/v1/chat/completions",
    "/openai/v1/completions",
    "/openai/v1/embeddings",
    "/openai/v1/responses",
    "/openai/v1/rerank",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/rerank",
    "/rerank",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
];

/// The gateway's state as handlers get it.
pub type SharedGateway = Arc<Gateway>;

impl Gateway {
    /// The gateway of this hive.
    pub fn new(hive: SharedState) -> Self {
        let remote_images = hive
            .config
            .allow_remote_images
            .map(|scope| (scope, image_fetch::client(scope)));
        Self {
            remote_images,
            hive,
            loads: Mutex::default(),
            admit: tokio::sync::Mutex::default(),
            aliases: names::AliasIndex::default(),
            tickets: queue::Tickets::default(),
            // an idle connection is let go before llama-server's own keep-alive (5 s)
            // closes it under a request
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            peer_http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    fn lock_for(&self, model_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(loads.entry(model_id.to_owned()).or_default())
    }
}

/// `Retry-After` on a 429 (a full queue) or a 503 (no room yet): seconds, as HTTP
/// has it.
fn retry_after(r: &mut axum::response::Response) {
    let status = r.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("2"),
        );
    }
}

/// The ready worker serving a model, the least busy first.
fn ready_worker(state: &Gateway, model_id: &str) -> Option<WorkerRecord> {
    state
        .hive
        .workers
        .list()
        .into_iter()
        .filter(|w| w.model_ref == model_id && w.state == WorkerState::Ready && w.url.is_some())
        .min_by_key(|w| w.requests_in_flight)
}

/// A ready worker for the model: a live one, else one loaded now (the request waits,
/// within ten minutes). `keep_alive` (seconds; 0 for none) becomes its idle TTL.
pub async fn ensure_worker(
    state: &Gateway,
    model: &ModelEntry,
    keep_alive: Option<u64>,
) -> Result<WorkerRecord, GatewayError> {
    let lock = state.lock_for(&model.id);
    let _one_load = lock.lock().await;
    if let Some(w) = ready_worker(state, &model.id) {
        if let Some(secs) = keep_alive {
            return Ok(state
                .hive
                .workers
                .set_idle_ttl(&w.id, Some(secs))
                .unwrap_or(w));
        }
        return Ok(w);
    }
    let waited_from = std::time::Instant::now();
    // one admission at a time: the room made stays made until the worker counts
    let admitted = state.admit.lock().await;
    let hive = &state.hive;
    let job = crate::ops::workers::load_for_request(hive, model.clone(), keep_alive)
        .await
        .map_err(GatewayError::from)?;
    hive.metrics
        .gateway_loads
        .get_or_create(&crate::metrics::ModelLabel {
            model: model.id.clone(),
        })
        .inc();
    drop(admitted);
    let loaded = tokio::time::timeout(LOAD_DEADLINE, job.wait::<WorkerRecord>())
        .await
        .map_err(|_| {
            GatewayError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "load_timeout",
                format!(
                    "{} did not get a ready worker within {}s",
                    model.id,
                    LOAD_DEADLINE.as_secs()
                ),
            )
        })?
        .map_err(|u| GatewayError::new(StatusCode::SERVICE_UNAVAILABLE, &u.code, u.message))?;
    let id = loaded.id;
    // the load may have found a worker still starting: wait for it to be ready
    let mut events = state.hive.workers.events.subscribe();
    let waited = tokio::time::timeout(LOAD_DEADLINE, async {
        loop {
            match state.hive.workers.get(&id) {
                Some(w) if w.state == WorkerState::Ready && w.url.is_some() => return Ok(w),
                Some(w) if w.state.is_live() => {}
                Some(w) => {
                    return Err(GatewayError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "worker_failed",
                        format!(
                            "the worker for {} is {}: {}",
                            model.id,
                            w.state.name(),
                            w.reason.unwrap_or_default()
                        ),
                    ));
                }
                None => {
                    return Err(GatewayError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "worker_failed",
                        format!("the worker for {} is gone", model.id),
                    ));
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
        }
    })
    .await;
    state
        .hive
        .metrics
        .gateway_load_seconds
        .get_or_create(&crate::metrics::ModelLabel {
            model: model.id.clone(),
        })
        .observe(waited_from.elapsed().as_secs_f64());
    waited.unwrap_or_else(|_| {
        Err(GatewayError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "load_timeout",
            format!("the worker for {} never became ready", model.id),
        ))
    })
}
