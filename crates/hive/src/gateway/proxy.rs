//! Forwarding a request to a worker. The request counts as in flight on the worker
//! (so it is neither stopped for idling nor evicted) until its answer, streamed or
//! not, has passed through or the client went away; a client that goes away drops
//! the upstream connection, which cancels the generation. A worker that dies
//! mid-stream ends the stream with an error, never a hang.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource as _};
use futures_util::{Stream, StreamExt as _};
use serde_json::Value;

use super::GatewayError;

/// The longest line of a worker's event stream the hive reads: a worker that sends
/// more without a line's end is cut off, not buffered without bound.
const MAX_EVENT_LINE: usize = 4 << 20;
use super::Gateway;
use super::meter::Meter;
use super::queue::{Ticket, take_slot};
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
    /// Its grace cuts the stream; it tracks the meter's task.
    shutdown: crate::shutdown::Shutdown,
}

/// POSTs `body` to the worker's `path` (`/v1/chat/completions`) once one of its
/// slots is free.
pub async fn post(
    state: &Gateway,
    worker: &WorkerRecord,
    path: &str,
    body: &Value,
    ticket: Ticket,
) -> Result<Upstream, GatewayError> {
    let base = worker.url.as_deref().unwrap_or_default();
    let label = crate::metrics::ModelLabel {
        model: worker.model_ref.clone(),
    };
    state
        .hive
        .metrics
        .gateway_requests
        .get_or_create(&label)
        .inc();
    let guard = take_slot(state, worker, FIRST_BYTE).await?;
    let mut meter = Meter::new(
        &state.hive.metrics,
        &worker.model_ref,
        ticket.arrived,
        std::time::Instant::now(),
    );
    // the worker's own key, never the hive's token
    let key = state.hive.workers.key_of(&worker.id).unwrap_or_default();
    let send = || {
        state
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
        shutdown: state.hive.shutdown.clone(),
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
    /// grace, is the last item, an error. A stream's events are metered beside it,
    /// by a task that decodes a copy of each chunk.
    pub fn bytes(self) -> impl Stream<Item = Result<Bytes, String>> + Send {
        let in_flight = (self.guard, self.ticket);
        let body = Box::pin(self.response.bytes_stream());
        let mut meter = self.meter;
        let metered = if meter.is_stream() {
            let first_byte = meter.take_first_byte();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
            self.shutdown.spawn(async move {
                let chunks = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
                    .map(Ok::<_, std::convert::Infallible>);
                let mut events = std::pin::pin!(capped(chunks).eventsource());
                while let Some(Ok(event)) = events.next().await {
                    meter.event(&event.data);
                }
            });
            Metered::Beside(tx, first_byte)
        } else {
            Metered::Here(meter)
        };
        futures_util::stream::unfold(
            Some((body, self.shutdown.grace_over().clone(), metered, in_flight)),
            |open| async move {
                let (mut body, cut, mut metered, in_flight) = open?;
                tokio::select! {
                    biased;
                    () = cut.cancelled() => Some((
                        Err("the hive is stopping: this stream was ended".to_owned()),
                        None,
                    )),
                    next = body.next() => match next? {
                        Ok(bytes) => {
                            match &mut metered {
                                Metered::Here(meter) => meter.chunk(&bytes),
                                Metered::Beside(tx, first_byte) => {
                                    if let Some(f) = first_byte.take() {
                                        f.observe();
                                    }
                                    let _ = tx.send(bytes.clone());
                                }
                            }
                            Some((Ok(bytes), Some((body, cut, metered, in_flight))))
                        }
                        Err(e) => Some((Err(format!("the worker's stream was cut: {e}")), None)),
                    },
                }
            },
        )
    }

    /// The `data:` payloads of a server-sent-event stream, as JSON, until `[DONE]`;
    /// a failure (the worker's, or a line past the longest read) is the last item.
    pub fn events(self) -> impl Stream<Item = Result<Value, String>> + Send {
        capped(self.bytes())
            .eventsource()
            .scan(false, |ended, event| {
                let item = if *ended {
                    None
                } else {
                    match event {
                        Ok(e) if e.data.trim() == "[DONE]" => None,
                        Ok(e) => Some(
                            serde_json::from_str::<Value>(&e.data)
                                .map_err(|err| format!("the worker sent a bad event: {err}")),
                        ),
                        Err(EventStreamError::Transport(e)) => Some(Err(e)),
                        Err(e) => Some(Err(format!("the worker sent a bad event stream: {e}"))),
                    }
                };
                *ended = item.as_ref().is_none_or(Result::is_err);
                std::future::ready(item)
            })
    }
}

/// Where a stream's meter sees its chunks: here, or in the task that decodes them.
enum Metered {
    Here(Meter),
    Beside(
        tokio::sync::mpsc::UnboundedSender<Bytes>,
        Option<super::meter::FirstByte>,
    ),
}

/// The bytes of an event stream, failing once a line runs past [`MAX_EVENT_LINE`]
/// without ending: what a decoder buffers stays bounded.
fn capped<E: std::fmt::Display>(
    chunks: impl Stream<Item = Result<Bytes, E>> + Send,
) -> impl Stream<Item = Result<Bytes, String>> + Send {
    chunks.scan(0usize, |open_line, chunk| {
        let item = match chunk {
            Err(e) => Err(e.to_string()),
            Ok(bytes) => {
                *open_line = match bytes.iter().rposition(|&b| b == b'\n') {
                    Some(at) => bytes.len() - at - 1,
                    None => open_line.saturating_add(bytes.len()),
                };
                if *open_line > MAX_EVENT_LINE {
                    Err(format!(
                        "the worker sent an event line longer than {} MiB",
                        MAX_EVENT_LINE >> 20
                    ))
                } else {
                    Ok(bytes)
                }
            }
        };
        std::future::ready(Some(item))
    })
}
