//! The worker's HTTP API: `/health`, `/v1/models`, `/v1/completions`,
//! `/v1/chat/completions`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::api::{ChatRequest, Checked, CompletionRequest, Invalid, Usage, error_body};
use crate::model::{GenerateParams, Generated, Model, Weights, generate};
use crate::sampler::SamplerSettings;

/// Everything the routes share.
#[derive(Debug)]
pub struct Worker {
    /// `--worker-id`.
    pub worker_id: String,
    model: OnceLock<Arc<Model>>,
    pool: Mutex<Vec<Weights>>,
    slots: Arc<Semaphore>,
    slots_total: usize,
    queue_limit: usize,
    waiting: AtomicUsize,
    /// Set on SIGTERM: new requests are refused.
    pub draining: CancellationToken,
    /// Set when the grace period is over: requests in flight are cut.
    pub cut: CancellationToken,
    last_activity: AtomicU64,
    /// Generations running now.
    generating: AtomicUsize,
    /// When a generation last made progress (a token), unix seconds.
    progress_at: AtomicU64,
    /// Seconds without progress while generating after which health says stalled
    /// (0: never).
    stall_secs: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Worker {
    /// A worker with `slots` sequences at once and `queue` requests waiting at most.
    pub fn new(worker_id: String, slots: usize, queue: usize) -> Self {
        Self {
            worker_id,
            model: OnceLock::new(),
            pool: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(0)),
            slots_total: slots,
            queue_limit: queue,
            waiting: AtomicUsize::new(0),
            draining: CancellationToken::new(),
            cut: CancellationToken::new(),
            last_activity: AtomicU64::new(unix_now()),
            generating: AtomicUsize::new(0),
            progress_at: AtomicU64::new(unix_now()),
            stall_secs: AtomicU64::new(0),
        }
    }

    /// Health says `stalled` (503) when a generation makes no progress for `secs`
    /// (0: never).
    pub fn set_stall_secs(&self, secs: u64) {
        self.stall_secs.store(secs, Ordering::Relaxed);
    }

    /// Whether a generation runs without progress past the stall limit.
    pub fn is_stalled(&self) -> bool {
        let limit = self.stall_secs.load(Ordering::Relaxed);
        limit > 0
            && self.generating.load(Ordering::Relaxed) > 0
            && unix_now().saturating_sub(self.progress_at.load(Ordering::Relaxed)) >= limit
    }

    /// Installs the loaded model and opens the slots: the worker is ready.
    pub fn set_ready(&self, model: Model) -> Result<(), crate::LoadError> {
        let slots = model.slots(self.slots_total)?;
        if let Ok(mut pool) = self.pool.lock() {
            *pool = slots;
        }
        if self.model.set(Arc::new(model)).is_ok() {
            self.slots.add_permits(self.slots_total);
        }
        Ok(())
    }

    /// Whether the model is loaded.
    pub fn is_ready(&self) -> bool {
        self.model.get().is_some()
    }

    /// The `/health` body, also sent as the heartbeat.
    pub fn health(&self) -> Value {
        let ready = self.is_ready();
        let status = match (ready, self.is_stalled()) {
            (true, true) => "stalled",
            (true, false) => "ready",
            (false, _) => "loading",
        };
        json!({
            "status": status,
            "worker_id": self.worker_id,
            "model": self.model.get().map(|m| m.name.clone()),
            "slots_total": self.slots_total,
            "slots_available": if ready { self.slots.available_permits() } else { 0 },
            "queued": self.waiting.load(Ordering::Relaxed),
            "last_activity": self.last_activity.load(Ordering::Relaxed),
        })
    }
}

/// The router over a shared [`Worker`]. With `api_key`, every route but `/health`
/// needs `Authorization: Bearer <api_key>`.
pub fn router(worker: Arc<Worker>, api_key: Option<String>) -> Router {
    let protected = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(axum::middleware::from_fn(
            move |request: Request, next: axum::middleware::Next| {
                let allowed = api_key.as_deref().is_none_or(|key| {
                    request
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split_once(' '))
                        .is_some_and(|(scheme, given)| {
                            scheme.eq_ignore_ascii_case("bearer") && same_secret(given.trim(), key)
                        })
                });
                async move {
                    if allowed {
                        next.run(request).await
                    } else {
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "missing or wrong API key",
                        )
                        .into_response()
                    }
                }
            },
        ));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .with_state(worker)
}

