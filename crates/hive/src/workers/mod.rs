//! Worker processes: the registry, and one supervisor task per worker that starts
//! it, waits for `ready`, polls its health, restarts it with backoff, and stops it.
//!
//! Invariants: every process the hive starts is in the registry and in the run
//! record (`run/workers.json`) until it has exited and been waited for; every
//! worker runs in its own process group, which is what is signalled; on Linux a
//! worker gets SIGKILL when the hive dies.

pub mod kv_cache;
pub mod process;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use worker_catalog::Engine;

pub use crate::engines::SpawnPlan;
use crate::engines::{self, llama};
use crate::workers::process::{Launch, RunRecord};

/// Where a worker stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Started, not ready yet (loading its model).
    Starting,
    /// Answering requests.
    Ready,
    /// Failing health checks, not restarted yet.
    Unhealthy,
    /// Died or hung; waiting out its backoff before it starts again.
    Restarting,
    /// Being stopped.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Gave up: it failed to start, or kept dying.
    Failed,
}

impl WorkerState {
    /// Every state, for metrics.
    pub const ALL: [WorkerState; 7] = [
        Self::Starting,
        Self::Ready,
        Self::Unhealthy,
        Self::Restarting,
        Self::Stopping,
        Self::Stopped,
        Self::Failed,
    ];

    /// The state's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Unhealthy => "unhealthy",
            Self::Restarting => "restarting",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    /// Whether the worker holds (or will hold again) its model and a process.
    pub fn is_live(&self) -> bool {
        !matches!(self, Self::Stopped | Self::Failed)
    }
}

/// A worker as `GET /v1/workers` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WorkerRecord {
    /// Its id.
    pub id: String,
    /// Its base URL, such as `http://127.0.0.1:9300`.
    pub url: Option<String>,
    /// The catalog id of the model it serves.
    pub model_ref: String,
    /// The model file.
    pub model_path: PathBuf,
    /// `cpu`, `cuda` or `metal`.
    pub backend: String,
    /// The device index.
    pub device: u32,
    /// The worker binary's catalog id.
    pub binary_id: String,
    /// The engine it runs: `rbee` or `llama.cpp`.
    pub engine: Engine,
    /// That engine's version as it writes it (`0.1.0`, `b6123`).
    pub engine_version: String,
    /// Where it stands.
    pub state: WorkerState,
    /// Why it failed or was last restarted.
    pub reason: Option<String>,
    /// Its process id (it leads its own process group).
    pub pid: Option<u32>,
    /// Its port.
    pub port: Option<u16>,
    /// When the hive last saw it serve or report (heartbeat or health check).
    pub last_activity: Option<DateTime<Utc>>,
    /// Health checks failed in a row.
    pub failed_health_checks: u32,
    /// How many times it was started again.
    pub restart_count: u32,
    /// When it was last started again.
    pub last_restart: Option<DateTime<Utc>>,
    /// When its last heartbeat came.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Its slots.
    pub slots_total: Option<u64>,
    /// Its free slots.
    pub slots_available: Option<u64>,
    /// Its average generation speed, as a llama.cpp worker reports it.
    pub tokens_per_second: Option<f64>,
    /// The share of its draft model's tokens it accepted, as llama.cpp reports it
    /// (speculative decoding; none without a draft).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_acceptance: Option<f64>,
    /// When it was first started.
    pub started_at: DateTime<Utc>,
    /// Its stdout and stderr.
    pub log_path: PathBuf,
    /// Stopped after this many seconds without a request, when set.
    pub idle_ttl_secs: Option<u64>,
    /// Requests the hive's endpoint is proxying to it now: while any is, it is
    /// neither stopped for idling nor evicted.
    pub requests_in_flight: u64,
}

/// How workers are supervised.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// How long a worker may take to answer `ready`.
    pub ready_timeout: Duration,
    /// Between health checks.
    pub health_interval: Duration,
    /// Failed health checks in a row that count as dead.
    pub max_failed_checks: u32,
    /// Restarts before giving up.
    pub max_restarts: u32,
    /// The first backoff; it doubles at each restart.
    pub backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Ports for workers, or any free one.
    pub ports: Option<(u16, u16)>,
    /// A live worker's log past this is rotated.
    pub log_max_bytes: u64,
    /// A worker generating without progress this long is unhealthy (zero: never).
    pub stall: Duration,
    /// What the saved KV caches of unloaded workers may take on disk.
    pub kv_cache_max_bytes: u64,
}

