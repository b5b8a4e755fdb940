//! Batch operations: one parent job that starts one child job per item and waits for
//! them all. The parent's narration names each child's job id; a failed or refused
//! item does not stop the others; cancelling the parent cancels every child. Download
//! concurrency stays bounded by the daemon's `--max-concurrent-downloads`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;

use crate::error::ApiError;
use crate::jobs::Job;
use crate::state::SharedState;

/// The most items one batch takes.
pub const MAX_ITEMS: usize = 100;

/// Starting one item: a future that checks it and starts its job (run in order, by
/// the parent job).
pub type Started = Pin<Box<dyn Future<Output = Result<Arc<Job>, ApiError>> + Send>>;
/// A child job, or why it was refused (code, message).
type Child = Result<Arc<Job>, (&'static str, String)>;

/// Checks the batch's size and starts the parent job over `items` (label, how to
/// start it).
pub fn start(
    state: &SharedState,
    operation: &'static str,
    items: Vec<(String, Started)>,
) -> Result<Arc<Job>, ApiError> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(
            "invalid_batch",
            format!("a batch takes 1 to {MAX_ITEMS} items, got {}", items.len()),
        ));
    }
    let tasks = state.shutdown.clone();
    Ok(state.jobs.spawn(operation, move |job| async move {
        let mut children: Vec<(String, Child)> = Vec::new();
        for (label, started) in items {
            let child = started.await.map_err(ApiError::parts);
            match &child {
                Ok(c) => job.narrate("child", &format!("{label}: job {}", c.info().job_id)),
                Err((_, message)) => job.narrate("child", &format!("{label}: refused: {message}")),
            }
            children.push((label, child));
        }
        // Cancelling the parent cancels every child.
        let tokens: Vec<_> = children
            .iter()
            .filter_map(|(_, c)| c.as_ref().ok().map(|c| c.cancel.clone()))
            .collect();
        let parent = job.cancel.clone();
        let watcher = tasks.spawn(async move {
            parent.cancelled().await;
            for t in tokens {
                t.cancel();
            }
        });
        let mut outcomes = Vec::new();
        let mut failed = 0;
        for (label, child) in children {
            let outcome = match child {
                Ok(c) => {
                    let info = c.finished().await;
                    let state = info.state.name();
                    job.narrate("child", &format!("{label}: {state}"));
                    let (key, payload) = if info.state == crate::jobs::JobState::Completed {
                        ("result", info.result)
                    } else {
                        failed += 1;
                        ("error", info.error)
                    };
                    json!({"item": label, "job_id": info.job_id, "state": state, key: payload})
                }
                Err((code, message)) => {
                    failed += 1;
                    json!({"item": label, "state": "refused", "error": {"code": code, "message": message}})
                }
            };
            outcomes.push(outcome);
        }
        watcher.abort();
        Ok(json!({"items": outcomes, "failed": failed}))
    }))
}
