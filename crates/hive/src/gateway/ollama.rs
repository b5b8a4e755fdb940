//! Ollama's routes at Ollama's own paths, so that `OLLAMA_HOST=http://127.0.0.1:7835`
//! works: `/api/version`, `/api/tags`, `/api/show`, `/api/ps`, `/api/chat`,
//! `/api/generate`, `/api/embed`, `/api/delete` and `/api/pull`, in Ollama's request
//! and response shapes, streams as NDJSON. Models are named by alias
//! (`smollm2-135m-instruct:q4_1`) or catalog id. `keep_alive` has Ollama's meaning:
//! a duration (`"5m"`, `300`), negative for forever, `0` to unload after the answer.
//! Errors are Ollama's `{"error": "..."}`.

use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use futures_util::StreamExt as _;
use model_catalog::ModelEntry;
use provisioning::ArtifactProvisioner as _;
use serde_json::{Value, json};

use super::{Gateway, SharedGateway};
use super::{GatewayError, ensure_worker, names, proxy};

/// The routes.
pub fn router() -> Router<SharedGateway> {
    Router::new()
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings))
        .route("/api/delete", axum::routing::delete(delete))
        .route("/api/pull", post(pull))
}

/// Ollama's error shape.
pub(crate) struct OllamaError(pub(crate) GatewayError);

impl From<GatewayError> for OllamaError {
    fn from(e: GatewayError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let mut r = (self.0.status, axum::Json(json!({"error": self.0.message}))).into_response();
        super::retry_after(&mut r);
        r
    }
}

pub(crate) type Answer = Result<Response, OllamaError>;

pub(super) fn bad(message: impl Into<String>) -> OllamaError {
    OllamaError(GatewayError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        message,
    ))
}

/// The request's model name: Ollama's `model`, or the older `name`.
pub(super) fn model_name(body: &Value) -> Result<String, OllamaError> {
    match body.get("model").or_else(|| body.get("name")) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(bad("model is required")),
        Some(other) => Err(bad(format!("model must be a string, got {other}"))),
    }
}

pub(super) fn parse(bytes: Result<Bytes, BytesRejection>) -> Result<Value, OllamaError> {
    let bytes = bytes.map_err(GatewayError::from)?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(bad("the body must be a JSON object"))
    }
}

/// A `keep_alive` this long or longer (about a hundred years) means for ever.
const FOREVER_SECS: f64 = 100.0 * 365.25 * 86_400.0;

/// `keep_alive` in seconds: `None` when absent (the hive's default), `Some(0)` to
/// unload after the answer, `Some(u64::MAX)` for forever (negative, or past about a
/// hundred years).
fn keep_alive(body: &Value) -> Result<Option<u64>, OllamaError> {
    let seconds = |s: f64| -> Result<Option<u64>, OllamaError> {
        if s.is_nan() {
            return Err(bad("keep_alive must be a duration, not NaN"));
        }
        if !(0.0..FOREVER_SECS).contains(&s) {
            return Ok(Some(u64::MAX));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Some(s as u64))
    };
    match body.get("keep_alive") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) => seconds(s),
            None => Err(bad("keep_alive must be a duration")),
        },
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.starts_with('-') {
                return Ok(Some(u64::MAX));
            }
            if let Ok(secs) = s.parse::<f64>() {
                return seconds(secs);
            }
            match go_duration(s) {
                Some(secs) => seconds(secs),
                None => Err(bad(format!(
                    "keep_alive {s:?} is not a duration (such as 30s, 5m, 1h30m, or -1)"
                ))),
            }
        }
        Some(other) => Err(bad(format!("keep_alive must be a duration, got {other}"))),
    }
}

/// Seconds in a Go duration, as Ollama takes them: `300ms`, `1.5h`, `2h45m10s`.
fn go_duration(s: &str) -> Option<f64> {
    let mut rest = s;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit..];
    }
    Some(total)
}

/// The worker's idle TTL for a `keep_alive`: forever is none.
fn ttl(keep_alive: Option<u64>) -> Option<u64> {
    keep_alive.map(|s| if s == u64::MAX { 0 } else { s.max(1) })
}