/// Whether two secrets are equal, in constant time for equal lengths.
fn same_secret(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// An error answer in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: e.message,
            param: e.param,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            400..=499 if self.status == StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            400..=499 => "invalid_request_error",
            503 => "unavailable_error",
            _ => "server_error",
        };
        let body = error_body(self.code, kind, &self.message, self.param);
        (self.status, Json(body)).into_response()
    }
}

/// `Json` whose rejections are 400s (415 for a wrong content type) in our error shape.
#[derive(Debug)]
pub struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                let status = match &rejection {
                    JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    JsonRejection::BytesRejection(_) => rejection.status(),
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(ApiError::new(
                    status,
                    "invalid_request",
                    rejection.body_text(),
                ))
            }
        }
    }
}

async fn health(State(worker): State<Arc<Worker>>) -> Response {
    let status = if worker.is_ready() && !worker.is_stalled() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(worker.health())).into_response()
}

async fn models(State(worker): State<Arc<Worker>>) -> Result<Json<Value>, ApiError> {
    let model = ready_model(&worker)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{"id": model.name, "object": "model", "owned_by": "rbee", "created": 0}],
    })))
}

fn ready_model(worker: &Worker) -> Result<Arc<Model>, ApiError> {
    if worker.draining.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the worker is shutting down",
        ));
    }
    worker.model.get().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "loading",
            "the model is still loading",
        )
    })
}

/// Waits for a free slot in the bounded queue; 429 when the queue is full.
async fn acquire_slot(worker: &Worker) -> Result<OwnedSemaphorePermit, ApiError> {
    if let Ok(permit) = worker.slots.clone().try_acquire_owned() {
        return Ok(permit);
    }
    let queued = worker.waiting.fetch_add(1, Ordering::SeqCst);
    if queued >= worker.queue_limit {
        worker.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "all {} slots are busy and {} requests are waiting; try again later",
                worker.slots_total, worker.queue_limit
            ),
        ));
    }
    let permit = tokio::select! {
        permit = worker.slots.clone().acquire_owned() => permit.ok(),
        () = worker.draining.cancelled() => None,
    };
    worker.waiting.fetch_sub(1, Ordering::SeqCst);
    permit.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the worker is shutting down",
        )
    })
}

/// What one generation sends back to the request's handler.
enum Piece {
    Text(String),
    Done(Generated),
    Failed(String),
}

struct Job {
    prompt: Vec<u32>,
    params: GenerateParams,
}

/// Tokenizes and checks the prompt against the context; picks `max_tokens`.
fn prepare(
    model: &Model,
    text: &str,
    checked: &Checked,
    default_max: Option<usize>,
) -> Result<Job, ApiError> {
    let prompt = model
        .vocab
        .encode(text, true)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    if prompt.is_empty() {
        return Err(Invalid {
            param: Some("prompt"),
            message: "the prompt is empty".into(),
        }
        .into());
    }
    if prompt.len() >= model.max_positions {
        let why = if model.max_positions < model.context_length {
            format!(
                "this worker holds {} positions for this model (its file says {}, but candle's {} implementation stops at {})",
                model.max_positions, model.context_length, model.architecture, model.max_positions
            )
        } else {
            format!("this model's context holds {}", model.max_positions)
        };
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "context_length_exceeded",
            message: format!("the prompt is {} tokens; {why}", prompt.len()),
            param: Some("messages"),
        });
    }
    let room = model.max_positions - prompt.len();
    let max_tokens = checked.max_tokens.or(default_max).unwrap_or(room).min(room);
    Ok(Job {
        prompt,
        params: GenerateParams {
            max_tokens,
            sampler: sampler_settings(model.sampling, checked),
            seed: checked.seed.unwrap_or_else(rand::random),
            stop: checked.stop.clone(),
            ignore_eos: checked.ignore_eos,
        },
    })
}

