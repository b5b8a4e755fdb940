//! One HTTP download engine for every vendor.
//!
//! A file is split into parts fetched over several connections with `Range`; when the
//! queue runs dry the part with the most left is split among idle connections. The
//! bytes land in a partial file beside a small resume state (fsynced ranges), so a
//! download killed at any instant resumes from what is on disk; `If-Range` with the
//! ETag starts over when the remote file changed. A server without ranges gets one
//! stream. Failures are retried with exponential backoff and jitter, `Retry-After`
//! honoured; a stalled connection is reconnected. The sha256 is computed on its own
//! thread as the file fills, so verification needs no second read from disk. Free
//! space is checked and reserved before the first byte. Cancellation keeps the
//! partial. Two requests for one destination share one download. An optional cap
//! bounds the bandwidth of all downloads together.
//!
//! It knows nothing of catalogs, models or Hugging Face.
#![deny(missing_docs)]

mod engine;
mod error;
mod hasher;
mod http;
mod limiter;
mod ranges;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use error::{DownloadError, human_bytes};
pub use limiter::RateLimiter;
pub use ranges::RangeSet;
pub use state::ResumeState;

/// How downloads are made.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// Connections per download (parts fetched at once).
    pub connections: usize,
    /// The smallest part a file is split into.
    pub min_part_size: u64,
    /// Failed tries in a row (without a byte of progress) before giving up.
    pub max_retries: u32,
    /// The first backoff delay; it doubles, with jitter, up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest backoff delay.
    pub max_backoff: Duration,
    /// A connection that sends nothing for this long is dropped and reopened.
    pub stall_timeout: Duration,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How often the resume state is recorded without an fsync: at most this much
    /// transfer is lost when the process is killed.
    pub state_interval: Duration,
    /// How often the data is fsynced and the state recorded as surviving a machine
    /// crash.
    pub checkpoint_interval: Duration,
    /// How often progress is reported.
    pub progress_interval: Duration,
    /// A cap on the bytes per second of all downloads together.
    pub bandwidth_limit: Option<u64>,
    /// Redirects followed at most.
    pub max_redirects: usize,
    /// Compute the sha256 of files that come with none to check. Off only to
    /// measure what hashing costs; a requested sha256 is always checked.
    pub hash: bool,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            connections: 8,
            min_part_size: 1 << 20,
            max_retries: 8,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            state_interval: Duration::from_millis(50),
            checkpoint_interval: Duration::from_secs(1),
            progress_interval: Duration::from_millis(500),
            bandwidth_limit: None,
            max_redirects: 10,
            hash: true,
        }
    }
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    /// Where it is.
    pub url: url::Url,
    /// Where it goes once complete and verified.
    pub dest: PathBuf,
    /// Where the partial file and its resume state live (`$RBEE_HOME/downloads`).
    /// Must be on the filesystem of `dest`, so that the final rename is atomic.
    pub work_dir: PathBuf,
    /// The sha256 it must have, lowercase hex, when known.
    pub sha256: Option<String>,
    /// The size it must have, when known.
    pub size: Option<u64>,
    /// A credential, sent to `url`'s host and never to a redirect target on
    /// another host.
    pub credential: Option<Credential>,
}

/// How a download proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic ...`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer(<set>)"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <set>)"),
        }
    }
}

/// What a finished download gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOutcome {
    /// The file, complete.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its sha256, lowercase hex; `None` only when hashing was turned off.
    pub sha256: Option<String>,
    /// Whether the sha256 was checked against the one requested.
    pub verified: bool,
    /// The remote file's ETag, when it had one.
    pub etag: Option<String>,
    /// Bytes that were already on disk from an earlier attempt.
    pub resumed_bytes: u64,
    /// Whether the server took ranges (and so whether a crash could be resumed).
    pub resumable: bool,
}

/// How far a download has come.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Progress {
    /// Bytes on disk.
    pub bytes_done: u64,
    /// Bytes in all, when known.
    pub bytes_total: Option<u64>,
    /// A moving average of the speed.
    pub bytes_per_sec: f64,
    /// Seconds left at that speed, when known.
    pub eta_secs: Option<f64>,
}