/// Ollama's `options` as OpenAI fields.
fn options(body: &Value, out: &mut Value) -> Result<(), OllamaError> {
    let Some(opts) = body.get("options").filter(|o| !o.is_null()) else {
        return Ok(());
    };
    let Some(opts) = opts.as_object() else {
        return Err(bad(format!("options must be an object, got {opts}")));
    };
    for (name, value) in opts {
        // what Ollama reads and llama.cpp has no field for (num_ctx, mirostat, ...)
        // is left out, as before
        let Some(to) = crate::sampling::field(name) else {
            continue;
        };
        match crate::sampling::check(name, value) {
            Ok(Some(v)) => out[to] = v,
            Ok(None) => {}
            Err(why) => return Err(bad(format!("options.{why}"))),
        }
    }
    Ok(())
}

pub(super) fn stream_flag(body: &Value) -> Result<bool, OllamaError> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(format!("stream must be true or false, got {other}"))),
    }
}

fn details(e: &ModelEntry) -> Value {
    let g = e.gguf.as_ref();
    let arch = g.and_then(|g| g.architecture.clone()).unwrap_or_default();
    json!({
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": g.map(|g| parameter_size(g.parameter_count)).unwrap_or_default(),
        "quantization_level": g.and_then(|g| g.quantization.clone()).unwrap_or_default(),
    })
}

/// `135M`, `7.2B`, as Ollama writes parameter counts.
#[allow(clippy::cast_precision_loss)]
fn parameter_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else {
        format!("{n}")
    }
}

fn digest(e: &ModelEntry) -> String {
    e.sha256.clone().unwrap_or_default()
}

#[utoipa::path(get, operation_id = "ollama_version", path = "/api/version", tag = "ollama", responses((status = 200, description = "The version Ollama clients read", body = Object)))]
pub(crate) async fn version() -> Response {
    axum::Json(json!({"version": env!("CARGO_PKG_VERSION")})).into_response()
}

async fn available(
    state: &Gateway,
) -> Result<Vec<(ModelEntry, chrono::DateTime<Utc>)>, OllamaError> {
    let catalog = std::sync::Arc::clone(&state.hive.catalog);
    let list = crate::ops::blocking(move || Ok(catalog.list()?))
        .await
        .map_err(GatewayError::from)?;
    Ok(list
        .into_iter()
        .filter(|r| r.artifact.status == artifact_catalog::ArtifactStatus::Available)
        .map(|r| (r.artifact, r.added_at))
        .collect())
}

#[utoipa::path(get, operation_id = "ollama_tags", path = "/api/tags", tag = "ollama", responses((status = 200, description = "The available models, as Ollama lists them", body = Object)))]
pub(crate) async fn tags(State(state): State<SharedGateway>) -> Answer {
    let models: Vec<Value> = available(&state)
        .await?
        .iter()
        .map(|(e, added)| {
            let name = e.alias();
            json!({
                "name": name, "model": name, "modified_at": added.to_rfc3339(),
                "size": e.size, "digest": digest(e), "details": details(e),
            })
        })
        .collect();
    Ok(axum::Json(json!({"models": models})).into_response())
}

#[utoipa::path(get, operation_id = "ollama_ps", path = "/api/ps", tag = "ollama", responses((status = 200, description = "The models loaded now", body = Object)))]
pub(crate) async fn ps(State(state): State<SharedGateway>) -> Answer {
    let models = available(&state).await?;
    let mut out = Vec::new();
    for w in state
        .hive
        .workers
        .list()
        .into_iter()
        .filter(|w| w.state.is_live())
    {
        let Some((e, _)) = models.iter().find(|(e, _)| e.id == w.model_ref) else {
            continue;
        };
        let name = e.alias();
        let expires = w.idle_ttl_secs.map_or_else(
            || "0001-01-01T00:00:00Z".to_owned(),
            |s| {
                let from = w.last_activity.unwrap_or(w.started_at);
                // checked: a TTL of centuries is "no expiry" rather than a panic
                i64::try_from(s)
                    .ok()
                    .and_then(chrono::Duration::try_seconds)
                    .and_then(|d| from.checked_add_signed(d))
                    .map_or_else(|| "9999-12-31T23:59:59Z".to_owned(), |t| t.to_rfc3339())
            },
        );
        let vram = if w.backend == "cpu" { 0 } else { e.size };
        out.push(json!({
            "name": name, "model": name, "size": e.size, "digest": digest(e),
            "details": details(e), "expires_at": expires, "size_vram": vram,
        }));
    }
    Ok(axum::Json(json!({"models": out})).into_response())
}