/// The model's sampling defaults with what the request sets in their place.
fn sampler_settings(defaults: SamplerSettings, c: &Checked) -> SamplerSettings {
    SamplerSettings {
        temperature: c.temperature.unwrap_or(defaults.temperature),
        top_k: c.top_k.unwrap_or(defaults.top_k),
        top_p: c.top_p.unwrap_or(defaults.top_p),
        min_p: c.min_p.unwrap_or(defaults.min_p),
        repeat_penalty: c.repeat_penalty.unwrap_or(defaults.repeat_penalty),
        repeat_last_n: c.repeat_last_n.unwrap_or(defaults.repeat_last_n),
    }
}

/// Starts the generation on a blocking thread; pieces arrive on the receiver.
/// One generation running, counted while it lives.
struct Generating<'a>(&'a AtomicUsize);

impl Drop for Generating<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn start(
    worker: &Arc<Worker>,
    model: Arc<Model>,
    job: Job,
    permit: OwnedSemaphorePermit,
) -> mpsc::Receiver<Piece> {
    let (tx, rx) = mpsc::channel(64);
    let worker = worker.clone();
    worker.last_activity.store(unix_now(), Ordering::Relaxed);
    worker.progress_at.store(unix_now(), Ordering::Relaxed);
    worker.generating.fetch_add(1, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // counted until this closure ends, whichever way it ends
        let _generating = Generating(&worker.generating);
        // A permit guarantees a free copy in the pool.
        let Some(mut weights) = worker.pool.lock().ok().and_then(|mut p| p.pop()) else {
            let _ = tx.blocking_send(Piece::Failed("no free slot".into()));
            return;
        };
        let result = generate(
            &model,
            &mut weights,
            &job.prompt,
            &job.params,
            &worker.cut,
            |text| {
                worker.progress_at.store(unix_now(), Ordering::Relaxed);
                tx.blocking_send(Piece::Text(text.to_string())).is_ok()
            },
        );
        if let Ok(mut pool) = worker.pool.lock() {
            pool.push(weights);
        }
        worker.last_activity.store(unix_now(), Ordering::Relaxed);
        let last = match result {
            Ok(generated) => {
                tracing::info!(
                    prompt_tokens = job.prompt.len(),
                    completion_tokens = generated.completion_tokens,
                    prompt_tok_per_sec = job.prompt.len() as f64 / generated.prompt_secs.max(1e-9),
                    gen_tok_per_sec =
                        generated.completion_tokens as f64 / generated.generate_secs.max(1e-9),
                    finish = generated.finish.as_str(),
                    "request done"
                );
                Piece::Done(generated)
            }
            Err(e) => {
                tracing::error!("generation failed: {e}");
                Piece::Failed(e.to_string())
            }
        };
        let _ = tx.blocking_send(last);
    });
    rx
}

fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Collects a whole answer.
async fn collect(mut rx: mpsc::Receiver<Piece>) -> Result<(String, Generated), ApiError> {
    let mut text = String::new();
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Text(t) => text.push_str(&t),
            Piece::Done(g) => return Ok((text, g)),
            Piece::Failed(e) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generation_failed",
                    e,
                ));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation_failed",
        "the generation ended without an answer",
    ))
}

/// The shape of one endpoint's stream chunks.
#[derive(Clone, Copy)]
enum Kind {
    Completion,
    Chat,
}

struct StreamMeta {
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    prompt_tokens: usize,
    include_usage: bool,
}

impl StreamMeta {
    fn chunk(&self, choice: Value, usage: Option<Usage>) -> Value {
        let object = match self.kind {
            Kind::Completion => "text_completion",
            Kind::Chat => "chat.completion.chunk",
        };
        let choices = if choice.is_null() {
            json!([])
        } else {
            json!([choice])
        };
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            v["usage"] = json!(usage);
        }
        v
    }

    fn text_choice(&self, text: &str, finish: Option<&str>) -> Value {
        match self.kind {
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
            Kind::Chat => {
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        }
    }
}