/// A lifecycle event, on the heartbeat stream and the spawn job.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerEvent {
    /// The worker.
    pub worker_id: String,
    /// `starting`, `ready`, `exited`, `unhealthy`, `restarting`, `failed`, `stopped`.
    pub event: &'static str,
    /// What happened, in words.
    pub message: String,
}

struct Entry {
    record: Mutex<WorkerRecord>,
    /// The worker's own key: in its environment, sent by the hive with every request
    /// to it, and carried by its heartbeats. Never the hive's token.
    key: String,
    stop: CancellationToken,
    done: CancellationToken,
}

/// The workers of this hive.
pub struct Registry {
    workers: Mutex<HashMap<String, Arc<Entry>>>,
    ports: Mutex<HashSet<u16>>,
    /// The run record.
    pub run: RunRecord,
    /// Lifecycle events.
    pub events: broadcast::Sender<WorkerEvent>,
    supervision: Supervision,
    /// Tracks every supervisor, so that stopping the hive waits for them.
    shutdown: crate::shutdown::Shutdown,
    http: reqwest::Client,
    metrics: crate::metrics::WorkerMetrics,
    /// The hive's own URL, passed to workers as `--hive-url` (set once it listens).
    pub hive_url: std::sync::OnceLock<String>,
    /// Woken when a request through the hive ends, freeing a slot.
    pub slot_freed: tokio::sync::Notify,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The most a worker gets between SIGTERM and SIGKILL while the hive stops. An
/// inference worker keeps nothing worth saving; the hive's exit is promised in bounded time.
const SHUTDOWN_STOP_GRACE: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a worker ended, in words, with the closing parenthesis: an illegal
/// instruction (SIGILL) says what usually causes it.
fn exit_text(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if status.signal() == Some(nix::sys::signal::Signal::SIGILL as i32) {
            return format!(
                "{status}): an illegal instruction, so the binary was built for a CPU this machine is not (or a VM that does not grant it, such as AMX); rebuild it for this machine, for llama.cpp with --cmake-arg=-DGGML_NATIVE=OFF --cmake-arg=-DGGML_AVX2=ON"
            );
        }
    }
    format!("{status})")
}

/// A request in flight to a worker; see [`Registry::try_begin_request`].
#[derive(Debug)]
pub struct RequestGuard {
    registry: Arc<Registry>,
    id: String,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.registry.update(&self.id, |r| {
            r.requests_in_flight = r.requests_in_flight.saturating_sub(1);
            r.last_activity = Some(Utc::now());
        });
        self.registry.slot_freed.notify_waiters();
    }
}

/// How a first start ended, for the spawn job.
pub type StartOutcome = Result<WorkerRecord, String>;

impl Registry {
    /// An empty registry for `home`.
    pub fn new(
        home: &std::path::Path,
        supervision: Supervision,
        metrics: crate::metrics::WorkerMetrics,
        shutdown: crate::shutdown::Shutdown,
    ) -> Self {
        Self {
            shutdown,
            workers: Mutex::new(HashMap::new()),
            ports: Mutex::new(HashSet::new()),
            run: RunRecord::new(home),
            events: broadcast::channel(256).0,
            supervision,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            metrics,
            hive_url: std::sync::OnceLock::new(),
            slot_freed: tokio::sync::Notify::new(),
        }
    }