/// Where progress and narration go: a progress bar, an SSE stream.
pub trait Reporter: Send + Sync {
    /// Periodic progress.
    fn progress(&self, progress: &Progress);
    /// Something a person should know: resuming, starting over, no ranges.
    fn message(&self, message: &str) {
        let _ = message;
    }
}

/// A reporter that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReporter;

impl Reporter for NoReporter {
    fn progress(&self, _: &Progress) {}
}

/// Downloads files; share one per process so that the bandwidth cap and the
/// sharing of identical downloads cover everything.
#[derive(Debug, Clone)]
pub struct Downloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    config: DownloadConfig,
    limiter: Option<Arc<RateLimiter>>,
    inflight: Mutex<HashMap<PathBuf, Arc<Shared>>>,
}

/// One download in flight, and everyone waiting on it.
#[derive(Debug)]
struct Shared {
    progress: watch::Sender<Progress>,
    messages: broadcast::Sender<String>,
    result: watch::Sender<Option<Result<DownloadOutcome, DownloadError>>>,
    cancel: CancellationToken,
    waiters: Mutex<usize>,
}

impl Downloader {
    /// A downloader with its own HTTP client.
    pub fn new(config: DownloadConfig) -> Result<Self, DownloadError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(config.max_redirects))
            .user_agent(concat!("rbee-hive/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DownloadError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let limiter = config
            .bandwidth_limit
            .map(|r| Arc::new(RateLimiter::new(r)));
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config,
                limiter,
                inflight: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DownloadConfig {
        &self.inner.config
    }

    /// The HTTP client, for vendors' own API calls (same TLS, redirects, agent).
    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    /// The partial file and resume state a request would use.
    pub fn partial_paths(request: &DownloadRequest) -> (PathBuf, PathBuf) {
        engine::partial_paths(&request.work_dir, &request.dest)
    }

    /// Reads at most `len` bytes of `url` from `start` with one `Range` request (a
    /// server without ranges gets its stream cut after them): what a look at a
    /// file's header costs instead of the whole file. Fewer bytes come back only
    /// at the file's end. With them, the file's size when the server said it.
    pub async fn read_range(
        &self,
        url: &url::Url,
        credential: Option<&Credential>,
        start: u64,
        len: u64,
    ) -> Result<(Vec<u8>, Option<u64>), DownloadError> {
        use futures_util::StreamExt as _;
        let name = url.as_str();
        if len == 0 {
            return Ok((Vec::new(), None));
        }
        let rb = self
            .inner
            .client
            .get(url.clone())
            .header(
                reqwest::header::RANGE,
                format!("bytes={start}-{}", start + len - 1),
            )
            .timeout(self.inner.config.stall_timeout.max(Duration::from_secs(30)));
        let resp = http::authorize(rb, credential)
            .send()
            .await
            .map_err(|e| http::transport_failure(name, &e).into_error())?;
        let (skip, total) = match resp.status() {
            reqwest::StatusCode::PARTIAL_CONTENT => {
                (0, http::content_range(resp.headers()).and_then(|r| r.2))
            }
            reqwest::StatusCode::RANGE_NOT_SATISFIABLE => return Ok((Vec::new(), None)),
            s if s.is_success() => (start, http::content_length(resp.headers())),
            _ => {
                return Err(http::status_failure(name, &resp).into_error());
            }
        };
        let cap = usize::try_from(len).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(cap.min(64 << 20));
        let mut skipped = 0u64;
        let mut stream = resp.bytes_stream();
        while out.len() < cap {
            let Some(chunk) = stream.next().await else {
                break;
            };
            let chunk = chunk.map_err(|e| http::transport_failure(name, &e).into_error())?;
            let mut piece: &[u8] = &chunk;
            if skipped < skip {
                let n = usize::try_from((skip - skipped).min(piece.len() as u64)).unwrap_or(0);
                skipped += n as u64;
                piece = &piece[n..];
            }
            let room = cap - out.len();
            out.extend_from_slice(&piece[..piece.len().min(room)]);
        }
        Ok((out, total))
    }

    /// Downloads `request.url` to `request.dest`.
    ///
    /// A second call for the same `dest` while one runs joins it: both get the same
    /// progress and result. Cancelling `cancel` leaves this call at once with
    /// [`DownloadError::Cancelled`]; the download stops, keeping its partial, when
    /// every caller waiting on it has cancelled.
    pub async fn download(
        &self,
        request: DownloadRequest,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> Result<DownloadOutcome, DownloadError> {
        let shared = self.join_or_start(request);
        follow(&shared, reporter.as_ref(), &cancel).await
    }

    fn join_or_start(&self, request: DownloadRequest) -> Arc<Shared> {
        let mut inflight = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(shared) = inflight.get(&request.dest) {
            *shared
                .waiters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
            return Arc::clone(shared);
        }
        let shared = Arc::new(Shared {
            progress: watch::Sender::new(Progress::default()),
            messages: broadcast::Sender::new(64),
            result: watch::Sender::new(None),
            cancel: CancellationToken::new(),
            waiters: Mutex::new(1),
        });
        inflight.insert(request.dest.clone(), Arc::clone(&shared));
        let inner = Arc::clone(&self.inner);
        let task_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let dest = request.dest.clone();
            let reporter = Arc::new(FanOut(Arc::clone(&task_shared)));
            let job = engine::Job {
                client: inner.client.clone(),
                config: inner.config.clone(),
                limiter: inner.limiter.clone(),
                request,
                reporter,
                cancel: task_shared.cancel.clone(),
            };
            let result = job.run().await;
            inner
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&dest);
            task_shared.result.send_replace(Some(result));
        });
        shared
    }
}

