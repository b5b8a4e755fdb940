//! Jobs: long work that runs when created, and streams its events to whoever listens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The most events a job keeps for late subscribers; progress events replace each
/// other, so this bounds narration.
const MAX_HISTORY: usize = 1000;
/// How long a finished job stays visible.
pub const FINISHED_TTL: Duration = Duration::from_secs(3600);
/// Finished jobs kept at most, the newest: a client that starts jobs in a loop
/// cannot grow the hive's memory without bound.
pub const MAX_FINISHED: usize = 1000;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Created, not started.
    Queued,
    /// Running.
    Running,
    /// Done.
    Completed,
    /// Done, with an error.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Every state, for metrics.
    pub const ALL: [JobState; 5] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The state's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How a job that did not complete ended: its state and its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// `failed` or `cancelled`.
    pub state: JobState,
    /// The error's code.
    pub code: String,
    /// The error's message.
    pub message: String,
}

/// One SSE event: `event: <kind>`, `data: <json>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Its place in the job's stream, from 0.
    pub seq: u64,
    /// `narration`, `progress`, `step`, `result`, `error` or `done`.
    pub kind: &'static str,
    /// The payload.
    pub data: Value,
}

/// A job's public view.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// Its id.
    pub job_id: String,
    /// What it does (`model_download`, ...).
    pub operation: String,
    /// Where it stands.
    pub state: JobState,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its result, once completed.
    pub result: Option<Value>,
    /// Its error, once failed.
    pub error: Option<Value>,
    /// The last progress it reported.
    pub progress: Option<Value>,
}

struct Inner {
    info: JobInfo,
    history: Vec<Event>,
    next_seq: u64,
}

/// One job.
pub struct Job {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
    /// Cancelled by `DELETE /v1/jobs/{id}` or at shutdown.
    pub cancel: CancellationToken,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("info", &self.info())
            .finish_non_exhaustive()
    }
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The job's public view.
    pub fn info(&self) -> JobInfo {
        self.lock().info.clone()
    }

    fn push(&self, kind: &'static str, data: Value) {
        let mut inner = self.lock();
        self.push_in(&mut inner, kind, data);
    }

    fn push_in(&self, inner: &mut Inner, kind: &'static str, data: Value) {
        if inner.info.state.is_finished() {
            return;
        }
        let event = Event {
            seq: inner.next_seq,
            kind,
            data,
        };
        inner.next_seq += 1;
        match kind {
            "progress" | "step" => {
                inner.info.progress = Some(event.data.clone());
                // a late subscriber needs only the newest progress
                if inner.history.last().is_some_and(|e| e.kind == kind) {
                    inner.history.pop();
                }
            }
            "result" => inner.info.result = Some(event.data.clone()),
            "error" => inner.info.error = Some(event.data.clone()),
            _ => {}
        }
        if inner.history.len() >= MAX_HISTORY {
            // keep the first events (what the job is) and the newest
            let at = 1.min(inner.history.len() - 1);
            inner.history.remove(at);
        }
        inner.history.push(event.clone());
        // sent under the lock, so subscribers see history and live events in order
        let _ = self.tx.send(event);
    }

    /// A step worth telling.
    pub fn narrate(&self, action: &str, message: &str) {
        self.push(
            "narration",
            json!({"actor": "rbee-hive", "action": action, "message": message}),
        );
    }

    /// Bytes moved.
    pub fn progress(
        &self,
        bytes_done: u64,
        bytes_total: Option<u64>,
        bytes_per_sec: f64,
        eta_secs: Option<f64>,
    ) {
        self.push(
            "progress",
            json!({"bytes_done": bytes_done, "bytes_total": bytes_total, "bytes_per_sec": bytes_per_sec, "eta_secs": eta_secs}),
        );
    }

    /// Work counted in steps rather than bytes (`crates` of a build).
    pub fn step(&self, done: u64, total: Option<u64>, unit: &str, current: &str) {
        self.push(
            "step",
            json!({"done": done, "total": total, "unit": unit, "current": current}),
        );
    }

    fn set_running(&self) {
        self.lock().info.state = JobState::Running;
    }

    /// Ends the job: `result` (completed) or `error` (failed or cancelled), then `done`.
    pub fn finish(&self, outcome: Result<Value, (&'static str, String)>) {
        let state = match &outcome {
            Ok(_) => JobState::Completed,
            Err(("cancelled", _)) => JobState::Cancelled,
            Err(_) => JobState::Failed,
        };
        match outcome {
            Ok(v) => self.push("result", v),
            Err((code, message)) => self.push("error", json!({"code": code, "message": message})),
        }
        // the state is set with the last event, so whoever sees `done` sees it too
        let mut inner = self.lock();
        self.push_in(&mut inner, "done", json!({"state": state.name()}));
        inner.info.state = state;
        inner.info.finished_at = Some(Utc::now());
    }

    /// Waits for the job to end; its public view then.
    pub async fn finished(&self) -> JobInfo {
        let (_, mut events) = self.subscribe();
        loop {
            let info = self.info();
            if info.state.is_finished() {
                return info;
            }
            if let Err(broadcast::error::RecvError::Closed) = events.recv().await {
                return self.info();
            }
        }
    }

    /// Waits for the job to end, and gives its result as the operation's own type
    /// (a [`crate::workers::WorkerRecord`] for a load, a model's record for a pull);
    /// how it ended otherwise.
    pub async fn wait<T: serde::de::DeserializeOwned>(&self) -> Result<T, Unfinished> {
        let info = self.finished().await;
        let text =
            |v: &Option<Value>, k: &str| v.as_ref().and_then(|e| e[k].as_str()).map(str::to_owned);
        match (info.state, info.result) {
            (JobState::Completed, Some(result)) => {
                serde_json::from_value(result).map_err(|e| Unfinished {
                    state: JobState::Failed,
                    code: "internal".to_owned(),
                    message: format!("job {} gave a result of another shape: {e}", info.job_id),
                })
            }
            (state, _) => Err(Unfinished {
                state,
                code: text(&info.error, "code").unwrap_or_else(|| state.name().to_owned()),
                message: text(&info.error, "message")
                    .unwrap_or_else(|| format!("job {} {}", info.job_id, state.name())),
            }),
        }
    }

    /// The events so far, and a receiver for the ones after them.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let inner = self.lock();
        (inner.history.clone(), self.tx.subscribe())
    }
}

