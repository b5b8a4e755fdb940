//! Operations, one module per resource, each checked before its job starts, so a bad
//! request is a 4xx, never a failed job. Imports run one way: `dispatch` (the jobs
//! API's operations) uses the others; `workers` uses `models` (a spawn pulls its
//! model) and `binaries` nothing of theirs; `presets` uses `workers`' argument check.

pub mod binaries;
pub mod dispatch;
pub mod models;
pub mod presets;
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