    /// Every worker, by id.
    pub fn list(&self) -> Vec<WorkerRecord> {
        let mut v: Vec<_> = lock(&self.workers)
            .values()
            .map(|e| lock(&e.record).clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Option<WorkerRecord> {
        lock(&self.workers).get(id).map(|e| lock(&e.record).clone())
    }

    /// The live workers serving this model.
    pub fn using_model(&self, model_id: &str) -> Vec<String> {
        self.list()
            .into_iter()
            .filter(|w| w.model_ref == model_id && w.state.is_live())
            .map(|w| w.id)
            .collect()
    }

    /// Counts by state, for metrics.
    pub fn count_by_state(&self) -> Vec<(&'static str, usize)> {
        let list = self.list();
        WorkerState::ALL
            .iter()
            .map(|s| (s.name(), list.iter().filter(|w| &w.state == s).count()))
            .collect()
    }

    fn emit(&self, worker_id: &str, event: &'static str, message: String) {
        tracing::info!(worker = worker_id, event, "{message}");
        let _ = self.events.send(WorkerEvent {
            worker_id: worker_id.to_owned(),
            event,
            message,
        });
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut WorkerRecord)) {
        if let Some(e) = lock(&self.workers).get(id) {
            f(&mut lock(&e.record));
        }
    }

    /// Counts a request the hive proxies to the worker, until the guard is dropped,
    /// when one of its slots is free (its requests in flight below its slots; no
    /// limit while it has not said how many it has). None when all are taken or the
    /// worker is gone. The end of each request is activity for its idle TTL.
    pub fn try_begin_request(self: &Arc<Self>, id: &str) -> Option<RequestGuard> {
        let entry = lock(&self.workers).get(id).cloned()?;
        let mut r = lock(&entry.record);
        if r.slots_total
            .is_some_and(|slots| r.requests_in_flight >= slots.max(1))
        {
            return None;
        }
        r.requests_in_flight += 1;
        r.last_activity = Some(Utc::now());
        Some(RequestGuard {
            registry: Arc::clone(self),
            id: id.to_owned(),
        })
    }

    /// A worker's own key, which requests to it carry.
    pub fn key_of(&self, id: &str) -> Option<String> {
        lock(&self.workers).get(id).map(|e| e.key.clone())
    }

    /// Whether `given` is that worker's key (constant time).
    pub fn key_matches(&self, id: &str, given: &str) -> bool {
        self.key_of(id)
            .is_some_and(|k| !given.is_empty() && crate::secret::same_secret(given, &k))
    }

    /// Records a heartbeat; false for an unknown worker.
    pub fn heartbeat(&self, id: &str, body: &Value) -> bool {
        let now = Utc::now();
        let known = lock(&self.workers).contains_key(id);
        self.update(id, |r| {
            r.last_heartbeat = Some(now);
            r.last_activity = body
                .get("last_activity")
                .and_then(Value::as_i64)
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .or(r.last_activity);
            r.slots_total = body
                .get("slots_total")
                .and_then(Value::as_u64)
                .or(r.slots_total);
            r.slots_available = body
                .get("slots_available")
                .and_then(Value::as_u64)
                .or(r.slots_available);
        });
        known
    }

    /// Starts a worker's supervisor; the receiver says how its first start went.
    pub fn spawn(self: &Arc<Self>, plan: SpawnPlan) -> oneshot::Receiver<StartOutcome> {
        // llama-server's slots are the hive's to set; ours reports its own
        let llama_slots = engines::slots_set_by_hive(&plan);
        let record = WorkerRecord {
            id: plan.id.clone(),
            url: None,
            model_ref: plan.model_ref.clone(),
            model_path: plan.model_path.clone(),
            backend: plan.backend.clone(),
            device: plan.device,
            binary_id: plan.binary_id.clone(),
            engine: plan.engine,
            engine_version: plan.engine_version.clone(),
            state: WorkerState::Starting,
            reason: None,
            pid: None,
            port: None,
            last_activity: None,
            failed_health_checks: 0,
            restart_count: 0,
            last_restart: None,
            last_heartbeat: None,
            slots_total: llama_slots,
            slots_available: llama_slots,
            tokens_per_second: None,
            draft_acceptance: None,
            started_at: Utc::now(),
            log_path: plan.log_path.clone(),
            idle_ttl_secs: plan.idle_ttl.map(|d| d.as_secs()),
            requests_in_flight: 0,
        };
        let entry = Arc::new(Entry {
            record: Mutex::new(record),
            key: hex::encode(rand::random::<[u8; 32]>()),
            stop: CancellationToken::new(),
            done: CancellationToken::new(),
        });
        lock(&self.workers).insert(plan.id.clone(), Arc::clone(&entry));
        let (tx, rx) = oneshot::channel();
        let me = Arc::clone(self);
        self.shutdown.spawn(async move {
            me.supervise(plan, entry, tx).await;
        });
        rx
    }

    /// Stops a worker: SIGTERM, the grace period, SIGKILL. Returns its last record.
    pub async fn stop(&self, id: &str) -> Option<WorkerRecord> {
        let entry = lock(&self.workers).get(id).cloned()?;
        entry.stop.cancel();
        entry.done.cancelled().await;
        let record = lock(&entry.record).clone();
        lock(&self.workers).remove(id);
        Some(record)
    }

    /// Stops every worker (the hive is shutting down).
    pub async fn stop_all(&self) {
        let ids: Vec<String> = lock(&self.workers).keys().cloned().collect();
        let stops = ids.iter().map(|id| self.stop(id));
        futures_util::future::join_all(stops).await;
    }

    /// Changes a live worker's idle TTL (`None` or 0: never stopped for idling);
    /// its supervisor reads it at every health check, and the idle time counts from
    /// now. The record as it is now.
    pub fn set_idle_ttl(&self, id: &str, secs: Option<u64>) -> Option<WorkerRecord> {
        self.update(id, |r| {
            r.idle_ttl_secs = secs.filter(|&s| s > 0);
            r.last_activity = Some(Utc::now());
        });
        self.get(id)
    }

    /// Forgets a failed worker.
    pub fn forget(&self, id: &str) {
        lock(&self.workers).remove(id);
    }

    /// A port for a worker: `again` (the port it had, still held for it) when that
    /// binds now, else another free one.
    fn take_port(&self, again: Option<u16>) -> std::io::Result<u16> {
        let mut ports = lock(&self.ports);
        if let Some(port) = again {
            if process::port_is_free(port) {
                return Ok(port);
            }
            ports.remove(&port);
        }
        let port = process::free_port(self.supervision.ports, &ports)?;
        ports.insert(port);
        Ok(port)
    }

    fn release_port(&self, port: u16) {
        lock(&self.ports).remove(&port);
    }

    fn launch(&self, plan: &SpawnPlan, port: u16) -> Launch {
        let args = engines::command_line(
            plan,
            port,
            self.supervision.stall,
            self.hive_url.get().map(String::as_str),
        );
        let mut env = vec![("NO_COLOR".to_owned(), "1".to_owned())];
        if let Some(dir) = &plan.library_dir {
            env.push((
                worker_catalog::LIBRARY_PATH_VAR.to_owned(),
                dir.display().to_string(),
            ));
        }
        // the worker's own key, in its environment (never on its command line, which
        // any local user can read); the hive's token never reaches a worker
        if let Some(key) = self.key_of(&plan.id) {
            env.push((engines::key_var(plan.engine).to_owned(), key));
        }
        Launch {
            binary: plan.binary.clone(),
            args,
            env,
            log: plan.log_path.clone(),
        }
    }

    /// Starts the process once: a port (`again` when it is free), the process, the
    /// run record.
    fn start_process(
        &self,
        plan: &SpawnPlan,
        again: Option<u16>,
    ) -> Result<(tokio::process::Child, u32, u16), String> {
        let port = self
            .take_port(again)
            .map_err(|e| format!("no free port: {e}"))?;
        match process::spawn(&self.launch(plan, port)) {
            Ok(child) => {
                let pid = child.id().unwrap_or(0);
                self.run.add(&plan.id, pid);
                Ok((child, pid, port))
            }
            Err(e) => {
                self.release_port(port);
                Err(format!("cannot start {}: {e}", plan.binary.display()))
            }
        }
    }

    /// Polls `/health` until `ready`, the process exits, the timeout, or a stop.
    async fn wait_ready(
        &self,
        child: &mut tokio::process::Child,
        url: &str,
        engine: Engine,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.supervision.ready_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited before it was ready ({}", exit_text(status)));
            }
            if let Ok(r) = self.http.get(format!("{url}/health")).send().await {
                // llama-server answers 503 while it loads, 200 once ready; our
                // worker says `ready`
                let ready = engines::is_ready(engine, r).await;
                if ready {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready after {}s",
                    self.supervision.ready_timeout.as_secs()
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = stop.cancelled() => return Err("stopped before it was ready".into()),
            }
        }
    }

    /// Between SIGTERM and SIGKILL for a stop: `--worker-stop-grace-secs`, or at most
    /// [`SHUTDOWN_STOP_GRACE`] once the hive is stopping, so that a worker that does
    /// not exit on SIGTERM (llama-server can hang in its signal handler while it
    /// generates) cannot hold the hive's exit past its promise.
    fn stop_grace(&self) -> Duration {
        if self.shutdown.is_stopping() {
            self.supervision.stop_grace.min(SHUTDOWN_STOP_GRACE)
        } else {
            self.supervision.stop_grace
        }
    }

    /// SIGTERM to the group, then SIGKILL after the grace period; waits for the exit.
    async fn terminate(&self, child: &mut tokio::process::Child, pid: u32, grace: Duration) {
        if let Ok(Some(_)) = child.try_wait() {
            // The leader is gone; anything left in its group goes too.
            process::signal_group(pid, Signal::SIGKILL);
        } else {
            process::signal_group(pid, Signal::SIGTERM);
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                tracing::warn!(pid, "worker ignored SIGTERM for {grace:?}: SIGKILL");
                process::signal_group(pid, Signal::SIGKILL);
                let _ = child.wait().await;
            } else {
                process::signal_group(pid, Signal::SIGKILL);
            }
        }
        self.run.remove(pid);
    }