tokio::task_local! {
    /// The deadline of the request being handled, set by [`deadline`]: jobs created
    /// while handling it inherit it.
    pub static DEADLINE: Option<tokio::time::Instant>;
}

/// Reads `X-Deadline` (RFC 3339) and `X-Timeout-Seconds` (the earlier wins) into
/// [`DEADLINE`] for the request's handler; a malformed value is a 400.
pub async fn deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match parse_deadline(request.headers()) {
        Ok(at) => DEADLINE.scope(at, next.run(request)).await,
        Err(message) => {
            crate::error::ApiError::bad_request("invalid_deadline", message).into_response()
        }
    }
}

fn parse_deadline(headers: &axum::http::HeaderMap) -> Result<Option<tokio::time::Instant>, String> {
    let now = tokio::time::Instant::now();
    let mut at: Option<tokio::time::Instant> = None;
    if let Some(v) = headers.get("x-timeout-seconds") {
        let secs: f64 = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 366.0 * 86400.0)
            .ok_or("X-Timeout-Seconds must be a number of seconds, 0 to one year")?;
        at = Some(now + Duration::from_secs_f64(secs));
    }
    if let Some(v) = headers.get("x-deadline") {
        let t = v
            .to_str()
            .ok()
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
            .ok_or("X-Deadline must be an RFC 3339 time, such as 2026-01-31T12:00:00Z")?;
        // a deadline past a year is a year: no overflow of the clock
        let left = (t.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(366 * 86400));
        let d = now + left;
        at = Some(at.map_or(d, |a| a.min(d)));
    }
    Ok(at)
}

/// Every job of the daemon.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// Cancels every job at shutdown, and tracks their tasks.
    shutdown: crate::shutdown::Shutdown,
}

impl Jobs {
    /// The jobs of a hive that stops with `shutdown`.
    pub fn new(shutdown: crate::shutdown::Shutdown) -> Self {
        Self {
            jobs: Mutex::default(),
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a job and runs `work` at once; its outcome ends the job.
    pub fn spawn<F, Fut>(&self, operation: &str, work: F) -> Arc<Job>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: Future<Output = Result<Value, (&'static str, String)>> + Send + 'static,
    {
        let id = format!("job-{}", hex::encode(rand::random::<[u8; 8]>()));
        let job = Arc::new(Job {
            inner: Mutex::new(Inner {
                info: JobInfo {
                    job_id: id.clone(),
                    operation: operation.to_owned(),
                    state: JobState::Queued,
                    created_at: Utc::now(),
                    finished_at: None,
                    result: None,
                    error: None,
                    progress: None,
                },
                history: Vec::new(),
                next_seq: 0,
            }),
            tx: broadcast::Sender::new(256),
            cancel: self.shutdown.child_token(),
        });
        self.prune();
        self.lock().insert(id, Arc::clone(&job));
        let fut = work(Arc::clone(&job));
        let j = Arc::clone(&job);
        let deadline = DEADLINE.try_with(|d| *d).ok().flatten();
        self.shutdown.spawn(async move {
            j.set_running();
            let outcome = match deadline {
                None => fut.await,
                Some(at) => {
                    let mut fut = std::pin::pin!(fut);
                    tokio::select! {
                        outcome = &mut fut => outcome,
                        () = tokio::time::sleep_until(at) => {
                            // The work stops the way a cancel stops it, and says what
                            // it kept.
                            j.cancel.cancel();
                            let said = match fut.await {
                                Err((_, message)) => message,
                                Ok(_) => "the work had just finished".to_owned(),
                            };
                            Err((
                                "deadline_exceeded",
                                format!("the request's deadline passed: {said}"),
                            ))
                        }
                    }
                }
            };
            j.finish(outcome);
        });
        job
    }

    /// The job with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.lock().get(id).cloned()
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<JobInfo> {
        let mut v: Vec<JobInfo> = self.lock().values().map(|j| j.info()).collect();
        v.sort_by_key(|j| std::cmp::Reverse(j.created_at));
        v
    }

    /// Jobs by state, for metrics.
    pub fn count_by_state(&self) -> Vec<(JobState, usize)> {
        let infos = self.list();
        JobState::ALL
            .iter()
            .map(|s| (*s, infos.iter().filter(|i| i.state == *s).count()))
            .collect()
    }

    /// Drops jobs finished longer ago than [`FINISHED_TTL`], and the oldest finished
    /// ones beyond [`MAX_FINISHED`].
    pub fn prune(&self) {
        let cutoff = Utc::now() - chrono::Duration::from_std(FINISHED_TTL).unwrap_or_default();
        let mut jobs = self.lock();
        jobs.retain(|_, j| j.info().finished_at.is_none_or(|t| t > cutoff));
        let mut finished: Vec<(DateTime<Utc>, String)> = jobs
            .iter()
            .filter_map(|(id, j)| j.info().finished_at.map(|t| (t, id.clone())))
            .collect();
        if finished.len() > MAX_FINISHED {
            finished.sort();
            for (_, id) in &finished[..finished.len() - MAX_FINISHED] {
                jobs.remove(id);
            }
        }
    }
}
