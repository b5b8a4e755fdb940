//! The engine against a real server on loopback, faults included.
#![allow(clippy::unwrap_used)]

mod faults;
mod resume;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use download::{
    DownloadConfig, DownloadError, DownloadOutcome, DownloadRequest, Downloader, Progress, Reporter,
};
use hf_test_server::{HfServer, Repo, RepoFile, test_bytes};
use tokio_util::sync::CancellationToken;

pub const REPO: &str = "org/model";
pub const FILE: &str = "model.gguf";

pub fn fast_config() -> DownloadConfig {
    DownloadConfig {
        connections: 4,
        min_part_size: 256 << 10,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        stall_timeout: Duration::from_millis(500),
        checkpoint_interval: Duration::from_millis(100),
        progress_interval: Duration::from_millis(50),
        ..DownloadConfig::default()
    }
}

pub async fn server_with(len: usize, cdn: bool) -> (HfServer, RepoFile) {
    let file = RepoFile::lfs(FILE, test_bytes(len, 7));
    let server = HfServer::start(
        vec![Repo::new(REPO, vec![file.clone()])],
        Some("secret"),
        cdn,
    )
    .await;
    (server, file)
}

#[derive(Debug)]
pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub dest: PathBuf,
    pub work: PathBuf,
}

pub fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("models/m/model.gguf");
    let work = tmp.path().join("downloads");
    Dirs {
        dest,
        work,
        _tmp: tmp,
    }
}

pub fn request(server: &HfServer, d: &Dirs, sha256: Option<String>) -> DownloadRequest {
    DownloadRequest {
        url: server.resolve_url(REPO, "main", FILE).parse().unwrap(),
        dest: d.dest.clone(),
        work_dir: d.work.clone(),
        sha256,
        size: None,
        credential: None,
    }
}

/// Records what a download reports.
#[derive(Debug, Default)]
pub struct Recorder {
    pub progress: Mutex<Vec<Progress>>,
    pub messages: Mutex<Vec<String>>,
}

impl Reporter for Recorder {
    fn progress(&self, p: &Progress) {
        self.progress.lock().unwrap().push(*p);
    }
    fn message(&self, m: &str) {
        self.messages.lock().unwrap().push(m.to_owned());
    }
}

impl Recorder {
    pub fn said(&self, words: &str) -> bool {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains(words))
    }
}

pub async fn fetch(
    config: DownloadConfig,
    req: DownloadRequest,
) -> (Result<DownloadOutcome, DownloadError>, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let dl = Downloader::new(config).unwrap();
    let r = dl
        .download(req, rec.clone(), CancellationToken::new())
        .await;
    (r, rec)
}

pub fn leftovers(work: &Path) -> Vec<String> {
    match fs_err::read_dir(work) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
