//! A bandwidth cap shared by every download of a [`crate::Downloader`].

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket in bytes per second, with one second of burst.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A cap of `bytes_per_sec`.
    pub fn new(bytes_per_sec: u64) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let rate = bytes_per_sec.max(1) as f64;
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `n` bytes from the bucket, waiting as long as the cap requires.
    pub async fn acquire(&self, n: usize) {
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        let wait = {
            let mut s = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.rate);
            s.1 = now;
            s.0 -= n;
            if s.0 < 0.0 { -s.0 / self.rate } else { 0.0 }
        };
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}