    async fn supervise(
        self: Arc<Self>,
        plan: SpawnPlan,
        entry: Arc<Entry>,
        first: oneshot::Sender<StartOutcome>,
    ) {
        let id = plan.id.clone();
        let mut first = Some(first);
        let mut restarts = 0u32;
        let mut port_failures = 0u32;
        // A restarted worker keeps its URL when its port is still free.
        let mut again: Option<u16> = None;
        loop {
            self.update(&id, |r| r.state = WorkerState::Starting);
            let (mut child, pid, port) = match self.start_process(&plan, again.take()) {
                Ok(started) => started,
                Err(reason) => {
                    self.give_up(&id, &entry, &mut first, reason);
                    return;
                }
            };
            let url = format!("http://127.0.0.1:{port}");
            self.update(&id, |r| {
                r.pid = Some(pid);
                r.port = Some(port);
                r.url = Some(url.clone());
            });
            self.emit(
                &id,
                "starting",
                format!("pid {pid}, port {port}: loading {}", plan.model_ref),
            );

            let ready = self
                .wait_ready(&mut child, &url, plan.engine, &entry.stop)
                .await;
            if entry.stop.is_cancelled() {
                self.terminate(&mut child, pid, self.stop_grace()).await;
                self.release_port(port);
                self.finish_stopped(&id, &entry, &mut first);
                return;
            }
            let was_ready = ready.is_ok();
            let failure = match ready {
                Ok(()) => {
                    // a warm swap: the slots as they were at the last unload, before
                    // any request can take one
                    self.restore_slots(&id, &url, &plan).await;
                    self.update(&id, |r| {
                        r.state = WorkerState::Ready;
                        r.failed_health_checks = 0;
                        r.last_activity = Some(Utc::now());
                    });
                    self.emit(&id, "ready", format!("serving at {url}"));
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Ok(lock(&entry.record).clone()));
                    }
                    port_failures = 0;
                    self.monitor(&id, &entry, &mut child, &url, plan.engine)
                        .await
                }
                Err(why) => {
                    let tail = process::log_tail(&plan.log_path, 8);
                    // Someone took the port between the check and the worker's bind.
                    if tail.contains("cannot listen on") && port_failures < 3 {
                        port_failures += 1;
                        self.terminate(&mut child, pid, Duration::from_secs(1))
                            .await;
                        self.release_port(port);
                        tracing::warn!(worker = %id, port, "port taken: trying another");
                        continue;
                    }
                    if tail.is_empty() {
                        why
                    } else {
                        format!("{why}; its log ends with:\n{tail}")
                    }
                }
            };
            if entry.stop.is_cancelled() {
                if was_ready && !self.shutdown.is_stopping() {
                    self.save_slots(&id, &url, &plan).await;
                }
                self.terminate(&mut child, pid, self.stop_grace()).await;
                self.release_port(port);
                self.finish_stopped(&id, &entry, &mut first);
                if failure == "idle" {
                    // Nobody asked for this stop: the worker leaves the registry itself.
                    self.forget(&id);
                }
                return;
            }
            // Dead, hung or never ready: clean up the process, then restart or give up.
            self.terminate(&mut child, pid, Duration::from_secs(2))
                .await;
            if restarts >= self.supervision.max_restarts {
                self.release_port(port);
                self.give_up(
                    &id,
                    &entry,
                    &mut first,
                    format!("gave up after {restarts} restarts: {failure}"),
                );
                return;
            }
            let backoff = self
                .supervision
                .backoff
                .saturating_mul(1 << restarts.min(16))
                .min(self.supervision.max_backoff);
            restarts += 1;
            self.metrics.restarts.inc();
            self.update(&id, |r| {
                r.state = WorkerState::Restarting;
                r.reason = Some(failure.clone());
                r.pid = None;
                r.restart_count = restarts;
                r.last_restart = Some(Utc::now());
            });
            self.emit(
                &id,
                "restarting",
                format!("restart {restarts} in {}ms: {failure}", backoff.as_millis()),
            );
            tokio::select! {
                () = tokio::time::sleep(backoff) => again = Some(port),
                () = entry.stop.cancelled() => {
                    self.release_port(port);
                    self.finish_stopped(&id, &entry, &mut first);
                    return;
                }
            }
        }
    }

    /// Watches a ready worker until it exits, fails too many health checks in a row,
    /// or is asked to stop; returns why it is no longer serving.
    async fn monitor(
        &self,
        id: &str,
        entry: &Entry,
        child: &mut tokio::process::Child,
        url: &str,
        engine: Engine,
    ) -> String {
        let mut tick = tokio::time::interval(self.supervision.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failed = 0u32;
        let mut tokens_seen: Option<f64> = None;
        // llama-server's progress: its decode count, and when it last moved
        let mut decodes: Option<f64> = None;
        let mut progress_at = Instant::now();
        loop {
            tokio::select! {
                status = child.wait() => {
                    let why = match status {
                        Ok(s) => format!("exited ({}", exit_text(s)),
                        Err(e) => format!("lost: {e}"),
                    };
                    self.emit(id, "exited", why.clone());
                    return why;
                }
                () = entry.stop.cancelled() => return "stopped".into(),
                _ = tick.tick() => {
                    // a chatty worker's log is rotated (its last part kept as .log.1)
                    if let Some(log) = self.get(id).map(|r| r.log_path) {
                        let max = self.supervision.log_max_bytes;
                        let rotated = tokio::task::spawn_blocking(move || process::rotate_if_over(&log, max)).await;
                        if let Ok(Err(e)) = rotated {
                            tracing::warn!(worker = id, "cannot rotate the worker's log: {e}");
                        }
                    }
                    let mut healthy = match self.http.get(format!("{url}/health")).send().await {
                        Ok(r) => r.status().is_success(),
                        Err(_) => false,
                    };
                    if healthy
                        && engine == Engine::LlamaCpp
                        && let Some(m) = self.scrape_llama(id, url, &mut tokens_seen).await
                    {
                        let busy = m.processing.is_some_and(|p| p > 0.0);
                        if !busy || m.decodes != decodes {
                            progress_at = Instant::now();
                            decodes = m.decodes;
                        } else if !self.supervision.stall.is_zero()
                            && progress_at.elapsed() >= self.supervision.stall
                        {
                            self.emit(id, "unhealthy", format!(
                                "no progress for {}s with a request in flight: stalled",
                                progress_at.elapsed().as_secs()
                            ));
                            healthy = false;
                        }
                    }
                    // read each time: a load may change a live worker's TTL
                    let record = self.get(id);
                    let idle_ttl = record
                        .as_ref()
                        .and_then(|r| r.idle_ttl_secs)
                        .filter(|&s| s > 0)
                        .map(Duration::from_secs);
                    let busy = record.as_ref().is_some_and(|r| r.requests_in_flight > 0);
                    if let Some(ttl) = idle_ttl.filter(|_| !busy) {
                        let idle = record
                            .and_then(|r| r.last_activity)
                            .and_then(|t| (Utc::now() - t).to_std().ok());
                        if idle.is_some_and(|idle| idle >= ttl) {
                            let why = format!("idle for {}s: stopped (its idle TTL)", ttl.as_secs());
                            self.update(id, |r| r.reason = Some(why.clone()));
                            self.emit(id, "idle", why);
                            entry.stop.cancel();
                            return "idle".into();
                        }
                    }
                    if healthy {
                        if failed > 0 {
                            self.emit(id, "ready", "healthy again".into());
                        }
                        failed = 0;
                        self.update(id, |r| {
                            r.failed_health_checks = 0;
                            r.state = WorkerState::Ready;
                        });
                    } else {
                        failed += 1;
                        self.metrics.health_check_failures.inc();
                        self.update(id, |r| {
                            r.failed_health_checks = failed;
                            r.state = WorkerState::Unhealthy;
                        });
                        self.emit(id, "unhealthy", format!("{failed} failed health checks in a row"));
                        if failed >= self.supervision.max_failed_checks {
                            return format!("{failed} failed health checks in a row");
                        }
                    }
                }
            }
        }
    }

    /// Restores the slots saved at the model's last unload, and says what came back.
    async fn restore_slots(&self, id: &str, url: &str, plan: &SpawnPlan) {
        let Some(dir) = &plan.slot_cache else {
            return;
        };
        let key = self.key_of(id).unwrap_or_default();
        let slots = slot_count(plan);
        let (restored, failed) = kv_cache::restore(&self.http, url, &key, dir, slots).await;
        for (slot, why) in failed {
            tracing::warn!(
                worker = id,
                slot,
                "a saved KV cache did not restore, and is deleted: {why}"
            );
            self.emit(
                id,
                "kv_cache",
                format!("slot {slot}'s saved KV cache did not restore ({why}): deleted"),
            );
        }
        if !restored.is_empty() {
            let tokens: u64 = restored.iter().map(|(_, t)| t).sum();
            tracing::info!(
                worker = id,
                tokens,
                "restored {} slot(s) saved at the last unload",
                restored.len()
            );
            self.emit(
                id,
                "kv_cache",
                format!(
                    "restored {} slot(s), {tokens} tokens, saved at the model's last unload",
                    restored.len()
                ),
            );
        }
    }

    /// Saves the slots of a worker about to be unloaded, then keeps the saved caches
    /// within their budget.
    async fn save_slots(&self, id: &str, url: &str, plan: &SpawnPlan) {
        let Some(dir) = &plan.slot_cache else {
            return;
        };
        let key = self.key_of(id).unwrap_or_default();
        let saved = kv_cache::save(&self.http, url, &key, dir, slot_count(plan)).await;
        if !saved.is_empty() {
            let tokens: u64 = saved.iter().map(|(_, t)| t).sum();
            tracing::info!(
                worker = id,
                tokens,
                "saved {} slot(s) for the next load",
                saved.len()
            );
        }
        let (root, max) = (
            dir.parent().and_then(Path::parent).map(Path::to_path_buf),
            self.supervision.kv_cache_max_bytes,
        );
        if let Some(root) = root {
            let removed = tokio::task::spawn_blocking(move || kv_cache::trim(&root, max))
                .await
                .unwrap_or_default();
            for f in removed {
                tracing::info!(
                    "removed {}: saved KV caches past --kv-cache-max-bytes",
                    f.display()
                );
            }
        }
    }

    /// llama-server reports no heartbeats: its `/metrics` gives the slots in use and
    /// the speed, and a change in its token counts is activity (for the idle TTL).
    async fn scrape_llama(
        &self,
        id: &str,
        url: &str,
        tokens_seen: &mut Option<f64>,
    ) -> Option<llama::LlamaMetrics> {
        let key = self.key_of(id).unwrap_or_default();
        let request = self.http.get(format!("{url}/metrics")).bearer_auth(key);
        let r = request.send().await.ok()?;
        let text = r.text().await.ok()?;
        let m = llama::parse_metrics(&text);
        let used = m.processing.is_some_and(|p| p > 0.0)
            || (tokens_seen.is_some() && m.tokens_total != *tokens_seen);
        *tokens_seen = m.tokens_total;
        self.update(id, |r| {
            let slots = r.slots_total.unwrap_or(llama::SLOTS);
            r.slots_total = Some(slots);
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let busy = m.processing.unwrap_or(0.0).clamp(0.0, slots as f64) as u64;
            r.slots_available = Some(slots - busy);
            // llama-server empties this figure's bucket at every read of /metrics: a
            // scrape with no generation since the last one says 0, which is no news
            if m.tokens_per_second.is_some_and(|t| t > 0.0) {
                r.tokens_per_second = m.tokens_per_second;
            }
            if let Some(share) = m.draft_acceptance() {
                r.draft_acceptance = Some(share);
            }
            if used {
                r.last_activity = Some(Utc::now());
            }
        });
        Some(m)
    }

    fn give_up(
        &self,
        id: &str,
        entry: &Entry,
        first: &mut Option<oneshot::Sender<StartOutcome>>,
        reason: String,
    ) {
        self.update(id, |r| {
            r.state = WorkerState::Failed;
            r.reason = Some(reason.clone());
            r.pid = None;
            r.url = None;
        });
        self.emit(id, "failed", reason.clone());
        if let Some(tx) = first.take() {
            let _ = tx.send(Err(reason));
        }
        entry.done.cancel();
    }

    fn finish_stopped(
        &self,
        id: &str,
        entry: &Entry,
        first: &mut Option<oneshot::Sender<StartOutcome>>,
    ) {
        self.update(id, |r| {
            r.state = WorkerState::Stopped;
            r.pid = None;
            r.url = None;
        });
        self.emit(id, "stopped", "stopped".into());
        if let Some(tx) = first.take() {
            let _ = tx.send(Err("stopped before it was ready".into()));
        }
        entry.done.cancel();
    }
}