#[utoipa::path(post, operation_id = "ollama_show", path = "/api/show", tag = "ollama", request_body = Object, responses((status = 200, description = "A model's details", body = Object), (status = 404, description = "No such model", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn show(
    State(state): State<SharedGateway>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = parse(bytes)?;
    let e = names::resolve(&state, &model_name(&body)?).await?;
    let g = e.gguf.as_ref();
    let arch = g.and_then(|g| g.architecture.clone()).unwrap_or_default();
    let mut info = json!({
        "general.architecture": arch,
        "general.parameter_count": g.map_or(0, |g| g.parameter_count),
    });
    if let Some(ctx) = g.and_then(|g| g.context_length) {
        info[format!("{arch}.context_length")] = json!(ctx);
    }
    if let Some(name) = g.and_then(|g| g.name.clone()) {
        info["general.name"] = json!(name);
    }
    // the template is in the file's header, not the summary (or Ollama's, as pulled)
    let path = e.path.clone();
    let pulled = e.preset.template.clone();
    let template = crate::ops::blocking(move || {
        if let Some(t) = pulled {
            return Ok(t);
        }
        let file = fs_err::File::open(&path).map_err(crate::error::ApiError::internal)?;
        let g = gguf::read(std::io::BufReader::new(file), &gguf::ReadOptions::default())
            .map_err(crate::error::ApiError::internal)?;
        Ok(g.get("tokenizer.chat_template")
            .and_then(gguf::Value::as_str)
            .unwrap_or("")
            .to_owned())
    })
    .await
    .unwrap_or_default();
    let parameters = crate::sampling::to_text(&e.preset.parameters);
    let mut modelfile = format!("FROM {}\n", e.path.display());
    if let Some(system) = &e.preset.system {
        modelfile.push_str(&format!("SYSTEM \"\"\"{system}\"\"\"\n"));
    }
    for line in parameters.lines() {
        modelfile.push_str(&format!("PARAMETER {line}\n"));
    }
    let mut shown = json!({
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template,
        "details": details(&e),
        "model_info": info,
        // as Ollama says it: what the model's kind answers
        "capabilities": crate::engines::capabilities(&e),
        "modified_at": Utc::now().to_rfc3339(),
    });
    if let Some(system) = &e.preset.system {
        shown["system"] = json!(system);
    }
    Ok(axum::Json(shown).into_response())
}

/// After the answer: `keep_alive: 0` unloads the model now.
async fn unload_if_asked(state: &Gateway, model_id: &str, keep_alive: Option<u64>) {
    if keep_alive == Some(0) {
        let _ = crate::ops::workers::unload(&state.hive, model_id).await;
    }
}

/// The answer to a request with nothing to answer, that only loads or unloads the
/// model (`done_reason` says which), in `/api/chat`'s shape or `/api/generate`'s.
fn nothing_said(name: &str, chat: bool, reason: &str) -> Value {
    let mut done = json!({"model": name, "created_at": Utc::now().to_rfc3339(), "done": true, "done_reason": reason});
    if chat {
        done["message"] = json!({"role": "assistant", "content": ""});
    } else {
        done["response"] = json!("");
    }
    done
}

/// A 200 whose body is the stream of NDJSON lines `body`.
pub(super) fn ndjson_response(body: Body) -> Result<Response, OllamaError> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .map_err(|e| {
            OllamaError(GatewayError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            ))
        })
}

