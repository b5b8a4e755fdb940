//! The resume state beside a partial file: what is on disk, of which remote file,
//! and how sure that is.
//!
//! Two records of the bytes written are kept. `done` is written often and cheaply
//! (no fsync): a killed process loses nothing of what it wrote, since its writes are
//! in the page cache, so a restart on the same boot trusts it. `durable` is what was
//! on disk at the last fsync: after a machine crash (another boot), only that is
//! trusted, and the rest is fetched again.

use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::ranges::RangeSet;

/// The resume state of one partial file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The format of this file.
    pub version: u32,
    /// The URL first asked for.
    pub url: String,
    /// The size of the remote file.
    pub total: u64,
    /// Its ETag, if the server gave one.
    pub etag: Option<String>,
    /// The byte ranges written. Once loaded: the ranges that can be trusted.
    pub done: RangeSet,
    /// The byte ranges fsynced: what survives a machine crash.
    #[serde(default)]
    pub durable: RangeSet,
    /// The boot the state was written in (Linux's `boot_id`), if known.
    #[serde(default)]
    pub boot_id: Option<String>,
}

/// The current format.
pub const STATE_VERSION: u32 = 2;
/// The format whose `done` was only ever written after an fsync.
const FSYNCED_ONLY: u32 = 1;

impl ResumeState {
    /// The state at `path`, with `done` narrowed to what can be trusted now: all
    /// that was written when this is the boot that wrote it, else only what was
    /// fsynced. `None` when absent, unreadable or of an unknown version.
    pub fn load(path: &Path) -> Option<Self> {
        let bytes = fs_err::read(path).ok()?;
        let mut s: Self = serde_json::from_slice(&bytes).ok()?;
        match s.version {
            FSYNCED_ONLY => s.durable = s.done.clone(),
            STATE_VERSION => {
                let same_boot = s.boot_id.is_some() && s.boot_id.as_deref() == boot_id();
                if !same_boot {
                    s.done = s.durable.clone();
                }
            }
            _ => return None,
        }
        (s.done.is_within(s.total) && s.durable.is_within(s.total)).then_some(s)
    }

    /// Writes the state atomically (temporary file, rename); with `fsync`, also
    /// flushed to the disk, so that it survives a machine crash.
    pub fn save(&self, path: &Path, fsync: bool) -> std::io::Result<()> {
        let tmp = path.with_extension("state.tmp");
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        if fsync {
            f.sync_all()?;
        }
        drop(f);
        fs_err::rename(&tmp, path)
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), where the system has one.
pub fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        fs_err::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(r: &[(u64, u64)]) -> RangeSet {
        let mut set = RangeSet::default();
        for &(a, b) in r {
            set.insert(a, b);
        }
        set
    }

    fn saved(version: u32, boot: Option<&str>) -> Option<ResumeState> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.state");
        let s = ResumeState {
            version,
            url: "http://x/f".into(),
            total: 100,
            etag: None,
            done: ranges(&[(0, 80)]),
            durable: ranges(&[(0, 30)]),
            boot_id: boot.map(str::to_owned),
        };
        s.save(&path, false).unwrap();
        ResumeState::load(&path)
    }

    #[test]
    fn the_same_boot_trusts_what_was_written() {
        let Some(boot) = boot_id() else { return };
        let s = saved(STATE_VERSION, Some(boot)).unwrap();
        assert_eq!(s.done.covered(), 80);
    }

    #[test]
    fn another_boot_trusts_only_what_was_fsynced() {
        let s = saved(STATE_VERSION, Some("another-boot")).unwrap();
        assert_eq!(s.done.covered(), 30);
        let s = saved(STATE_VERSION, None).unwrap();
        assert_eq!(s.done.covered(), 30);
    }

    #[test]
    fn the_first_format_was_fsynced_and_unknown_ones_are_ignored() {
        let s = saved(FSYNCED_ONLY, None).unwrap();
        assert_eq!(s.done.covered(), 80);
        assert!(saved(7, None).is_none());
    }
}