/// The slots a worker has, as the hive started it.
fn slot_count(plan: &SpawnPlan) -> u32 {
    engines::slots_set_by_hive(plan)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
}

/// A new worker id: `worker-` and 8 hex digits.
pub fn new_id() -> String {
    format!("worker-{:08x}", rand::random::<u32>())
}

/// Per-process telemetry for the heartbeat stream: RSS and CPU of each live worker.
pub fn telemetry(workers: &[WorkerRecord], sys: &mut sysinfo::System) -> Vec<Value> {
    let pids: Vec<sysinfo::Pid> = workers
        .iter()
        .filter_map(|w| w.pid)
        .map(sysinfo::Pid::from_u32)
        .collect();
    sys.refresh_processes_specifics(
        sysinfo::ProcessesToUpdate::Some(&pids),
        true,
        sysinfo::ProcessRefreshKind::nothing()
            .with_memory()
            .with_cpu(),
    );
    workers
        .iter()
        .map(|w| {
            let p = w
                .pid
                .and_then(|pid| sys.process(sysinfo::Pid::from_u32(pid)));
            json!({
                "id": w.id,
                "state": w.state,
                "pid": w.pid,
                "url": w.url,
                "model_ref": w.model_ref,
                "rss_bytes": p.map(sysinfo::Process::memory),
                "cpu_percent": p.map(sysinfo::Process::cpu_usage),
                "slots_total": w.slots_total,
                "slots_available": w.slots_available,
                "tokens_per_second": w.tokens_per_second,
                "engine": w.engine,
                "restart_count": w.restart_count,
                "last_heartbeat": w.last_heartbeat,
            })
        })
        .collect()
}
