//! `/v1/workers`, `/v1/worker-binaries`, `/v1/heartbeats/stream`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::ApiJson;
use crate::api::accepted;
use crate::error::ApiError;
use crate::ops::binaries::InstallRequest;
use crate::ops::workers::SpawnRequest;
use crate::state::SharedState;

/// The routes.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/v1/workers", get(list))
        .route("/v1/workers/spawn", post(spawn))
        .route("/v1/workers/spawn-batch", post(spawn_batch))
        .route("/v1/workers/{id}", get(get_one).delete(stop))
        .route("/v1/workers/{id}/heartbeat", post(heartbeat))
        .route("/v1/workers/{id}/logs", get(logs))
        .route("/v1/worker-binaries", get(binaries))
        .route("/v1/worker-binaries/install", post(install))
        .route(
            "/v1/worker-binaries/{id}",
            get(binary).delete(remove_binary),
        )
        .route("/v1/heartbeats/stream", get(heartbeats))
}

/// The worker processes.
#[utoipa::path(get, operation_id = "workers_list", path = "/v1/workers", tag = "workers", responses((status = 200, description = "Every worker", body = Object)))]
pub async fn list(State(state): State<SharedState>) -> ApiJson<Value> {
    let workers = state.workers.list();
    let mut sys = sysinfo::System::new();
    let telemetry = crate::workers::telemetry(&workers, &mut sys);
    let with_memory: Vec<Value> = workers
        .iter()
        .zip(telemetry)
        .map(|(w, t)| {
            let mut v = json!(w);
            v["rss_bytes"] = t["rss_bytes"].clone();
            v["cpu_percent"] = t["cpu_percent"].clone();
            v
        })
        .collect();
    ApiJson(json!({"workers": with_memory}))
}

/// One worker.
#[utoipa::path(get, operation_id = "workers_get_one", path = "/v1/workers/{id}", tag = "workers", params(("id" = String, Path)), responses((status = 200, description = "The worker", body = Object), (status = 404, description = "No such worker", body = crate::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    state
        .workers
        .get(&id)
        .map(|w| ApiJson(json!(w)))
        .ok_or_else(|| ApiError::not_found(format!("no worker {id:?}")))
}

/// Starts a worker for an available model; a job that ends when it is ready.
#[utoipa::path(post, operation_id = "workers_spawn", path = "/v1/workers/spawn", tag = "workers", request_body = SpawnRequest, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Bad request", body = crate::error::ErrorBody), (status = 404, description = "Unknown model or no worker binary", body = crate::error::ErrorBody), (status = 409, description = "Model not available, or not enough memory", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn spawn(
    State(state): State<SharedState>,
    ApiJson(req): ApiJson<SpawnRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let job = crate::ops::workers::start_spawn(&state, req).await?;
    Ok(accepted(&job))
}

/// Several workers to start.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnBatchBody {
    /// Each as `POST /v1/workers/spawn` takes it, 1 to 100.
    pub workers: Vec<SpawnRequest>,
}

/// Starts several workers: one parent job, a child job each; one failure does not stop
/// the others.
#[utoipa::path(post, operation_id = "workers_spawn_batch", path = "/v1/workers/spawn-batch", tag = "workers", request_body = SpawnBatchBody, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Empty or too big", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn spawn_batch(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<SpawnBatchBody>,
) -> Result<impl IntoResponse, ApiError> {
    let op = crate::ops::dispatch::Operation::WorkerSpawnBatch {
        workers: body.workers,
    };
    let job = crate::ops::dispatch::start(&state, op).await?;
    Ok(accepted(&job))
}

/// Stops a worker: SIGTERM, the grace period, SIGKILL.
#[utoipa::path(delete, operation_id = "workers_stop", path = "/v1/workers/{id}", tag = "workers", params(("id" = String, Path)), responses((status = 200, description = "Stopped", body = Object), (status = 404, description = "No such worker", body = crate::error::ErrorBody)))]
pub async fn stop(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    crate::ops::workers::stop(&state, &id).await.map(ApiJson)
}

/// A worker's heartbeat.
#[utoipa::path(post, operation_id = "workers_heartbeat", path = "/v1/workers/{id}/heartbeat", tag = "workers", params(("id" = String, Path)), request_body = Object, responses((status = 204, description = "Recorded"), (status = 404, description = "No such worker", body = crate::error::ErrorBody)))]
pub async fn heartbeat(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<StatusCode, ApiError> {
    if state.workers.heartbeat(&id, &body) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no worker {id:?}")))
    }
}

/// Which part of a log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Bytes to skip (to follow: the `x-log-offset` of the last answer).
    pub offset: Option<u64>,
    /// The last lines only.
    pub tail: Option<usize>,
}

