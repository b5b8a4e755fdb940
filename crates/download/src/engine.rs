//! One download from probe to rename.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use reqwest::header::{self, HeaderValue};
use reqwest::{Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hasher::Hasher;
use crate::http::{self, Failure};
use crate::ranges::RangeSet;
use crate::state::{ResumeState, STATE_VERSION};
use crate::{
    DownloadConfig, DownloadError, DownloadOutcome, DownloadRequest, Progress, RateLimiter,
    Reporter, human_bytes,
};

/// Bytes gathered before one write to the file.
const WRITE_BLOCK: usize = 256 << 10;
/// Stalls in a row on one part before it counts as a failure.
const MAX_STALLS: u32 = 20;
/// The end of a segment whose length the server did not say: the stream's own end
/// is the file's end.
const OPEN_END: u64 = u64::MAX;

/// The partial file and state for a destination: named by a hash of the destination
/// path, so that a restart finds them whatever URL the file now comes from.
pub(crate) fn partial_paths(work_dir: &Path, dest: &Path) -> (PathBuf, PathBuf) {
    let digest = hex::encode(Sha256::digest(dest.as_os_str().as_encoded_bytes()));
    let name: String = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let stem = format!("{}-{name}", &digest[..16]);
    (
        work_dir.join(format!("{stem}.part")),
        work_dir.join(format!("{stem}.state")),
    )
}

pub(crate) struct Job {
    pub client: reqwest::Client,
    pub config: DownloadConfig,
    pub limiter: Option<Arc<RateLimiter>>,
    pub request: DownloadRequest,
    pub reporter: Arc<dyn Reporter>,
    pub cancel: CancellationToken,
}

/// How the server will serve the file.
enum Probe {
    Ranges {
        total: u64,
        etag: Option<String>,
        linked_sha256: Option<String>,
    },
    /// No ranges: this response is the whole file.
    Whole {
        response: Response,
        total: Option<u64>,
        etag: Option<String>,
        linked_sha256: Option<String>,
    },
}

impl Probe {
    /// `response` is the whole file: what its headers say of it.
    fn whole(response: Response) -> Self {
        let total = http::content_length(response.headers());
        let etag = http::strong_etag(response.headers());
        let linked_sha256 = http::linked_sha256(response.headers());
        Self::Whole {
            response,
            total,
            etag,
            linked_sha256,
        }
    }
}

/// Why a part stopped.
enum PartError {
    Failure(Failure),
    Stalled,
    /// The remote file is no longer the one the partial holds.
    Changed(String),
}

impl Job {
    fn url(&self) -> &str {
        self.request.url.as_str()
    }

    fn io(&self, what: &str, path: &Path, e: std::io::Error) -> DownloadError {
        if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
            return DownloadError::DiskFull {
                path: path.to_path_buf(),
                source: Arc::new(e),
            };
        }
        DownloadError::io(format!("{what} {}", path.display()), e)
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.min_backoff)
            .with_max_delay(self.config.max_backoff)
            .with_max_times(self.config.max_retries as usize)
            .with_jitter()
            .build()
    }

    /// Waits `delay`, or returns early with `Cancelled`.
    async fn pause(&self, delay: Duration) -> Result<(), DownloadError> {
        tokio::select! {
            () = self.cancel.cancelled() => Err(DownloadError::Cancelled),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }

    fn get(&self) -> reqwest::RequestBuilder {
        http::authorize(
            self.client.get(self.request.url.clone()),
            self.request.credential.as_ref(),
        )
    }

    pub(crate) async fn run(mut self) -> Result<DownloadOutcome, DownloadError> {
        if let Some(parent) = self.request.dest.parent() {
            fs_err::create_dir_all(parent).map_err(|e| self.io("cannot create", parent, e))?;
        }
        fs_err::create_dir_all(&self.request.work_dir)
            .map_err(|e| self.io("cannot create", &self.request.work_dir, e))?;
        // A file that changes under us twice in a row is not worth chasing further.
        let mut restarts = 0;
        loop {
            match self.attempt().await {
                Err(DownloadError::Protocol { message, .. })
                    if message.starts_with("changed:") && restarts < 2 =>
                {
                    restarts += 1;
                    self.reporter.message(&format!(
                        "the remote file changed during the download ({}): starting over",
                        message.trim_start_matches("changed:").trim()
                    ));
                    self.discard_partial();
                }
                other => return other,
            }
        }
    }

    fn discard_partial(&self) {
        let (part, state) = partial_paths(&self.request.work_dir, &self.request.dest);
        let _ = fs_err::remove_file(part);
        let _ = fs_err::remove_file(state);
    }

    async fn attempt(&mut self) -> Result<DownloadOutcome, DownloadError> {
        let probe = self.probe().await?;
        // The hub's `X-Linked-Etag` is the file's sha256: check it when none was given.
        let headers = match &probe {
            Probe::Ranges { linked_sha256, .. } | Probe::Whole { linked_sha256, .. } => {
                linked_sha256.clone()
            }
        };
        if self.request.sha256.is_none()
            && let Some(sha) = headers
        {
            self.request.sha256 = Some(sha);
        }
        match probe {
            Probe::Ranges { total, etag, .. } => self.ranged(total, etag).await,
            Probe::Whole {
                response,
                total,
                etag,
                ..
            } => self.whole(response, total, etag).await,
        }
    }

    /// Asks for the first byte: a 206 says ranges work and gives the size.
    async fn probe(&self) -> Result<Probe, DownloadError> {
        let mut backoff = self.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = tokio::select! {
                () = self.cancel.cancelled() => return Err(DownloadError::Cancelled),
                r = self.get().header(header::RANGE, "bytes=0-0").send() => r,
            };
            let failure = match sent {
                Ok(resp) if resp.status() == StatusCode::PARTIAL_CONTENT => {
                    let etag = http::strong_etag(resp.headers());
                    let Some((0, 0, Some(total))) = http::content_range(resp.headers()) else {
                        return Err(DownloadError::Protocol {
                            url: self.url().to_owned(),
                            message: "a 206 answer without a usable Content-Range".into(),
                        });
                    };
                    self.check_size(total)?;
                    let linked_sha256 = http::linked_sha256(resp.headers());
                    return Ok(Probe::Ranges {
                        total,
                        etag,
                        linked_sha256,
                    });
                }
                Ok(resp) if resp.status() == StatusCode::OK => {
                    if let Some(t) = http::content_length(resp.headers()) {
                        self.check_size(t)?;
                    }
                    return Ok(Probe::whole(resp));
                }
                Ok(resp) if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                    // An empty file has no byte 0: fetch it whole.
                    let resp =
                        self.get().send().await.map_err(|e| {
                            match http::transport_failure(self.url(), &e) {
                                Failure::Retry { error, .. } | Failure::Fatal(error) => error,
                            }
                        })?;
                    if !resp.status().is_success() {
                        match http::status_failure(self.url(), &resp) {
                            Failure::Retry { error, .. } | Failure::Fatal(error) => {
                                return Err(error);
                            }
                        }
                    }
                    return Ok(Probe::whole(resp));
                }
                Ok(resp) => http::status_failure(self.url(), &resp),
                Err(e) => http::transport_failure(self.url(), &e),
            };
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Retry { error, after } => {
                    self.retry_wait(&mut backoff, attempts, error, after, None)
                        .await?;
                }
            }
        }
    }

    fn check_size(&self, actual: u64) -> Result<(), DownloadError> {
        match self.request.size {
            Some(expected) if expected != actual => Err(DownloadError::SizeMismatch {
                url: self.url().to_owned(),
                expected,
                actual,
            }),
            _ => Ok(()),
        }
    }

    /// Checks free space for what is still missing and reserves the whole file.
    fn reserve(
        &self,
        file: &File,
        part: &Path,
        total: u64,
        have: u64,
    ) -> Result<(), DownloadError> {
        let needed = total.saturating_sub(have);
        let available = fs4::available_space(&self.request.work_dir)
            .map_err(|e| self.io("cannot read free space of", &self.request.work_dir, e))?;
        if needed > available {
            return Err(DownloadError::InsufficientSpace {
                path: self.request.work_dir.clone(),
                needed: human_bytes(needed),
                available: human_bytes(available),
            });
        }
        match fs4::FileExt::allocate(file, total) {
            Ok(()) => Ok(()),
            Err(e)
                if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull =>
            {
                Err(DownloadError::InsufficientSpace {
                    path: self.request.work_dir.clone(),
                    needed: human_bytes(needed),
                    available: human_bytes(available),
                })
            }
            // A filesystem without fallocate: the space is checked, not reserved.
            Err(e) => {
                tracing::debug!(path = %part.display(), error = %e, "cannot preallocate");
                file.set_len(total)
                    .map_err(|e| self.io("cannot size", part, e))
            }
        }
    }

    async fn ranged(
        &self,
        total: u64,
        etag: Option<String>,
    ) -> Result<DownloadOutcome, DownloadError> {
        let (part_path, state_path) = partial_paths(&self.request.work_dir, &self.request.dest);
        let previous = ResumeState::load(&state_path).filter(|_| part_path.exists());
        let done = match previous {
            Some(s) if s.total == total && s.etag == etag => {
                if s.done.covered() > 0 {
                    self.reporter.message(&format!(
                        "resuming: {} of {} already on disk",
                        human_bytes(s.done.covered()),
                        human_bytes(total)
                    ));
                }
                s.done
            }
            Some(s) => {
                self.reporter.message(&format!(
                    "the remote file changed since the partial download (size {} -> {}, etag {:?} -> {:?}): starting over",
                    s.total, total, s.etag, etag
                ));
                let _ = fs_err::remove_file(&part_path);
                RangeSet::default()
            }
            None => RangeSet::default(),
        };
        let resumed = done.covered();
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part_path)
            .map_err(|e| self.io("cannot open", &part_path, e))?
            .into_parts()
            .0;
        if resumed == 0 {
            file.set_len(0)
                .map_err(|e| self.io("cannot truncate", &part_path, e))?;
        }
        self.reserve(&file, &part_path, total, resumed)?;
        let file = Arc::new(file);

        let hasher = self.hasher(&file);
        hasher.advance(done.contiguous_prefix());
        let shared = Arc::new(Transfer {
            file: Arc::clone(&file),
            part_path: part_path.clone(),
            done: Mutex::new(done.clone()),
            bytes_done: AtomicU64::new(resumed),
            hasher,
            sched: Mutex::new(Sched::new(&done, total, self.part_size(total))),
            etag: etag.clone(),
            state: ResumeState {
                version: STATE_VERSION,
                url: self.url().to_owned(),
                total,
                etag: etag.clone(),
                done: RangeSet::default(),
                durable: RangeSet::default(),
                boot_id: crate::state::boot_id().map(str::to_owned),
            },
            durable: Mutex::new(done.clone()),
        });

        let stop = self.cancel.child_token();
        let mut workers = JoinSet::new();
        for _ in 0..self.config.connections.max(1) {
            let job = self.clone_for_worker(stop.clone());
            let t = Arc::clone(&shared);
            workers.spawn(async move { job.worker(&t).await });
        }
        let result = self
            .supervise(&shared, &state_path, Some(total), &mut workers, &stop)
            .await;
        // Whatever happened, what is on disk is recorded for the next attempt.
        let checkpoint = shared.checkpoint(&state_path, true).await;
        result?;
        checkpoint.map_err(|e| self.io("cannot save the resume state", &state_path, e))?;

        let covered = shared.done().covered();
        if covered != total {
            return Err(DownloadError::Protocol {
                url: self.url().to_owned(),
                message: format!("only {covered} of {total} bytes arrived"),
            });
        }
        let Ok(transfer) = Arc::try_unwrap(shared) else {
            return Err(DownloadError::Invalid("a part is still running".into()));
        };
        self.finish(transfer, total, resumed, etag, true, &state_path)
            .await
    }

    fn hasher(&self, file: &Arc<File>) -> Hasher {
        if self.config.hash || self.request.sha256.is_some() {
            Hasher::start(Arc::clone(file))
        } else {
            Hasher::off()
        }
    }

    fn part_size(&self, total: u64) -> u64 {
        let conns = self.config.connections.max(1) as u64;
        (total / (conns * 4)).clamp(self.config.min_part_size.max(1), 64 << 20)
    }

    fn clone_for_worker(&self, cancel: CancellationToken) -> Job {
        Job {
            client: self.client.clone(),
            config: self.config.clone(),
            limiter: self.limiter.clone(),
            request: self.request.clone(),
            reporter: Arc::clone(&self.reporter),
            cancel,
        }
    }

    /// Runs until every worker is done, reporting progress and saving the resume
    /// state on the way; stops them all at the first error or at cancellation.
    async fn supervise(
        &self,
        t: &Arc<Transfer>,
        state_path: &Path,
        total: Option<u64>,
        workers: &mut JoinSet<Result<(), DownloadError>>,
        stop: &CancellationToken,
    ) -> Result<(), DownloadError> {
        let mut record = tokio::time::interval(self.config.state_interval);
        record.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpoint = tokio::time::interval(self.config.checkpoint_interval);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = tokio::time::interval(self.config.progress_interval);
        let mut speed = Speed::new(t.bytes_done.load(Ordering::Relaxed));
        let mut first_error = None;
        loop {
            tokio::select! {
                joined = workers.join_next() => match joined {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        stop.cancel();
                        first_error.get_or_insert(e);
                    }
                    Some(Err(join)) => {
                        stop.cancel();
                        first_error.get_or_insert(DownloadError::Invalid(format!("a download task failed: {join}")));
                    }
                },
                _ = checkpoint.tick() => {
                    if let Err(e) = t.checkpoint(state_path, true).await {
                        tracing::warn!(path = %state_path.display(), error = %e, "cannot save the resume state");
                    }
                }
                _ = record.tick() => {
                    if let Err(e) = t.checkpoint(state_path, false).await {
                        tracing::warn!(path = %state_path.display(), error = %e, "cannot save the resume state");
                    }
                }
                _ = report.tick() => {
                    let done = t.bytes_done.load(Ordering::Relaxed);
                    self.reporter.progress(&speed.sample(done, total));
                }
            }
        }
        let done = t.bytes_done.load(Ordering::Relaxed);
        self.reporter.progress(&speed.sample(done, total));
        if self.cancel.is_cancelled() {
            return Err(DownloadError::Cancelled);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One connection: takes parts until none is left.
    async fn worker(&self, t: &Transfer) -> Result<(), DownloadError> {
        loop {
            let next = t.sched().next();
            let Some(seg) = next else { break };
            let r = self.fetch_part(t, &seg).await;
            t.sched().finish(&seg);
            r?;
        }
        Ok(())
    }

    /// Fetches one part, with retries; returns once its (possibly shrunk) range is on disk.
    async fn fetch_part(&self, t: &Transfer, seg: &Segment) -> Result<(), DownloadError> {
        let mut backoff = self.backoff();
        let mut attempts = 0;
        let mut stalls = 0;
        loop {
            let before = seg.lock().written;
            if before >= seg.lock().end {
                return Ok(());
            }
            attempts += 1;
            let r = self.fetch_part_once(t, seg).await;
            let progressed = seg.lock().written > before;
            if progressed {
                backoff = self.backoff();
                stalls = 0;
            }
            match r {
                Ok(()) => return Ok(()),
                Err(PartError::Changed(why)) => {
                    return Err(DownloadError::Protocol {
                        url: self.url().to_owned(),
                        message: format!("changed: {why}"),
                    });
                }
                Err(PartError::Stalled) => {
                    stalls += 1;
                    tracing::debug!(url = self.url(), "connection stalled, reconnecting");
                    if stalls <= MAX_STALLS {
                        continue;
                    }
                    return Err(DownloadError::Network {
                        url: self.url().to_owned(),
                        message: format!(
                            "no data for {:?}, {MAX_STALLS} times in a row",
                            self.config.stall_timeout
                        ),
                    });
                }
                Err(PartError::Failure(Failure::Fatal(e))) => return Err(e),
                Err(PartError::Failure(Failure::Retry { error, after })) => {
                    if self.cancel.is_cancelled() {
                        return Err(DownloadError::Cancelled);
                    }
                    self.retry_wait(&mut backoff, attempts, error, after, None)
                        .await?;
                }
            }
        }
    }

    async fn fetch_part_once(&self, t: &Transfer, seg: &Segment) -> Result<(), PartError> {
        let (start, end) = {
            let mut s = seg.lock();
            s.reserved = s.written;
            (s.written, s.end)
        };
        let mut rb = self
            .get()
            .header(header::RANGE, format!("bytes={start}-{}", end - 1));
        if let Some(v) = t
            .etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            rb = rb.header(header::IF_RANGE, v);
        }
        let resp = tokio::select! {
            () = self.cancel.cancelled() => return Err(cancelled()),
            r = tokio::time::timeout(self.config.stall_timeout, rb.send()) => match r {
                Err(_) => return Err(PartError::Stalled),
                Ok(Err(e)) => return Err(PartError::Failure(http::transport_failure(self.url(), &e))),
                Ok(Ok(resp)) => resp,
            },
        };
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                return Err(PartError::Changed(
                    "the server answered a range request with the whole file".into(),
                ));
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(PartError::Changed("the file is shorter than before".into()));
            }
            _ => return Err(PartError::Failure(http::status_failure(self.url(), &resp))),
        }
        match http::content_range(resp.headers()) {
            Some((s, _, total)) if s == start && total.is_none_or(|tt| tt == t.state.total) => {}
            other => {
                return Err(PartError::Failure(Failure::Retry {
                    error: DownloadError::Protocol {
                        url: self.url().to_owned(),
                        message: format!(
                            "asked for bytes {start}-{}, got Content-Range {other:?}",
                            end - 1
                        ),
                    },
                    after: None,
                }));
            }
        }
        self.receive(t, seg, resp, end - start).await
    }

    /// Streams a response body into the file at the segment's position.
    async fn receive(
        &self,
        t: &Transfer,
        seg: &Segment,
        resp: Response,
        asked: u64,
    ) -> Result<(), PartError> {
        let mut stream = resp.bytes_stream();
        let mut buf = BytesMut::with_capacity(WRITE_BLOCK);
        let mut buf_at = seg.lock().written;
        let mut received = 0u64;
        loop {
            let next = tokio::select! {
                () = self.cancel.cancelled() => None,
                n = tokio::time::timeout(self.config.stall_timeout, stream.next()) => Some(n),
            };
            let chunk: Bytes = match next {
                None => {
                    t.flush(seg, buf_at, &mut buf).await.map_err(fatal)?;
                    return Err(cancelled());
                }
                Some(Err(_)) => {
                    t.flush(seg, buf_at, &mut buf).await.map_err(fatal)?;
                    return Err(PartError::Stalled);
                }
                Some(Ok(None)) => {
                    t.flush(seg, buf_at, &mut buf).await.map_err(fatal)?;
                    let s = seg.lock();
                    if s.written >= s.end || s.end == OPEN_END {
                        return Ok(());
                    }
                    return Err(PartError::Failure(Failure::Retry {
                        error: DownloadError::Network {
                            url: self.url().to_owned(),
                            message: format!(
                                "the connection closed {} bytes early",
                                s.end - s.written
                            ),
                        },
                        after: None,
                    }));
                }
                Some(Ok(Some(Err(e)))) => {
                    t.flush(seg, buf_at, &mut buf).await.map_err(fatal)?;
                    return Err(PartError::Failure(http::transport_failure(self.url(), &e)));
                }
                Some(Ok(Some(Ok(c)))) => c,
            };
            received += chunk.len() as u64;
            if received > asked {
                t.flush(seg, buf_at, &mut buf).await.map_err(fatal)?;
                return Err(PartError::Failure(Failure::Retry {
                    error: DownloadError::Protocol {
                        url: self.url().to_owned(),
                        message: format!("the server sent more than the {asked} bytes announced"),
                    },
                    after: None,
                }));
            }
            if let Some(l) = &self.limiter {
                l.acquire(chunk.len()).await;
            }
            // Take what still belongs to this segment: another connection may have
            // taken over its end.
            let (take, finished) = {
                let mut s = seg.lock();
                let take = (chunk.len() as u64).min(s.end.saturating_sub(s.reserved));
                s.reserved += take;
                (take, s.reserved >= s.end)
            };
            buf.extend_from_slice(&chunk[..usize::try_from(take).unwrap_or(0)]);
            if buf.len() >= WRITE_BLOCK || finished {
                let n = buf.len() as u64;
                t.flush(seg, buf_at, &mut buf).await.map_err(fatal)?;
                buf_at += n;
            }
            if finished {
                return Ok(());
            }
        }
    }

    /// No ranges: one stream from byte 0, started over on failure. Nothing of it is
    /// kept when it fails or is cancelled: it could only be fetched again whole.
    async fn whole(
        &self,
        first: Response,
        total: Option<u64>,
        etag: Option<String>,
    ) -> Result<DownloadOutcome, DownloadError> {
        self.reporter.message(
            "the server does not support ranges: one stream, and an interrupted download starts over",
        );
        let (part_path, state_path) = partial_paths(&self.request.work_dir, &self.request.dest);
        let _ = fs_err::remove_file(&state_path);
        let outcome = self
            .whole_stream(first, total, etag, &part_path, &state_path)
            .await;
        if outcome.is_err() {
            let _ = fs_err::remove_file(&part_path);
        }
        outcome
    }

    async fn whole_stream(
        &self,
        first: Response,
        total: Option<u64>,
        etag: Option<String>,
        part_path: &Path,
        state_path: &Path,
    ) -> Result<DownloadOutcome, DownloadError> {
        let mut backoff = self.backoff();
        let mut attempts = 0;
        let mut next_response = Some(first);
        loop {
            let resp = match next_response.take() {
                Some(r) => r,
                None => match self.get().send().await {
                    Ok(r) if r.status().is_success() => r,
                    other => {
                        attempts += 1;
                        let failure = match other {
                            Ok(r) => http::status_failure(self.url(), &r),
                            Err(e) => http::transport_failure(self.url(), &e),
                        };
                        match failure {
                            Failure::Fatal(e) => return Err(e),
                            Failure::Retry { error, after } => {
                                let again = Some("starting the stream over");
                                self.retry_wait(&mut backoff, attempts, error, after, again)
                                    .await?;
                                continue;
                            }
                        }
                    }
                },
            };
            let file = fs_err::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(part_path)
                .map_err(|e| self.io("cannot open", part_path, e))?
                .into_parts()
                .0;
            if let Some(total) = total {
                self.reserve(&file, part_path, total, 0)?;
            }
            let file = Arc::new(file);
            let end = total.unwrap_or(OPEN_END);
            let t = Arc::new(Transfer {
                file: Arc::clone(&file),
                part_path: part_path.to_path_buf(),
                done: Mutex::new(RangeSet::default()),
                bytes_done: AtomicU64::new(0),
                hasher: self.hasher(&file),
                sched: Mutex::new(Sched::empty()),
                etag: None,
                state: ResumeState::default(),
                durable: Mutex::new(RangeSet::default()),
            });
            let seg = Arc::new(Segment::new(0, end));
            let stop = self.cancel.child_token();
            let mut workers = JoinSet::new();
            {
                let job = self.clone_for_worker(stop.clone());
                let t = Arc::clone(&t);
                let seg = Arc::clone(&seg);
                workers.spawn(async move {
                    match job.receive(&t, &seg, resp, end).await {
                        Ok(()) => Ok(()),
                        Err(PartError::Failure(Failure::Fatal(e))) => Err(e),
                        Err(PartError::Failure(Failure::Retry { error, .. })) => Err(error),
                        Err(PartError::Stalled) => Err(DownloadError::Network {
                            url: job.url().to_owned(),
                            message: "the connection stalled".into(),
                        }),
                        Err(PartError::Changed(m)) => Err(DownloadError::Protocol {
                            url: job.url().to_owned(),
                            message: m,
                        }),
                    }
                });
            }
            // state_path is not written for a stream that cannot resume
            let result = self
                .supervise(&t, Path::new(""), total, &mut workers, &stop)
                .await;
            let written = seg.lock().written;
            match result {
                Ok(()) => {
                    // Without a length, the end of the stream is the end of the file.
                    let size = match total {
                        Some(t) if written != t => Err(DownloadError::Protocol {
                            url: self.url().to_owned(),
                            message: format!("only {written} of {t} bytes arrived"),
                        }),
                        _ => self.check_size(written).map(|()| written),
                    };
                    let size = size?;
                    let Ok(transfer) = Arc::try_unwrap(t) else {
                        return Err(DownloadError::Invalid("the stream is still running".into()));
                    };
                    return self
                        .finish(transfer, size, 0, etag, false, state_path)
                        .await;
                }
                Err(
                    e @ (DownloadError::Cancelled
                    | DownloadError::DiskFull { .. }
                    | DownloadError::Io { .. }),
                ) => return Err(e),
                Err(error) => {
                    attempts += 1;
                    self.retry_wait(
                        &mut backoff,
                        attempts,
                        error,
                        None,
                        Some("starting the stream over"),
                    )
                    .await?;
                }
            }
        }
    }

    /// Waits before the next try: the server's `Retry-After`, else the next backoff
    /// delay; gives up when the backoff is spent. `announce` says it to the reporter.
    async fn retry_wait(
        &self,
        backoff: &mut impl Iterator<Item = Duration>,
        attempts: u32,
        error: DownloadError,
        after: Option<Duration>,
        announce: Option<&str>,
    ) -> Result<(), DownloadError> {
        let Some(delay) = after.or_else(|| backoff.next()) else {
            return Err(DownloadError::RetriesExhausted {
                url: self.url().to_owned(),
                attempts,
                last: error.to_string(),
            });
        };
        match announce {
            Some(what) => self
                .reporter
                .message(&format!("{error}; {what} in {delay:.1?}")),
            None => tracing::debug!(url = self.url(), error = %error, ?delay, "retrying"),
        }
        self.pause(delay).await
    }

    /// fsync, hash check, rename into place.
    async fn finish(
        &self,
        t: Transfer,
        size: u64,
        resumed: u64,
        etag: Option<String>,
        resumable: bool,
        state_path: &Path,
    ) -> Result<DownloadOutcome, DownloadError> {
        let Transfer {
            file,
            part_path,
            hasher,
            ..
        } = t;
        hasher.advance(size);
        let (part, f) = (part_path.clone(), Arc::clone(&file));
        let hashed = tokio::task::spawn_blocking(move || {
            f.sync_all()?;
            // the file may have been reserved larger than what a lying server sent
            if f.metadata()?.len() != size {
                f.set_len(size)?;
                f.sync_all()?;
            }
            hasher.finish()
        })
        .await
        .map_err(|e| DownloadError::Invalid(format!("the hasher task failed: {e}")))?
        .map_err(|e| self.io("cannot hash", &part, e))?;
        let sha256 = match hashed {
            Some((_, n)) if n != size => {
                return Err(DownloadError::Invalid(format!(
                    "hashed {n} of {size} bytes"
                )));
            }
            Some((sha, _)) => Some(sha),
            None => None,
        };
        let verified = match (&self.request.sha256, &sha256) {
            (Some(expected), Some(actual)) if !expected.eq_ignore_ascii_case(actual) => {
                drop(file);
                self.discard_partial();
                return Err(DownloadError::Sha256Mismatch {
                    path: self.request.dest.clone(),
                    expected: expected.to_ascii_lowercase(),
                    actual: actual.clone(),
                });
            }
            (Some(_), _) => true,
            (None, _) => false,
        };
        drop(file);
        let dest = self.request.dest.clone();
        let (part2, dest2) = (part_path.clone(), dest.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            fs_err::rename(&part2, &dest2)?;
            if let Some(parent) = dest2.parent() {
                fs_err::File::open(parent)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| DownloadError::Invalid(format!("the rename task failed: {e}")))?
        .map_err(|e| self.io("cannot move into place", &dest, e))?;
        let _ = fs_err::remove_file(state_path);
        Ok(DownloadOutcome {
            path: dest,
            size,
            sha256,
            verified,
            etag,
            resumed_bytes: resumed,
            resumable,
        })
    }
}

