//! `/v1/jobs`: any operation as a job, its state, its SSE stream, cancelling it.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures_util::{Stream, StreamExt as _, stream};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::api::ApiJson;
use crate::api::accepted;
use crate::error::ApiError;
use crate::jobs::Event;
use crate::ops::dispatch::{self, Operation};
use crate::state::SharedState;

/// The routes.
pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/v1/jobs", get(list).post(create))
        .route("/v1/jobs/{id}", get(get_one).delete(cancel))
        .route("/v1/jobs/{id}/stream", get(stream_events))
}

/// Runs any operation as a job.
#[utoipa::path(post, operation_id = "jobs_create", path = "/v1/jobs", tag = "jobs", request_body = Operation, responses((status = 202, description = "Started", body = crate::api::Accepted), (status = 400, description = "Bad request", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody), (status = 404, description = "Unknown model, repo or file", body = crate::error::ErrorBody), (status = 422, description = "Malformed body", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<SharedState>,
    ApiJson(op): ApiJson<Operation>,
) -> Result<impl IntoResponse, ApiError> {
    let job = dispatch::start(&state, op).await?;
    Ok(accepted(&job))
}

/// Every job, newest first.
#[utoipa::path(get, operation_id = "jobs_list", path = "/v1/jobs", tag = "jobs", responses((status = 200, description = "Jobs", body = Vec<Object>), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn list(State(state): State<SharedState>) -> ApiJson<Value> {
    ApiJson(json!(state.jobs.list()))
}

fn find(state: &SharedState, id: &str) -> Result<std::sync::Arc<crate::jobs::Job>, ApiError> {
    state.jobs.get(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "job {id:?} does not exist (finished jobs are kept for an hour)"
        ))
    })
}

/// A job's state, result or error, and last progress.
#[utoipa::path(get, operation_id = "jobs_get_one", path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job id")), responses((status = 200, description = "The job", body = Object), (status = 404, description = "No such job", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(json!(find(&state, &id)?.info())))
}

/// Cancels a job; a download stops within a second and keeps its partial.
#[utoipa::path(delete, operation_id = "jobs_cancel", path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job id")), responses((status = 200, description = "Cancel requested", body = Object), (status = 404, description = "No such job", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let job = find(&state, &id)?;
    job.cancel.cancel();
    Ok(ApiJson(
        json!({"job_id": id, "cancel_requested": true, "state": job.info().state}),
    ))
}

fn to_sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .event(e.kind)
        .id(e.seq.to_string())
        .data(e.data.to_string())
}

/// The job's events over SSE: those it already had, then the new ones, ending
/// with `done`.
#[utoipa::path(get, operation_id = "jobs_stream_events", path = "/v1/jobs/{id}/stream", tag = "jobs", params(("id" = String, Path, description = "The job id")), responses((status = 200, description = "`narration`, `progress`, `result`, `error`, then `done`", content_type = "text/event-stream"), (status = 404, description = "No such job", body = crate::error::ErrorBody), (status = 401, description = "Missing or wrong token", body = crate::error::ErrorBody)))]
pub async fn stream_events(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let job = find(&state, &id)?;
    let (history, rx) = job.subscribe();
    let last_seq = history.last().map(|e| e.seq);
    let ended = history.iter().any(|e| e.kind == "done");
    let past = stream::iter(history.into_iter().map(|e| Ok(to_sse(&e))));
    // (receiver, the highest seq queued or sent, ended, events to send)
    let start = (
        rx,
        last_seq,
        ended,
        std::collections::VecDeque::<crate::jobs::Event>::new(),
    );
    let live = stream::unfold(start, move |(mut rx, mut seen, mut ended, mut queue)| {
        let job = std::sync::Arc::clone(&job);
        async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    ended |= e.kind == "done";
                    return Some((Ok(to_sse(&e)), (rx, seen, ended, queue)));
                }
                if ended {
                    return None;
                }
                match rx.recv().await {
                    Ok(e) if seen.is_some_and(|s| e.seq <= s) => {}
                    Ok(e) => {
                        seen = Some(e.seq);
                        queue.push_back(e);
                    }
                    // a subscriber too slow for the channel catches up from the job's
                    // history, which keeps the result and `done`: it never hangs
                    Err(RecvError::Lagged(_)) => {
                        let (history, again) = job.subscribe();
                        rx = again;
                        for e in history {
                            if seen.is_none_or(|s| e.seq > s) {
                                seen = Some(e.seq);
                                queue.push_back(e);
                            }
                        }
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(past.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