pub(super) fn ndjson(line: &Value) -> Bytes {
    let mut s = line.to_string();
    s.push('\n');
    Bytes::from(s)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn nanos(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

/// `/api/chat` and `/api/generate`: the OpenAI route of the worker, translated.
async fn converse(
    state: SharedGateway,
    bytes: Result<Bytes, BytesRejection>,
    chat: bool,
) -> Answer {
    let started = Instant::now();
    let body = parse(bytes)?;
    let name = model_name(&body)?;
    let keep = keep_alive(&body)?;
    let stream = stream_flag(&body)?;
    let mut upstream_body = json!({"stream": stream});
    options(&body, &mut upstream_body)?;
    super::fields::check_numbers(&upstream_body).map_err(|m| bad(format!("options: {m}")))?;
    // Ollama's structured outputs, "json" or a JSON schema: OpenAI's response_format
    // for a chat, llama.cpp's json_schema for a completion (our worker has neither)
    let schema = match body.get("format") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if f == "json" => Some(json!({})),
        Some(schema @ Value::Object(_)) => Some(schema.clone()),
        Some(other) => {
            return Err(bad(format!(
                "format must be \"json\" or a JSON schema, got {other}"
            )));
        }
    };
    // a generate goes through the model's own chat template, as Ollama's does,
    // unless it is `raw`
    let raw = match body.get("raw") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(bad(format!("raw must be true or false, got {other}"))),
    };
    let upstream_chat = chat || !raw;
    for (field, why) in [
        (
            "template",
            "a Go template is not applied here: the model's own chat template is (send raw: true with the prompt already formatted)",
        ),
        ("suffix", "fill-in-the-middle (suffix) is not served"),
    ] {
        if body
            .get(field)
            .is_some_and(|v| !v.is_null() && v != "" && v != &json!([]))
        {
            let why = if field == "template" && raw {
                "raw and template exclude each other"
            } else {
                why
            };
            return Err(bad(format!("{field}: {why}")));
        }
    }
    if let Some(think) = body.get("think").filter(|t| !t.is_null()) {
        let Some(think) = think.as_bool() else {
            return Err(bad(format!("think must be true or false, got {think}")));
        };
        upstream_body["chat_template_kwargs"] = json!({"enable_thinking": think});
    }
    match (schema, upstream_chat) {
        (None, _) => {}
        (Some(s), true) if s == json!({}) => {
            upstream_body["response_format"] = json!({"type": "json_object"});
        }
        (Some(s), true) => {
            upstream_body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "format", "schema": s}});
        }
        (Some(s), false) => upstream_body["json_schema"] = s,
    }
    let mut images = 0usize;
    let empty = if chat {
        let Some(messages) = body.get("messages").filter(|m| !m.is_null()) else {
            return Err(bad("messages is required"));
        };
        if !messages.is_array() {
            return Err(bad(format!("messages must be an array, got {messages}")));
        }
        // Ollama's `images` on a message: OpenAI's content parts
        let mut messages = messages.clone();
        for m in messages.as_array_mut().into_iter().flatten() {
            if let Some(list) = super::images::given(m.get("images")).cloned() {
                let text = m["content"].as_str().unwrap_or_default().to_owned();
                images += list.as_array().map_or(0, Vec::len);
                m["content"] = super::images::ollama_parts(&text, &list)?;
                if let Some(o) = m.as_object_mut() {
                    o.remove("images");
                }
            }
        }
        let empty = messages.as_array().is_some_and(Vec::is_empty);
        upstream_body["messages"] = messages;
        empty
    } else {
        let prompt = match body.get("prompt") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(bad(format!("prompt must be a string, got {other}"))),
        };
        let system = match body.get("system") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(bad(format!("system must be a string, got {other}"))),
        };
        let given = super::images::given(body.get("images"));
        if raw {
            if given.is_some() {
                return Err(bad(
                    "images: a raw prompt takes no images (send them without raw)",
                ));
            }
            upstream_body["prompt"] = json!(prompt);
        } else {
            let mut messages = Vec::new();
            if !system.is_empty() {
                messages.push(json!({"role": "system", "content": system}));
            }
            let content = match given {
                Some(list) => {
                    images += list.as_array().map_or(0, Vec::len);
                    super::images::ollama_parts(&prompt, list)?
                }
                None => json!(prompt),
            };
            messages.push(json!({"role": "user", "content": content}));
            upstream_body["messages"] = json!(messages);
        }
        prompt.is_empty()
    };
    let model = names::resolve(&state, &name).await?;
    if !empty {
        // an empty request only loads the model, whatever its kind
        super::kinds::check(&model, super::kinds::Wants::Text)?;
        super::images::check(&model, images)?;
    }
    let load_started = Instant::now();
    // an empty request only loads (or, with keep_alive 0, unloads) the model
    if empty && keep == Some(0) {
        unload_if_asked(&state, &model.id, keep).await;
        return Ok(axum::Json(nothing_said(&name, chat, "unload")).into_response());
    }
    let ticket = super::queue::enter(&state, &model)?;
    let worker = ensure_worker(&state, &model, ttl(keep)).await?;
    if images > 0 && worker.engine == worker_catalog::Engine::Rbee {
        return Err(bad(format!(
            "images: llm-worker-rbee has no vision; llama.cpp's server does (rbee models set {} --engine llama.cpp)",
            model.alias()
        )));
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    if empty {
        return Ok(axum::Json(nothing_said(&name, chat, "load")).into_response());
    }
    upstream_body["model"] = json!(model.id);
    if stream {
        upstream_body["stream_options"] = json!({"include_usage": true});
    }
    let path = if upstream_chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    super::defaults::apply(&model.preset, path, &mut upstream_body);
    let upstream = proxy::post(&state, &worker, path, &upstream_body, ticket).await?;
    if !upstream.status.is_success() {
        let status = upstream.status;
        let v = upstream.json().await.unwrap_or(Value::Null);
        let message = v["error"]["message"]
            .as_str()
            .map_or_else(|| v.to_string(), str::to_owned);
        return Err(OllamaError(GatewayError::new(
            status,
            "worker_error",
            message,
        )));
    }
    let t = Translate {
        name,
        chat,
        upstream_chat,
        load_secs,
        started,
    };
    if !stream {
        let v = upstream.json().await?;
        let done = t.done(
            &t.piece(&v),
            &v["usage"],
            &v["timings"],
            None,
            &reason_of(&v),
        );
        unload_if_asked(&state, &model.id, keep).await;
        return Ok(axum::Json(done).into_response());
    }
    let events: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Value, String>> + Send>> =
        Box::pin(upstream.events());
    let run = Run {
        events,
        t,
        usage: Value::Null,
        timings: Value::Null,
        first: None,
        reason: "stop".to_owned(),
        state,
        model_id: model.id.clone(),
        keep,
    };
    let out = futures_util::stream::unfold(Some(run), |run| async move {
        let mut run = run?;
        loop {
            match run.events.next().await {
                Some(Ok(v)) => {
                    if v["choices"][0]["finish_reason"].is_string() {
                        run.reason = reason_of(&v);
                    }
                    if v.get("usage").is_some_and(|u| !u.is_null()) {
                        run.usage = v["usage"].clone();
                    }
                    if v.get("timings").is_some_and(|t| !t.is_null()) {
                        run.timings = v["timings"].clone();
                    }
                    let text = run.t.piece(&v);
                    if !text.is_empty() {
                        run.first.get_or_insert_with(Instant::now);
                        let line = ndjson(&run.t.line(&text));
                        return Some((Ok::<_, std::io::Error>(line), Some(run)));
                    }
                }
                Some(Err(e)) => return Some((Ok(ndjson(&json!({"error": e}))), None)),
                None => {
                    unload_if_asked(&run.state, &run.model_id, run.keep).await;
                    let done = run
                        .t
                        .done("", &run.usage, &run.timings, run.first, &run.reason);
                    return Some((Ok(ndjson(&done)), None));
                }
            }
        }
    });
    ndjson_response(Body::from_stream(out))
}

