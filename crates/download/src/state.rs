//! The resume state beside a partial file: what is on disk, of which remote file.

use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ranges::RangeSet;

/// Written after the partial file's data is fsynced, so it never claims bytes that
/// a crash could lose.
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
    /// The byte ranges on disk.
    pub done: RangeSet,
}

pub const STATE_VERSION: u32 = 1;

impl ResumeState {
    /// The state at `path`; `None` when absent, unreadable or of another version.
    pub fn load(path: &Path) -> Option<Self> {
        let bytes = fs_err::read(path).ok()?;
        let s: Self = serde_json::from_slice(&bytes).ok()?;
        (s.version == STATE_VERSION && s.done.is_within(s.total)).then_some(s)
    }

    /// Writes the state atomically: temporary file, fsync, rename.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("state.tmp");
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        drop(f);
        fs_err::rename(&tmp, path)
    }
}
