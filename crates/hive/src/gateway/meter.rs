//! What an answer passing through tells of the model's speed: time to first token
//! (from the request's arrival at the hive, loads and queue included) and tokens per
//! second. A stream counts each server-sent event as a token, as both engines send
//! one per token; a whole answer gives the engine's own figure (llama.cpp's
//! `timings.predicted_per_second`) or its `usage.completion_tokens` over the time
//! it took.

use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;

use crate::metrics::{Metrics, ModelLabel};

/// The most of a whole (not streamed) answer kept to read its usage.
const WHOLE_MAX: usize = 4 << 20;

/// The time from the request's going to the worker to the answer's first byte.
#[derive(Debug)]
pub struct FirstByte {
    histogram: Histogram,
    sent: Instant,
}

impl FirstByte {
    /// The first byte is here.
    pub fn observe(self) {
        self.histogram.observe(self.sent.elapsed().as_secs_f64());
    }
}

/// Watches one answer's bytes; records its figures when dropped.
#[derive(Debug)]
pub struct Meter {
    arrived: Instant,
    sent: Instant,
    stream: bool,
    first_token: Histogram,
    tokens_per_second: Histogram,
    first_byte: Option<Histogram>,
    /// Events seen so far, and when the first and the last came.
    events: u64,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// A whole answer, while it is small enough.
    whole: Vec<u8>,
    /// Its figures are recorded already.
    recorded: bool,
}

impl Meter {
    /// A meter for an answer to a request that arrived at `arrived` and went to the
    /// worker at `sent`; `stream` when it is a server-sent-event stream.
    pub fn new(metrics: &Metrics, model: &str, arrived: Instant, sent: Instant) -> Self {
        let label = ModelLabel {
            model: model.to_owned(),
        };
        Self {
            arrived,
            sent,
            stream: false,
            first_token: metrics.gateway_first_token.get_or_create(&label).clone(),
            tokens_per_second: metrics
                .gateway_tokens_per_second
                .get_or_create(&label)
                .clone(),
            first_byte: Some(metrics.gateway_first_byte.get_or_create(&label).clone()),
            events: 0,
            first_at: None,
            last_at: None,
            whole: Vec::new(),
            recorded: false,
        }
    }

    /// Says whether the answer is a stream (from its `Content-Type`).
    pub fn streaming(&mut self, stream: bool) {
        self.stream = stream;
    }

    /// Whether the answer is a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The time to the first byte, to be observed where the bytes arrive (a stream's
    /// events are metered elsewhere, by the task that decodes them).
    pub fn take_first_byte(&mut self) -> Option<FirstByte> {
        self.first_byte.take().map(|histogram| FirstByte {
            histogram,
            sent: self.sent,
        })
    }

    /// Sees the next chunk of the body: its arrival, and a whole answer's bytes.
    pub fn chunk(&mut self, bytes: &[u8]) {
        if let Some(h) = self.first_byte.take() {
            h.observe(self.sent.elapsed().as_secs_f64());
        }
        if !self.stream && self.whole.len() + bytes.len() <= WHOLE_MAX {
            self.whole.extend_from_slice(bytes);
        }
    }

    /// Sees one event of a stream, as the SSE decoder gives it.
    pub fn event(&mut self, data: &str) {
        if data.trim() == "[DONE]" || !is_token(data.as_bytes()) {
            return;
        }
        let now = Instant::now();
        self.events += 1;
        if self.first_at.is_none() {
            self.first_at = Some(now);
            self.first_token
                .observe(now.duration_since(self.arrived).as_secs_f64());
        }
        self.last_at = Some(now);
    }

    /// Sees a whole answer already parsed.
    pub fn whole(&mut self, v: &Value) {
        if let Some(h) = self.first_byte.take() {
            h.observe(self.sent.elapsed().as_secs_f64());
        }
        self.record_whole(v);
        self.recorded = true;
    }

    fn record_whole(&self, v: &Value) {
        let speed = v["timings"]["predicted_per_second"].as_f64().or_else(|| {
            let tokens = v["usage"]["completion_tokens"].as_f64()?;
            let secs = self.sent.elapsed().as_secs_f64();
            (tokens > 0.0 && secs > 0.0).then(|| tokens / secs)
        });
        if let Some(s) = speed.filter(|s| s.is_finite() && *s > 0.0) {
            self.tokens_per_second.observe(s);
        }
    }
}

/// Whether an event carries generated text (not only a role, usage or timings).
fn is_token(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let choice = &v["choices"][0];
    let text = choice["delta"]["content"]
        .as_str()
        .or_else(|| choice["text"].as_str())
        .or_else(|| choice["delta"]["reasoning_content"].as_str());
    text.is_some_and(|t| !t.is_empty())
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        if !self.stream {
            if let Ok(v) = serde_json::from_slice::<Value>(&self.whole) {
                self.record_whole(&v);
            }
            return;
        }
        if let (Some(first), Some(last)) = (self.first_at, self.last_at) {
            let secs = last.duration_since(first).as_secs_f64();
            if self.events >= 2 && secs > 0.0 {
                #[allow(clippy::cast_precision_loss)] // token counts are far below 2^52
                self.tokens_per_second
                    .observe((self.events - 1) as f64 / secs);
            }
        }
    }
}
