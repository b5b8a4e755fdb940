//! Who owns the end: one token cancelled when the hive begins to stop, and one
//! tracker of every background task the hive starts (jobs, schedules, the
//! re-adoption's hashing), so that stopping waits for them instead of polling; and
//! one token cancelled when the grace given to open streams is over.
//!
//! A leaf: it knows nothing of the rest of the hive.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The hive's shutdown: cheap to clone, every clone the same.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
    grace_over: CancellationToken,
}

impl Shutdown {
    /// Runs `task` in the background, tracked: [`Shutdown::wait`] waits for it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// The token cancelled when the hive begins to stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// A token cancelled with the hive's, or on its own.
    pub fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Whether the hive is stopping.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the hive begins to stop.
    pub async fn stopping(&self) {
        self.token.cancelled().await;
    }

    /// Begins to stop: every task sees its token cancelled; no new task is
    /// expected after this.
    pub fn begin(&self) {
        self.token.cancel();
        self.tracker.close();
    }

    /// Ends the grace: every stream still open ends with an error event that says
    /// the hive is stopping.
    pub fn end_grace(&self) {
        self.grace_over.cancel();
    }

    /// The token cancelled when the grace is over: an open stream watches it.
    pub fn grace_over(&self) -> &CancellationToken {
        &self.grace_over
    }

    /// Waits, at most `limit`, for every tracked task to end; whether they all did.
    pub async fn wait(&self, limit: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Shutdown;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn stopping_waits_for_the_tracked_tasks_and_no_longer() {
        let s = Shutdown::default();
        let token = s.child_token();
        s.spawn(async move { token.cancelled().await });
        let forever = s.clone();
        assert!(!s.is_stopping());
        s.begin();
        assert!(
            s.wait(Duration::from_secs(1)).await,
            "the task saw the token and ended"
        );
        forever.spawn(std::future::pending::<()>());
        assert!(
            !s.wait(Duration::from_secs(5)).await,
            "a task that never ends is waited for 5 s"
        );
    }
}
