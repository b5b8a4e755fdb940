//! Operations, one module per resource, each checked before its job starts, so a bad
//! request is a 4xx, never a failed job. Imports run one way: `dispatch` (the jobs
//! API's operations) uses the others; `workers` uses `models` (a spawn pulls its
//! model) and `binaries` nothing of theirs; `presets` uses `workers`' argument check
//! and `draft` (a draft model's checks), which `workers` uses at a spawn too;
//! `scan` (adopting other tools' models) uses nothing of theirs; `storage` (the
//! disk's limits) uses nothing of theirs, and `models` its room check before a pull;
//! `gc` uses `storage`, and `plan` (the fit check) `storage` and `workers`; `repair`
//! (a damaged catalog) uses nothing of theirs.

pub mod admission;
pub mod binaries;
pub mod derived;
pub mod dispatch;
pub mod draft;
pub mod gc;
pub mod models;
pub mod plan;
pub mod presets;
pub mod projector;
pub mod repair;
pub mod scan;
pub mod storage;
pub mod workers;

use crate::error::ApiError;

/// Runs blocking catalog work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

pub(crate) fn err(e: ApiError) -> (&'static str, String) {
    let (code, message) = e.parts();
    (code, message)
}

/// A job as the reporter of a provisioning: narration, progress and steps.
pub(crate) struct JobNarrator(pub std::sync::Arc<crate::jobs::Job>);

impl provisioning::ProvisionReporter for JobNarrator {
    fn narrate(&self, action: &str, message: &str) {
        self.0.narrate(action, message);
    }

    fn progress(&self, done: u64, total: Option<u64>, per_sec: f64, eta: Option<f64>) {
        self.0.progress(done, total, per_sec, eta);
    }

    fn step(&self, done: u64, total: Option<u64>, unit: &str, current: &str) {
        self.0.step(done, total, unit, current);
    }
}

/// A sha256 given with a request must be 64 hex digits.
pub(crate) fn check_sha256(sha: Option<&str>) -> Result<(), ApiError> {
    match sha {
        Some(s) if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err(ApiError::bad_request(
                "invalid_sha256",
                format!("sha256 must be 64 hex digits, got {s:?}"),
            ))
        }
        _ => Ok(()),
    }
}