fn reason_of(v: &Value) -> String {
    match v["choices"][0]["finish_reason"].as_str() {
        Some("length") => "length".to_owned(),
        _ => "stop".to_owned(),
    }
}

/// One streamed answer being translated.
struct Run {
    events: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Value, String>> + Send>>,
    t: Translate,
    usage: Value,
    /// llama-server's own timings of the answer, when it gives them.
    timings: Value,
    /// When the first text came.
    first: Option<Instant>,
    reason: String,
    state: SharedGateway,
    model_id: String,
    keep: Option<u64>,
}

/// OpenAI's answer in Ollama's words.
struct Translate {
    name: String,
    /// Ollama's chat shape (else generate's).
    chat: bool,
    /// The worker answered on its chat route (else its completions route).
    upstream_chat: bool,
    load_secs: f64,
    started: Instant,
}

impl Translate {
    /// The text of one OpenAI chunk or answer.
    fn piece(&self, v: &Value) -> String {
        let c = &v["choices"][0];
        let text = if self.upstream_chat {
            c["delta"]["content"]
                .as_str()
                .or_else(|| c["message"]["content"].as_str())
        } else {
            c["text"].as_str()
        };
        text.unwrap_or("").to_owned()
    }

    /// A line with some text.
    fn line(&self, text: &str) -> Value {
        let mut v =
            json!({"model": self.name, "created_at": Utc::now().to_rfc3339(), "done": false});
        if self.chat {
            v["message"] = json!({"role": "assistant", "content": text});
        } else {
            v["response"] = json!(text);
        }
        v
    }

