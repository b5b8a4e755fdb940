//! The audit log: one JSON line per mutating request in `home/audit.log`: when,
//! from where, who (a short hash of the bearer token, never the token), what
//! operation on what target, and the outcome. Each line is appended with one write
//! and synced, so a crash loses at most the request in flight; past
//! [`MAX_BYTES`] the file is rotated (`audit.log.1` .. `audit.log.3`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The size at which the log is rotated.
pub const MAX_BYTES: u64 = 16 << 20;
/// Rotated files kept.
const KEEP: usize = 3;

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// When the request was answered.
    pub time: DateTime<Utc>,
    /// The client's address.
    pub client: Option<String>,
    /// `token:` and the first 12 hex digits of the token's sha256, or `anonymous`.
    pub caller: String,
    /// The operation (`model_download`, `worker_spawn`, `job_cancel`, ...).
    pub operation: String,
    /// What it acted on: a model reference or id, a worker or job id, a path.
    pub target: Option<String>,
    /// The HTTP status.
    pub status: u16,
    /// `ok`, or `error` with the status.
    pub outcome: String,
}

/// The log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    lock: Mutex<()>,
}

impl AuditLog {
    /// The log of `home`.
    pub fn new(home: &Path) -> Self {
        Self::with_limit(home, MAX_BYTES)
    }

    /// The log of `home`, rotated at `max_bytes`.
    pub fn with_limit(home: &Path, max_bytes: u64) -> Self {
        Self {
            path: home.join("audit.log"),
            max_bytes,
            lock: Mutex::new(()),
        }
    }

    /// Appends one entry; a failure is logged, never fatal to the request.
    pub fn append(&self, entry: &AuditEntry) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let write = || -> std::io::Result<()> {
            if fs_err::metadata(&self.path).is_ok_and(|m| m.len() >= self.max_bytes) {
                self.rotate()?;
            }
            let mut line = serde_json::to_vec(entry)?;
            line.push(b'\n');
            let mut f = fs_err::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            f.write_all(&line)?;
            f.sync_data()
        };
        if let Err(e) = write() {
            tracing::error!(path = %self.path.display(), "cannot write the audit log: {e}");
        }
    }

    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = fs_err::remove_file(numbered(KEEP));
        for n in (1..KEEP).rev() {
            if numbered(n).exists() {
                fs_err::rename(numbered(n), numbered(n + 1))?;
            }
        }
        fs_err::rename(&self.path, numbered(1))
    }

    /// Entries at or after `since`, oldest first, the rotated files included; at most
    /// the last `limit`.
    pub fn read(&self, since: Option<DateTime<Utc>>, limit: usize) -> Vec<AuditEntry> {
        let mut files: Vec<PathBuf> = (1..=KEEP)
            .rev()
            .map(|n| PathBuf::from(format!("{}.{n}", self.path.display())))
            .collect();
        files.push(self.path.clone());
        let mut out = Vec::new();
        for f in files {
            let Ok(text) = fs_err::read_to_string(&f) else {
                continue;
            };
            out.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok())
                    .filter(|e| since.is_none_or(|s| e.time >= s)),
            );
        }
        let skip = out.len().saturating_sub(limit);
        out.split_off(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            time: Utc::now(),
            client: None,
            caller: "anonymous".into(),
            operation: "model_delete".into(),
            target: Some(format!("m{i}")),
            status: 200,
            outcome: "ok".into(),
        }
    }

    #[test]
    fn rotates_by_size_and_reads_across_files() {
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = AuditLog::with_limit(home.path(), 400);
        for i in 0..40 {
            log.append(&entry(i));
        }
        assert!(home.path().join("audit.log.1").exists());
        assert!(home.path().join("audit.log.3").exists());
        assert!(!home.path().join("audit.log.4").exists());
        let all = log.read(None, usize::MAX);
        // The oldest rotated away; what is left is in order and ends with the last.
        assert!(all.len() < 40 && all.len() > 4, "{}", all.len());
        let targets: Vec<usize> = all
            .iter()
            .filter_map(|e| e.target.as_deref()?.strip_prefix('m')?.parse().ok())
            .collect();
        assert!(targets.windows(2).all(|w| w[1] == w[0] + 1), "{targets:?}");
        assert_eq!(targets.last(), Some(&39));
        assert_eq!(log.read(None, 2).len(), 2);
    }
}
