//! `/metrics` in the Prometheus text format.

use std::sync::Arc;
use std::time::Instant;

use artifact_catalog::ArtifactStatus;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::state::SharedState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
    engine: String,
    model: String,
}

/// The model a request through the one endpoint named.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// Its catalog id.
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Tokens per second: 1 to 4096.
fn speed_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    downloads: Family<ResultLabel, Counter>,
    /// Bytes written by downloads.
    pub bytes_downloaded: Counter,
    /// Downloads running now.
    pub active_downloads: Gauge,
    models: Family<StateLabel, Gauge>,
    catalog_bytes: Gauge,
    jobs: Family<StateLabel, Gauge>,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    workers: Family<StateLabel, Gauge>,
    worker_slots_busy: Family<WorkerLabels, Gauge>,
    worker_tokens_per_second: Family<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    integrity_checks: Counter,
    integrity_problems: Gauge,
    /// Counters the worker supervisors share.
    pub worker: WorkerMetrics,
    /// Requests through the one endpoint, by model.
    pub gateway_requests: Family<ModelLabel, Counter>,
    /// Workers the one endpoint started for a request, by model.
    pub gateway_loads: Family<ModelLabel, Counter>,
    /// Idle workers stopped to make room for another model, by the model stopped.
    pub evictions: Family<ModelLabel, Counter>,
    /// Models removed from disk to make room for a pull, by the model removed.
    pub disk_evictions: Family<ModelLabel, Counter>,
    /// Seconds from a request's arrival at a ready worker to its first byte back.
    pub gateway_first_byte: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Seconds a request waited for its model's worker to be loaded.
    pub gateway_load_seconds: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Seconds a request waited in the hive for a free slot on its worker.
    pub gateway_queue_wait: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Seconds from a request's arrival to its first generated token.
    pub gateway_first_token: Family<ModelLabel, Histogram, fn() -> Histogram>,
    /// Generation speed of each answer.
    pub gateway_tokens_per_second: Family<ModelLabel, Histogram, fn() -> Histogram>,
}

/// Counters of the worker supervisors.
#[derive(Debug, Clone, Default)]
pub struct WorkerMetrics {
    /// Workers started again after they died or hung.
    pub restarts: Counter,
    /// Health checks that failed.
    pub health_check_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rbee");
        let downloads = Family::<ResultLabel, Counter>::default();
        let bytes_downloaded = Counter::default();
        let active_downloads = Gauge::default();
        let models = Family::<StateLabel, Gauge>::default();
        let catalog_bytes = Gauge::default();
        let jobs = Family::<StateLabel, Gauge>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "downloads",
            "Finished downloads by result",
            downloads.clone(),
        );
        registry.register(
            "downloaded_bytes",
            "Bytes written by downloads",
            bytes_downloaded.clone(),
        );
        registry.register(
            "active_downloads",
            "Downloads running now",
            active_downloads.clone(),
        );
        registry.register("models", "Catalog entries by state", models.clone());
        registry.register(
            "catalog_bytes",
            "Bytes of the available models",
            catalog_bytes.clone(),
        );
        registry.register("jobs", "Jobs by state", jobs.clone());
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            http_latency.clone(),
        );
        let integrity_checks = Counter::default();
        let integrity_problems = Gauge::default();
        registry.register(
            "integrity_checks",
            "Integrity checks of the model catalog run",
            integrity_checks.clone(),
        );
        registry.register(
            "integrity_problems",
            "Models the last integrity check found missing, resized or corrupt",
            integrity_problems.clone(),
        );
        let workers = Family::<StateLabel, Gauge>::default();
        let worker = WorkerMetrics::default();
        registry.register("workers", "Worker processes by state", workers.clone());
        let worker_slots_busy = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "worker_slots_busy",
            "Slots of each live worker serving a request now",
            worker_slots_busy.clone(),
        );
        let worker_tokens_per_second =
            Family::<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "worker_tokens_per_second",
            "Average generation speed each live worker reports",
            worker_tokens_per_second.clone(),
        );
        registry.register(
            "worker_restarts",
            "Workers started again after they died or hung",
            worker.restarts.clone(),
        );
        registry.register(
            "worker_health_check_failures",
            "Worker health checks that failed",
            worker.health_check_failures.clone(),
        );
        let gateway_requests = Family::<ModelLabel, Counter>::default();
        let gateway_loads = Family::<ModelLabel, Counter>::default();
        let evictions = Family::<ModelLabel, Counter>::default();
        let disk_evictions = Family::<ModelLabel, Counter>::default();
        registry.register(
            "disk_evictions",
            "Models removed from disk to make room for a pull, by the model removed",
            disk_evictions.clone(),
        );
        registry.register(
            "gateway_requests",
            "Requests through the one endpoint, by model",
            gateway_requests.clone(),
        );
        registry.register(
            "gateway_loads",
            "Workers the one endpoint started for a request, by model",
            gateway_loads.clone(),
        );
        registry.register(
            "evictions",
            "Idle workers stopped to make room for another model, by the model stopped",
            evictions.clone(),
        );
        let gateway_first_byte =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let gateway_load_seconds =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "gateway_first_byte_seconds",
            "Seconds from a request's arrival at a ready worker to its first byte, by model",
            gateway_first_byte.clone(),
        );
        registry.register(
            "gateway_load_seconds",
            "Seconds requests waited for their model's worker to be loaded, by model",
            gateway_load_seconds.clone(),
        );
        let gateway_queue_wait =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let gateway_first_token =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let gateway_tokens_per_second =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                speed_histogram,
            );
        registry.register(
            "gateway_queue_wait_seconds",
            "Seconds requests waited in the hive for a free slot on their worker, by model",
            gateway_queue_wait.clone(),
        );
        registry.register(
            "gateway_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first generated token (loads and queue included), by model",
            gateway_first_token.clone(),
        );
        registry.register(
            "gateway_tokens_per_second",
            "Generation speed of each answer through the one endpoint, by model",
            gateway_tokens_per_second.clone(),
        );
        for result in ["completed", "failed", "cancelled"] {
            let _ = downloads.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        Self {
            registry,
            downloads,
            bytes_downloaded,
            active_downloads,
            models,
            catalog_bytes,
            jobs,
            http_requests,
            http_latency,
            workers,
            worker_slots_busy,
            worker_tokens_per_second,
            integrity_checks,
            integrity_problems,
            worker,
            gateway_requests,
            gateway_loads,
            evictions,
            disk_evictions,
            gateway_first_byte,
            gateway_load_seconds,
            gateway_queue_wait,
            gateway_first_token,
            gateway_tokens_per_second,
        }
    }
}

