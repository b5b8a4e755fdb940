//! The hive's counters and gauges; `api/metrics.rs` serves them at `/metrics`.

use artifact_catalog::ArtifactStatus;
use model_catalog::ModelRecord;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// A peer hive and how a request sent to it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer's hive id.
    pub peer: String,
    /// `answered` (any status), `unreachable`, `refused` (a 5xx of its own, or the
    /// fleet token refused),
    /// `garbled` (not HTTP, or a JSON answer that is not JSON).
    pub outcome: String,
}

/// A peer hive.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's hive id.
    pub peer: String,
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
    worker_draft_acceptance: Family<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
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
    /// Requests sent to a peer hive, by peer and outcome.
    pub fleet_forwarded: Family<PeerLabels, Counter>,
    /// Seconds from sending a request to a peer to its answer's head, by peer.
    pub fleet_peer_latency: Family<PeerLabel, Histogram, fn() -> Histogram>,
    /// Each peer's requests waiting for a slot, as its card last said.
    pub fleet_peer_queue: Family<PeerLabel, Gauge>,
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
        let worker_draft_acceptance =
            Family::<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "worker_draft_acceptance",
            "Share of its draft model's tokens each live worker accepted (speculative decoding)",
            worker_draft_acceptance.clone(),
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
        let fleet_forwarded = Family::<PeerLabels, Counter>::default();
        let fleet_peer_latency =
            Family::<PeerLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let fleet_peer_queue = Family::<PeerLabel, Gauge>::default();
        registry.register(
            "fleet_forwarded",
            "Requests sent to a peer hive, by peer and outcome",
            fleet_forwarded.clone(),
        );
        registry.register(
            "fleet_peer_latency_seconds",
            "Seconds from sending a request to a peer hive to its answer's head, by peer",
            fleet_peer_latency.clone(),
        );
        registry.register(
            "fleet_peer_queue",
            "Requests waiting for a slot on each peer hive, as its card last said",
            fleet_peer_queue.clone(),
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
            worker_draft_acceptance,
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
            fleet_forwarded,
            fleet_peer_latency,
            fleet_peer_queue,
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

impl Metrics {
    /// Counts a request and its latency, by the route's template (not the raw path).
    pub fn request_done(&self, method: String, route: String, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.clone(),
                route: route.clone(),
                status: status.to_string(),
            })
            .inc();
        self.http_latency
            .get_or_create(&RouteLabel { method, route })
            .observe(seconds);
    }

    /// Sets the gauges read from the state at a scrape: the catalog's models by
    /// state and their bytes, and the jobs and workers by state.
    pub fn set_gauges(
        &self,
        models: &[ModelRecord],
        jobs: impl IntoIterator<Item = (&'static str, usize)>,
        workers: impl IntoIterator<Item = (&'static str, usize)>,
    ) {
        for s in ["available", "downloading", "paused", "failed"] {
            let n = models
                .iter()
                .filter(|r| r.artifact.status.name() == s)
                .count();
            self.models
                .get_or_create(&StateLabel { state: s.into() })
                .set(gauge(n));
        }
        let bytes: u64 = models
            .iter()
            .filter(|r| r.artifact.status == ArtifactStatus::Available)
            .map(|r| r.artifact.disk_bytes())
            .sum();
        self.catalog_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        for (s, n) in jobs {
            self.jobs
                .get_or_create(&StateLabel { state: s.into() })
                .set(gauge(n));
        }
        for (s, n) in workers {
            self.workers
                .get_or_create(&StateLabel { state: s.into() })
                .set(gauge(n));
        }
    }

    /// Sets the per-worker gauges to these live workers' figures: workers come and
    /// go, so the families hold the live ones only.
    pub fn set_live_workers<'a>(&self, live: impl IntoIterator<Item = LiveWorker<'a>>) {
        self.worker_slots_busy.clear();
        self.worker_tokens_per_second.clear();
        self.worker_draft_acceptance.clear();
        for w in live {
            let labels = WorkerLabels {
                worker: w.id.to_owned(),
                engine: w.engine.to_owned(),
                model: w.model.to_owned(),
            };
            if let Some(busy) = w.slots_busy {
                self.worker_slots_busy
                    .get_or_create(&labels)
                    .set(i64::try_from(busy).unwrap_or(0));
            }
            if let Some(tps) = w.tokens_per_second {
                self.worker_tokens_per_second
                    .get_or_create(&labels)
                    .set(tps);
            }
            if let Some(share) = w.draft_acceptance {
                self.worker_draft_acceptance
                    .get_or_create(&labels)
                    .set(share);
            }
        }
    }

    /// Every family in OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// A live worker's figures, for its gauges.
#[derive(Debug, Clone, Copy)]
pub struct LiveWorker<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its engine's name.
    pub engine: &'a str,
    /// The model it serves.
    pub model: &'a str,
    /// Slots answering a request now, where it says.
    pub slots_busy: Option<u64>,
    /// Its last generation speed, where it says.
    pub tokens_per_second: Option<f64>,
    /// The share of its draft's tokens it accepted, with a draft.
    pub draft_acceptance: Option<f64>,
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
