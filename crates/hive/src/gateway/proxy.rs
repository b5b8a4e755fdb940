//! Forwarding a request to a worker. The request counts as in flight on the worker
//! (so it is neither stopped for idling nor evicted) until its answer, streamed or
//! not, has passed through or the client went away; a client that goes away drops
//! the upstream connection, which cancels the generation. A worker that dies
//! mid-stream ends the stream with an error, never a hang.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use serde_json::Value;

use super::GatewayError;

/// The longest line of a worker's event stream the hive reads: a worker that sends
/// more without a line's end is cut off, not buffered without bound.
const MAX_EVENT_LINE: usize = 4 << 20;
use super::meter::Meter;
use super::queue::{Ticket, take_slot};
use crate::state::SharedState;
use crate::workers::{RequestGuard, WorkerRecord};

/// How long a worker may take to start answering.
const FIRST_BYTE: Duration = Duration::from_secs(600);

/// An answer from a worker, its body not read yet.
#[derive(Debug)]
pub struct Upstream {
    /// The worker's status.
    pub status: StatusCode,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    response: reqwest::Response,
    guard: RequestGuard,
    meter: Meter,
    ticket: Ticket,
    cut: tokio_util::sync::CancellationToken,
}

/// POSTs `body` to the worker's `path` (`/v1/chat/completions`) once one of its
/// slots is free.
pub async fn post(
    state: &SharedState,
    worker: &WorkerRecord,
    path: &str,
    body: &Value,
    ticket: Ticket,
) -> Result<Upstream, GatewayError> {
    let base = worker.url.as_deref().unwrap_or_default();
    let label = crate::metrics::ModelLabel {
        model: worker.model_ref.clone(),
    };
    state.metrics.gateway_requests.get_or_create(&label).inc();
    let guard = take_slot(state, worker, FIRST_BYTE).await?;
    let mut meter = Meter::new(
        &state.metrics,
        &worker.model_ref,
        ticket.arrived,
        std::time::Instant::now(),
    );
    // the worker's own key, never the hive's token
    let key = state.workers.key_of(&worker.id).unwrap_or_default();
    let send = || {
        state
            .gateway
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(&key)
            .json(body)
            .send()
    };
    let response = tokio::time::timeout(FIRST_BYTE, async {
        match send().await {
            // a pooled connection the worker had just closed: once more, on a new one
            Err(e) if e.is_request() || e.is_connect() => send().await,
            other => other,
        }
    })
    .await
    .map_err(|_| {
        GatewayError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "worker_timeout",
            format!(
                "worker {} did not answer within {}s",
                worker.id,
                FIRST_BYTE.as_secs()
            ),
        )
    })?
    .map_err(|e| {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "worker_unreachable",
            format!("worker {} did not answer: {e}", worker.id),
        )
    })?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    meter.streaming(
        content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/event-stream")),
    );
    Ok(Upstream {
        status,
        content_type,
        response,
        guard,
        meter,
        ticket,
        cut: state.gateway.streams_cut.clone(),
    })
}

impl Upstream {
    /// The whole body as JSON (a non-streamed answer).
    pub async fn json(self) -> Result<Value, GatewayError> {
        let _in_flight = (self.guard, self.ticket);
        let mut meter = self.meter;
        let bytes = self.response.bytes().await.map_err(|e| {
            GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "worker_failed",
                format!("the worker's answer was cut: {e}"),
            )
        })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "worker_failed",
                format!("the worker's answer is not JSON: {e}"),
            )
        })?;
        meter.whole(&v);
        Ok(v)
    }

    /// The body's bytes as they come; a failure mid-way, or the end of shutdown's
    /// grace, is the last item, an error.
    pub fn bytes(self) -> impl Stream<Item = Result<Bytes, String>> + Send {
        let in_flight = (self.guard, self.ticket);
        let body = Box::pin(self.response.bytes_stream());
        futures_util::stream::unfold(
            Some((body, self.cut, self.meter, in_flight)),
            |open| async move {
                let (mut body, cut, mut meter, in_flight) = open?;
                tokio::select! {
                    biased;
                    () = cut.cancelled() => Some((
                        Err("the hive is stopping: this stream was ended".to_owned()),
                        None,
                    )),
                    next = body.next() => match next? {
                        Ok(bytes) => {
                            meter.chunk(&bytes);
                            Some((Ok(bytes), Some((body, cut, meter, in_flight))))
                        }
                        Err(e) => Some((Err(format!("the worker's stream was cut: {e}")), None)),
                    },
                }
            },
        )
    }

    /// The `data:` payloads of a server-sent-event stream, as JSON, until `[DONE]`.
    pub fn events(self) -> impl Stream<Item = Result<Value, String>> + Send {
        let mut pending = Vec::<u8>::new();
        let mut finished = false;
        self.bytes().flat_map(move |chunk| {
            let mut out: Vec<Result<Value, String>> = Vec::new();
            if finished {
                return futures_util::stream::iter(out);
            }
            match chunk {
                Err(e) => {
                    finished = true;
                    out.push(Err(e));
                }
                Ok(bytes) => {
                    pending.extend_from_slice(&bytes);
                    if pending.len() > MAX_EVENT_LINE && !pending.contains(&b'\n') {
                        finished = true;
                        out.push(Err(format!(
                            "the worker sent an event line longer than {} MiB",
                            MAX_EVENT_LINE >> 20
                        )));
                        pending = Vec::new();
                        return futures_util::stream::iter(out);
                    }
                    while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=at).collect();
                        let line = String::from_utf8_lossy(&line);
                        let Some(data) = line.trim().strip_prefix("data:") else {
                            continue;
                        };
                        let data = data.trim();
                        if data == "[DONE]" {
                            finished = true;
                            break;
                        }
                        match serde_json::from_str::<Value>(data) {
                            Ok(v) => out.push(Ok(v)),
                            Err(e) => out.push(Err(format!("the worker sent a bad event: {e}"))),
                        }
                    }
                }
            }
            futures_util::stream::iter(out)
        })
    }
}