/// A worker's stdout and stderr; `x-log-offset` is where the next read starts.
#[utoipa::path(get, operation_id = "workers_logs", path = "/v1/workers/{id}/logs", tag = "workers", params(("id" = String, Path), LogQuery), responses((status = 200, description = "The log", content_type = "text/plain"), (status = 404, description = "No such log", body = crate::error::ErrorBody)))]
pub async fn logs(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    if id.is_empty()
        || id.len() > 100
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::not_found(format!("no log for worker {id:?}")));
    }
    let path = state
        .home
        .join("logs")
        .join("workers")
        .join(format!("{id}.log"));
    crate::ops::blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = fs_err::File::open(&path)
            .map_err(|_| ApiError::not_found(format!("no log for worker {id:?}")))?;
        let len = file.metadata().map_err(ApiError::internal)?.len();
        let (text, next) = if let Some(n) = q.tail {
            (crate::workers::process::log_tail(&path, n), len)
        } else {
            let from = q.offset.unwrap_or(0).min(len);
            // At most 4 MiB per answer; follow the offset for the rest.
            let take = (len - from).min(4 << 20);
            file.seek(SeekFrom::Start(from))
                .map_err(ApiError::internal)?;
            let mut buf = Vec::new();
            file.take(take)
                .read_to_end(&mut buf)
                .map_err(ApiError::internal)?;
            (String::from_utf8_lossy(&buf).into_owned(), from + take)
        };
        let mut r = text.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&next.to_string()) {
            r.headers_mut().insert("x-log-offset", v);
        }
        Ok(r)
    })
    .await
}

/// The installed worker binaries.
#[utoipa::path(get, operation_id = "workers_binaries", path = "/v1/worker-binaries", tag = "worker-binaries", responses((status = 200, description = "Every binary", body = Vec<Object>)))]
pub async fn binaries(State(state): State<SharedState>) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(crate::ops::binaries::binary_list(&state).await?))
}

/// One worker binary.
#[utoipa::path(get, operation_id = "workers_binary", path = "/v1/worker-binaries/{id}", tag = "worker-binaries", params(("id" = String, Path)), responses((status = 200, description = "The binary", body = Object), (status = 404, description = "Not installed", body = crate::error::ErrorBody)))]
pub async fn binary(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(
        crate::ops::binaries::binary_get(&state, &id).await?,
    ))
}

/// Builds or downloads a worker binary, as a job.
#[utoipa::path(post, operation_id = "workers_install", path = "/v1/worker-binaries/install", tag = "worker-binaries", request_body = InstallRequest, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Bad request", body = crate::error::ErrorBody), (status = 404, description = "No source to build from", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn install(
    State(state): State<SharedState>,
    ApiJson(req): ApiJson<InstallRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let job = crate::ops::binaries::start_install(&state, req).await?;
    Ok(accepted(&job))
}

/// Removes a worker binary; 409 while a worker runs it.
#[utoipa::path(delete, operation_id = "workers_remove_binary", path = "/v1/worker-binaries/{id}", tag = "worker-binaries", params(("id" = String, Path)), responses((status = 200, description = "Removed", body = Object), (status = 404, description = "Not installed", body = crate::error::ErrorBody), (status = 409, description = "In use", body = crate::error::ErrorBody)))]
pub async fn remove_binary(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(
        crate::ops::binaries::binary_remove(&state, &id).await?,
    ))
}

/// Telemetry every 2 s (`heartbeat`: the hive and each worker's state, pid, RSS and
/// CPU) and each worker lifecycle event as it happens (`worker`).
#[utoipa::path(get, operation_id = "workers_heartbeats", path = "/v1/heartbeats/stream", tag = "workers", responses((status = 200, description = "Server-sent events", content_type = "text/event-stream")))]
pub async fn heartbeats(
    State(state): State<SharedState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(32);
    let mut events = state.workers.events.subscribe();
    let tasks = state.shutdown.clone();
    tasks.spawn(async move {
        let mut sys = sysinfo::System::new();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            let event = tokio::select! {
                _ = tick.tick() => {
                    let workers = state.workers.list();
                    let telemetry = crate::workers::telemetry(&workers, &mut sys);
                    sys.refresh_memory();
                    let data = json!({
                        "hive": {
                            "version": env!("CARGO_PKG_VERSION"),
                            "uptime_secs": state.started.elapsed().as_secs(),
                            "ram_available_bytes": sys.available_memory(),
                            "url": state.workers.hive_url.get(),
                        },
                        "workers": telemetry,
                    });
                    Event::default().event("heartbeat").data(data.to_string())
                }
                e = events.recv() => match e {
                    Ok(e) => Event::default().event("worker").data(json!(e).to_string()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                },
                () = state.shutdown.stopping() => break,
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    let stream = futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
    Sse::new(stream).keep_alive(KeepAlive::default())
}