fn sse(
    meta: StreamMeta,
    mut rx: mpsc::Receiver<Piece>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = async_stream(move |tx| async move {
        let send = |v: Value| Event::default().data(v.to_string());
        if let Kind::Chat = meta.kind {
            let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
            if tx.send(send(meta.chunk(first, None))).await.is_err() {
                return;
            }
        }
        while let Some(piece) = rx.recv().await {
            let event = match piece {
                Piece::Text(t) => send(meta.chunk(meta.text_choice(&t, None), None)),
                Piece::Done(g) => {
                    let finish = meta.text_choice("", Some(g.finish.as_str()));
                    let _ = tx.send(send(meta.chunk(finish, None))).await;
                    if meta.include_usage {
                        let usage = Usage::new(meta.prompt_tokens, g.completion_tokens);
                        let _ = tx.send(send(meta.chunk(Value::Null, Some(usage)))).await;
                    }
                    break;
                }
                Piece::Failed(e) => {
                    let body = error_body("generation_failed", "server_error", &e, None);
                    let _ = tx.send(send(body)).await;
                    break;
                }
            };
            if tx.send(event).await.is_err() {
                // The client went away: dropping `rx` stops the generation.
                return;
            }
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

async fn completions(
    State(worker): State<Arc<Worker>>,
    Body(req): Body<CompletionRequest>,
) -> Result<Response, ApiError> {
    let checked = req.sampling.check()?;
    let prompt = req.prompt()?.to_string();
    let model = ready_model(&worker)?;
    // OpenAI's default for completions is 16 tokens.
    answer(
        &worker,
        model,
        Kind::Completion,
        &prompt,
        &checked,
        Some(16),
    )
    .await
}

async fn chat(
    State(worker): State<Arc<Worker>>,
    Body(req): Body<ChatRequest>,
) -> Result<Response, ApiError> {
    let checked = req.sampling.check()?;
    let messages = req.messages()?;
    let model = ready_model(&worker)?;
    // off the async runtime: a template from the model file is bounded, not trusted
    let rendering = Arc::clone(&model);
    let prompt = tokio::task::spawn_blocking(move || rendering.template.render(&messages))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!("the chat template's render failed: {e}"),
            param: None,
        })?
        .map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: match e {
                crate::template::TemplateError::TooExpensive(_) => "template_too_expensive",
                crate::template::TemplateError::Invalid(_) => "invalid_request",
            },
            message: e.to_string(),
            param: Some("messages"),
        })?;
    answer(&worker, model, Kind::Chat, &prompt, &checked, None).await
}

/// Runs one generation for either endpoint and answers in its shape: a stream of
/// chunks, or one object.
async fn answer(
    worker: &Arc<Worker>,
    model: Arc<Model>,
    kind: Kind,
    prompt: &str,
    checked: &Checked,
    default_max: Option<usize>,
) -> Result<Response, ApiError> {
    let job = prepare(&model, prompt, checked, default_max)?;
    let prompt_tokens = job.prompt.len();
    let permit = acquire_slot(worker).await?;
    let rx = start(worker, Arc::clone(&model), job, permit);
    let (prefix, object) = match kind {
        Kind::Completion => ("cmpl", "text_completion"),
        Kind::Chat => ("chatcmpl", "chat.completion"),
    };
    let meta = StreamMeta {
        kind,
        id: request_id(prefix),
        model: model.name.clone(),
        created: unix_now(),
        prompt_tokens,
        include_usage: checked.include_usage,
    };
    if checked.stream {
        return Ok(sse(meta, rx).into_response());
    }
    let (text, generated) = collect(rx).await?;
    let mut choice = json!({
        "index": 0,
        "logprobs": null,
        "finish_reason": generated.finish.as_str(),
    });
    match kind {
        Kind::Completion => choice["text"] = json!(text),
        Kind::Chat => choice["message"] = json!({"role": "assistant", "content": text}),
    }
    Ok(Json(json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
        "usage": Usage::new(prompt_tokens, generated.completion_tokens),
    }))
    .into_response())
}