impl Metrics {
    /// Records an integrity check and how many problems it found.
    pub fn integrity_checked(&self, problems: usize) {
        self.integrity_checks.inc();
        self.integrity_problems
            .set(i64::try_from(problems).unwrap_or(i64::MAX));
    }

    /// Counts a finished download.
    pub fn download_finished(&self, result: &str) {
        self.downloads
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// Counts every request and its latency, by the route's template (not the raw path).
pub async fn track(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let m = &state.metrics;
    m.http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status: response.status().as_u16().to_string(),
        })
        .inc();
    m.http_latency
        .get_or_create(&RouteLabel { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The content type of the Prometheus text format, what `/metrics` serves by default.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics, served when the scraper asks for it.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: the Prometheus text format, or OpenMetrics when `Accept` names it.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "system", responses((status = 200, description = "The Prometheus text format (version 0.0.4), or OpenMetrics 1.0 when `Accept` asks for `application/openmetrics-text`", content((String = "text/plain"), (String = "application/openmetrics-text")))))]
pub async fn render(
    State(state): State<SharedState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    let records = tokio::task::spawn_blocking(move || catalog.list())
        .await
        .map_err(ApiError::internal)??;
    let m = &state.metrics;
    for s in ["available", "downloading", "paused", "failed"] {
        let n = records
            .iter()
            .filter(|r| r.artifact.status.name() == s)
            .count();
        m.models
            .get_or_create(&StateLabel { state: s.into() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let bytes: u64 = records
        .iter()
        .filter(|r| r.artifact.status == ArtifactStatus::Available)
        .map(|r| r.artifact.size)
        .sum();
    m.catalog_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    for (s, n) in state.jobs.count_by_state() {
        m.jobs
            .get_or_create(&StateLabel {
                state: s.name().into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    for (s, n) in state.workers.count_by_state() {
        m.workers
            .get_or_create(&StateLabel { state: s.into() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    // workers come and go: the per-worker families hold the live ones only
    m.worker_slots_busy.clear();
    m.worker_tokens_per_second.clear();
    for w in state
        .workers
        .list()
        .into_iter()
        .filter(|w| w.state.is_live())
    {
        let labels = WorkerLabels {
            worker: w.id.clone(),
            engine: w.engine.to_string(),
            model: w.model_ref.clone(),
        };
        if let (Some(total), Some(free)) = (w.slots_total, w.slots_available) {
            m.worker_slots_busy
                .get_or_create(&labels)
                .set(i64::try_from(total.saturating_sub(free)).unwrap_or(0));
        }
        if let Some(tps) = w.tokens_per_second {
            m.worker_tokens_per_second.get_or_create(&labels).set(tps);
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)
        .map_err(ApiError::internal)?;
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    Ok(if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&text),
        )
            .into_response()
    })
}

/// OpenMetrics text as the Prometheus text format (0.0.4) has it: a counter's
/// `# HELP` and `# TYPE` name its `_total` samples, `unknown` is `untyped`, and there
/// are no `# UNIT` or `# EOF` lines. Samples are the same in both.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                let text = if prefix == "# TYPE " && text == "unknown" {
                    "untyped"
                } else {
                    text
                };
                out.push_str(&format!("{prefix}{name} {text}\n"));
            }
            None if line.starts_with("# UNIT ") || line == "# EOF" => {}
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_prometheus_text;

    #[test]
    fn counters_are_named_by_their_samples() {
        let om = "# HELP rbee_downloads Finished downloads.\n# TYPE rbee_downloads counter\nrbee_downloads_total{result=\"failed\"} 0\n# HELP rbee_jobs Jobs.\n# TYPE rbee_jobs gauge\nrbee_jobs 2\n# TYPE rbee_x unknown\nrbee_x 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP rbee_downloads_total Finished downloads.\n# TYPE rbee_downloads_total counter\nrbee_downloads_total{result=\"failed\"} 0\n# HELP rbee_jobs Jobs.\n# TYPE rbee_jobs gauge\nrbee_jobs 2\n# TYPE rbee_x untyped\nrbee_x 1\n"
        );
    }
}