    /// The last line: the reason, the counts and the durations (llama-server's own
    /// timings where it gives them, else as measured here from the first text), from
    /// which Ollama's clients work out tokens per second.
    fn done(
        &self,
        text: &str,
        usage: &Value,
        timings: &Value,
        first: Option<Instant>,
        reason: &str,
    ) -> Value {
        let mut v = self.line(text);
        v["done"] = json!(true);
        v["done_reason"] = json!(reason);
        v["total_duration"] = json!(nanos(self.started.elapsed().as_secs_f64()));
        v["load_duration"] = json!(nanos(self.load_secs));
        v["prompt_eval_count"] = json!(usage["prompt_tokens"].as_u64().unwrap_or(0));
        v["eval_count"] = json!(usage["completion_tokens"].as_u64().unwrap_or(0));
        let ms = |k: &str| timings[k].as_f64().filter(|t| t.is_finite() && *t >= 0.0);
        let measured_prompt =
            first.map(|f| f.saturating_duration_since(self.started).as_secs_f64() - self.load_secs);
        let measured_eval = first.map(|f| f.elapsed().as_secs_f64());
        if let Some(secs) = ms("prompt_ms").map(|t| t / 1e3).or(measured_prompt) {
            v["prompt_eval_duration"] = json!(nanos(secs.max(0.0)));
        }
        if let Some(secs) = ms("predicted_ms").map(|t| t / 1e3).or(measured_eval) {
            v["eval_duration"] = json!(nanos(secs.max(0.0)));
        }
        v
    }
}

#[utoipa::path(post, operation_id = "ollama_chat", path = "/api/chat", tag = "ollama", request_body = Object, responses((status = 200, description = "The answer, whole or as NDJSON", content((Object = "application/json"), (Object = "application/x-ndjson"))), (status = 404, description = "No such model", body = crate::error::OllamaErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn chat(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    converse(state, body, true).await
}

#[utoipa::path(post, operation_id = "ollama_generate", path = "/api/generate", tag = "ollama", request_body = Object, responses((status = 200, description = "The answer, whole or as NDJSON", content((Object = "application/json"), (Object = "application/x-ndjson"))), (status = 404, description = "No such model", body = crate::error::OllamaErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn generate(
    State(state): State<SharedGateway>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    converse(state, body, false).await
}

/// `/api/embed`: llama.cpp's `/v1/embeddings`, as `{"embeddings": [[...]]}`.
#[utoipa::path(post, operation_id = "ollama_embed", path = "/api/embed", tag = "ollama", request_body = Object, responses((status = 200, description = "Embeddings", body = Object), (status = 404, description = "No such model", body = crate::error::OllamaErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn embed(
    State(state): State<SharedGateway>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = parse(bytes)?;
    let name = model_name(&body)?;
    let input = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        _ => return Err(bad("input must be a string or an array of strings")),
    };
    let keep = keep_alive(&body)?;
    let embeddings = embeddings_of(&state, &name, input, keep).await?;
    Ok(axum::Json(json!({"model": name, "embeddings": embeddings})).into_response())
}