/// Feeds one download's reports to everyone following it.
struct FanOut(Arc<Shared>);

impl Reporter for FanOut {
    fn progress(&self, p: &Progress) {
        self.0.progress.send_replace(*p);
    }
    fn message(&self, m: &str) {
        tracing::info!(message = m, "download");
        let _ = self.0.messages.send(m.to_owned());
    }
}

/// How long the last caller to cancel waits for the download to save its partial.
const STOP_GRACE: Duration = Duration::from_secs(5);

async fn follow(
    shared: &Shared,
    reporter: &dyn Reporter,
    cancel: &CancellationToken,
) -> Result<DownloadOutcome, DownloadError> {
    let mut progress = shared.progress.subscribe();
    let mut messages = shared.messages.subscribe();
    let mut result = shared.result.subscribe();
    loop {
        if let Some(r) = result.borrow_and_update().clone() {
            return r;
        }
        tokio::select! {
            () = cancel.cancelled() => {
                let last = {
                    let mut waiters = shared.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *waiters -= 1;
                    *waiters == 0
                };
                if last {
                    // Stop the download, and return once its partial and state are saved.
                    shared.cancel.cancel();
                    let _ = tokio::time::timeout(STOP_GRACE, result.wait_for(Option::is_some)).await;
                }
                return Err(DownloadError::Cancelled);
            }
            changed = progress.changed() => {
                if changed.is_ok() {
                    let p = *progress.borrow_and_update();
                    reporter.progress(&p);
                }
            }
            msg = messages.recv() => {
                if let Ok(m) = msg {
                    reporter.message(&m);
                }
            }
            changed = result.changed() => {
                if changed.is_err() {
                    return Err(DownloadError::Cancelled);
                }
            }
        }
    }
}

/// The partial file and resume state of a download to `dest` with work folder
/// `work_dir`: what to delete to drop a partial download.
pub fn partial_paths(work_dir: &Path, dest: &Path) -> (PathBuf, PathBuf) {
    engine::partial_paths(work_dir, dest)
}

/// The bytes a resumed download to `dest` would not fetch again: what its resume
/// state records as on disk; `None` when there is no partial to resume.
pub fn resumable_bytes(work_dir: &Path, dest: &Path) -> Option<u64> {
    let (part, state) = engine::partial_paths(work_dir, dest);
    if !part.is_file() {
        return None;
    }
    ResumeState::load(&state).map(|s| s.done.covered())
}

/// Free bytes on the filesystem holding `path`.
pub fn available_space(path: &Path) -> std::io::Result<u64> {
    fs4::available_space(path)
}