fn cancelled() -> PartError {
    PartError::Failure(Failure::Fatal(DownloadError::Cancelled))
}

fn fatal(e: DownloadError) -> PartError {
    PartError::Failure(Failure::Fatal(e))
}

/// What every connection of one download shares.
struct Transfer {
    file: Arc<File>,
    part_path: PathBuf,
    /// Byte ranges written (not yet necessarily fsynced).
    done: Mutex<RangeSet>,
    bytes_done: AtomicU64,
    hasher: Hasher,
    sched: Mutex<Sched>,
    etag: Option<String>,
    /// The resume state's fixed fields.
    state: ResumeState,
    /// Byte ranges fsynced.
    durable: Mutex<RangeSet>,
}

impl Transfer {
    fn sched(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn done(&self) -> MutexGuard<'_, RangeSet> {
        self.done.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the buffer at `at` (off the async threads) and records it.
    async fn flush(&self, seg: &Segment, at: u64, buf: &mut BytesMut) -> Result<(), DownloadError> {
        if buf.is_empty() {
            return Ok(());
        }
        let data = buf.split().freeze();
        let len = data.len() as u64;
        let file = Arc::clone(&self.file);
        let written = tokio::task::spawn_blocking(move || file.write_all_at(&data, at))
            .await
            .map_err(|e| DownloadError::Invalid(format!("the write task failed: {e}")))?;
        if let Err(e) = written {
            let mut s = seg.lock();
            s.reserved = s.written;
            return Err(DownloadError::io(self.part_path.display().to_string(), e));
        }
        seg.lock().written = at + len;
        let prefix = {
            let mut d = self.done();
            d.insert(at, at + len);
            d.contiguous_prefix()
        };
        self.bytes_done.fetch_add(len, Ordering::Relaxed);
        self.hasher.advance(prefix);
        Ok(())
    }

    /// Records what the partial file holds. Without `fsync`, a cheap write that a
    /// killed process does not lose (its data is in the page cache); with it, the
    /// data is fsynced first, and what it held then becomes the part trusted after a
    /// machine crash. Either way the state never claims a byte not yet written.
    async fn checkpoint(&self, state_path: &Path, fsync: bool) -> std::io::Result<()> {
        if state_path.as_os_str().is_empty() {
            return Ok(());
        }
        let mut state = self.state.clone();
        state.done = self.done().clone();
        let file = Arc::clone(&self.file);
        let path = state_path.to_path_buf();
        if fsync {
            let written = state.done.clone();
            let durable = tokio::task::spawn_blocking(move || file.sync_data().map(|()| written))
                .await
                .map_err(std::io::Error::other)??;
            *self.durable.lock().unwrap_or_else(PoisonError::into_inner) = durable;
        }
        state.durable = self
            .durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tokio::task::spawn_blocking(move || state.save(&path, fsync))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// A range being fetched by one connection. `reserved` runs ahead of `written` by
/// what is buffered; another connection may lower `end` to take over the rest.
struct Segment {
    state: Mutex<SegState>,
}

struct SegState {
    reserved: u64,
    written: u64,
    end: u64,
}

impl Segment {
    fn new(start: u64, end: u64) -> Self {
        Self {
            state: Mutex::new(SegState {
                reserved: start,
                written: start,
                end,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SegState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands out parts in file order (so the hasher keeps up), then splits the
/// largest remainder of a running part when the queue is empty.
struct Sched {
    queue: VecDeque<(u64, u64)>,
    active: Vec<Arc<Segment>>,
    min_split: u64,
}

impl Sched {
    fn new(done: &RangeSet, total: u64, part: u64) -> Self {
        let mut queue = VecDeque::new();
        for (mut s, e) in done.missing(total) {
            while s < e {
                let end = (s + part).min(e);
                queue.push_back((s, end));
                s = end;
            }
        }
        Self {
            queue,
            active: Vec::new(),
            min_split: (part / 4).max(256 << 10),
        }
    }

    fn empty() -> Self {
        Self {
            queue: VecDeque::new(),
            active: Vec::new(),
            min_split: u64::MAX,
        }
    }

    fn next(&mut self) -> Option<Arc<Segment>> {
        if let Some((s, e)) = self.queue.pop_front() {
            let seg = Arc::new(Segment::new(s, e));
            self.active.push(Arc::clone(&seg));
            return Some(seg);
        }
        // split the running part with the most left
        let (victim, left) = self
            .active
            .iter()
            .map(|seg| {
                let s = seg.lock();
                (Arc::clone(seg), s.end.saturating_sub(s.reserved))
            })
            .max_by_key(|(_, left)| *left)?;
        if left < 2 * self.min_split {
            return None;
        }
        let mut s = victim.lock();
        let mid = s.reserved + (s.end - s.reserved) / 2;
        let seg = Arc::new(Segment::new(mid, s.end));
        s.end = mid;
        drop(s);
        self.active.push(Arc::clone(&seg));
        Some(seg)
    }

    fn finish(&mut self, seg: &Arc<Segment>) {
        self.active.retain(|s| !Arc::ptr_eq(s, seg));
    }
}

/// A moving average of the download speed.
struct Speed {
    last_bytes: u64,
    last_at: Instant,
    rate: f64,
}

impl Speed {
    fn new(bytes: u64) -> Self {
        Self {
            last_bytes: bytes,
            last_at: Instant::now(),
            rate: 0.0,
        }
    }

    fn sample(&mut self, bytes: u64, total: Option<u64>) -> Progress {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64();
        if dt > 0.05 {
            #[allow(clippy::cast_precision_loss)]
            let instant = bytes.saturating_sub(self.last_bytes) as f64 / dt;
            self.rate = if self.rate == 0.0 {
                instant
            } else {
                0.7 * self.rate + 0.3 * instant
            };
            self.last_bytes = bytes;
            self.last_at = now;
        }
        #[allow(clippy::cast_precision_loss)]
        let eta = total
            .and_then(|t| (self.rate > 0.0).then(|| t.saturating_sub(bytes) as f64 / self.rate));
        Progress {
            bytes_done: bytes,
            bytes_total: total,
            bytes_per_sec: self.rate,
            eta_secs: eta,
        }
    }
}