/// `/api/embeddings`: Ollama's older route, one `prompt` in, one `embedding` out.
#[utoipa::path(post, operation_id = "ollama_embeddings", path = "/api/embeddings", tag = "ollama", request_body = Object, responses((status = 200, description = "The prompt's embedding", body = Object), (status = 404, description = "No such model", body = crate::error::OllamaErrorBody), (status = 429, description = "The model's queue is full", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn embeddings(
    State(state): State<SharedGateway>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = parse(bytes)?;
    let name = model_name(&body)?;
    let prompt = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(bad("prompt must be a string")),
    };
    let keep = keep_alive(&body)?;
    let embedding = if prompt.is_empty() {
        // as Ollama: nothing to embed is an empty embedding, of a model that exists
        names::resolve(&state, &name).await?;
        json!([])
    } else {
        embeddings_of(&state, &name, vec![prompt], keep)
            .await?
            .pop()
            .unwrap_or_else(|| json!([]))
    };
    Ok(axum::Json(json!({"embedding": embedding})).into_response())
}

/// One embedding for each of `input`, by the model `name` (loaded if need be).
async fn embeddings_of(
    state: &SharedGateway,
    name: &str,
    input: Vec<String>,
    keep: Option<u64>,
) -> Result<Vec<Value>, OllamaError> {
    let model = names::resolve(state, name).await?;
    super::kinds::check(&model, super::kinds::Wants::Embeddings)?;
    let ticket = super::queue::enter(state, &model)?;
    let worker = ensure_worker(state, &model, ttl(keep)).await?;
    if worker.engine == worker_catalog::Engine::Rbee {
        return Err(bad(
            "llm-worker-rbee has no embeddings; llama.cpp's server does",
        ));
    }
    let upstream = proxy::post(
        state,
        &worker,
        "/v1/embeddings",
        &json!({"model": model.id, "input": input}),
        ticket,
    )
    .await?;
    let status = upstream.status;
    let v = upstream.json().await?;
    if !status.is_success() {
        let message = v["error"]["message"]
            .as_str()
            .map_or_else(|| v.to_string(), str::to_owned);
        return Err(OllamaError(GatewayError::new(
            status,
            "worker_error",
            message,
        )));
    }
    let embeddings: Vec<Value> = v["data"]
        .as_array()
        .map(|d| d.iter().map(|e| e["embedding"].clone()).collect())
        .unwrap_or_default();
    unload_if_asked(state, &model.id, keep).await;
    Ok(embeddings)
}

/// `/api/delete`: removes the model from the catalog (its file too, unless it was
/// registered where it lies).
#[utoipa::path(delete, operation_id = "ollama_delete", path = "/api/delete", tag = "ollama", request_body = Object, responses((status = 200, description = "Deleted"), (status = 404, description = "No such model", body = crate::error::OllamaErrorBody), (status = 409, description = "A worker uses it", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn delete(
    State(state): State<SharedGateway>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = parse(bytes)?;
    let name = model_name(&body)?;
    // the model the name is, whatever its status (never pulled, never its base)
    let Some(model) = names::find(&state, &name).await? else {
        return Err(OllamaError(GatewayError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("model {name:?} not found"),
        )));
    };
    crate::ops::models::model_delete(&state.hive, &model.id)
        .await
        .map_err(GatewayError::from)?;
    Ok(StatusCode::OK.into_response())
}

/// `/api/pull`: the hive's download job of a reference, its progress as Ollama's
/// status lines.
#[utoipa::path(post, operation_id = "ollama_pull", path = "/api/pull", tag = "ollama", request_body = Object, responses((status = 200, description = "The pull's progress, whole or as NDJSON", content((Object = "application/json"), (Object = "application/x-ndjson"))), (status = 404, description = "No such model", body = crate::error::OllamaErrorBody), (status = 507, description = "No room on the disk", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn pull(
    State(state): State<SharedGateway>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = parse(bytes)?;
    let name = model_name(&body)?;
    let stream = stream_flag(&body)?;
    // a model here already is pulled: nothing to fetch
    if let Some(here) = names::find(&state, &name).await?
        && here.status == artifact_catalog::ArtifactStatus::Available
    {
        let done = json!({"status": "success"});
        if !stream {
            return Ok(axum::Json(done).into_response());
        }
        let lines = [json!({"status": format!("{} is here", here.id)}), done];
        let out: Vec<Result<Bytes, std::io::Error>> = lines.iter().map(|l| Ok(ndjson(l))).collect();
        return ndjson_response(Body::from_stream(futures_util::stream::iter(out)));
    }
    // a bare NAME[:TAG] is Ollama's library's, as `ollama pull` takes it
    let reference = if state.hive.provisioner.supports(&name) {
        name
    } else {
        format!("ollama:{name}")
    };
    let job = crate::ops::dispatch::start(
        &state.hive,
        crate::ops::dispatch::Operation::ModelDownload {
            model_ref: reference.clone(),
            sha256: None,
            no_mmproj: false,
        },
    )
    .await
    .map_err(GatewayError::from)?;
    let (history, rx) = job.subscribe();
    let live =
        tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|e| async move { e.ok() });
    let events = futures_util::stream::iter(history).chain(live);
    let lines = events
        .take_while(|e| futures_util::future::ready(e.kind != "done"))
        .filter_map(move |e| {
            let reference = reference.clone();
            async move {
                match e.kind {
                    "progress" => Some(json!({
                        "status": format!("pulling {reference}"),
                        "digest": reference,
                        "total": e.data["bytes_total"],
                        "completed": e.data["bytes_done"],
                    })),
                    "narration" => Some(json!({"status": e.data["message"]})),
                    "result" => Some(json!({"status": "success"})),
                    "error" => Some(json!({"error": e.data["message"]})),
                    _ => None,
                }
            }
        });
    if !stream {
        let all: Vec<Value> = lines.collect().await;
        let last = all.last().cloned().unwrap_or(Value::Null);
        if let Some(e) = last.get("error").and_then(Value::as_str) {
            return Err(OllamaError(GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "pull_failed",
                e,
            )));
        }
        return Ok(axum::Json(json!({"status": "success"})).into_response());
    }
    let out = futures_util::stream::once(futures_util::future::ready(
        json!({"status": "pulling manifest"}),
    ))
    .chain(lines)
    .map(|v| Ok::<_, std::io::Error>(ndjson(&v)));
    ndjson_response(Body::from_stream(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_as_ollama_means_it() {
        let k = |v: Value| keep_alive(&json!({ "keep_alive": v })).map_err(|e| e.0.message);
        assert_eq!(k(json!("5m")), Ok(Some(300)));
        assert_eq!(k(json!("1h30m")), Ok(Some(5400)));
        assert_eq!(k(json!("1.5h")), Ok(Some(5400)));
        assert_eq!(k(json!(120)), Ok(Some(120)));
        assert_eq!(k(json!("120")), Ok(Some(120)));
        assert_eq!(k(json!(0)), Ok(Some(0)));
        assert_eq!(k(json!(-1)), Ok(Some(u64::MAX)));
        assert_eq!(k(json!("-1m")), Ok(Some(u64::MAX)));
        assert_eq!(keep_alive(&json!({})).ok(), Some(None));
        assert!(k(json!("soon")).is_err());
        assert!(k(json!("5 minutes")).is_err());
        assert!(k(json!([1])).is_err());
        assert_eq!(ttl(Some(u64::MAX)), Some(0));
        assert_eq!(ttl(Some(0)), Some(1));
        // centuries are for ever, not an overflow later
        for forever in [
            json!(1e16),
            json!(9_223_372_036_854_775_807_i64),
            json!(u64::MAX),
            json!("1e300"),
            json!("2562047h"),
        ] {
            assert_eq!(k(forever.clone()), Ok(Some(u64::MAX)), "{forever}");
        }
        assert_eq!(k(json!(3_000_000_000_u64)), Ok(Some(3_000_000_000)));
        assert!(k(json!("NaN")).is_err());
    }
}
