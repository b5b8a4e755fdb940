//! Cancel, crash and resume.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use download::{DownloadConfig, DownloadError, Downloader, ResumeState};
use hf_test_server::{Repo, RepoFile, test_bytes};
use tokio_util::sync::CancellationToken;

use crate::{FILE, REPO, Recorder, dirs, fast_config, fetch, request, server_with};

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a download, cancels it once the server sent `after` bytes, and returns
/// the error it ended with.
async fn cancel_after(
    server: &hf_test_server::HfServer,
    d: &crate::Dirs,
    sha256: Option<String>,
    after: u64,
) -> DownloadError {
    let dl = Downloader::new(fast_config()).unwrap();
    let cancel = CancellationToken::new();
    let task = {
        let (req, cancel) = (request(server, d, sha256), cancel.clone());
        tokio::spawn(async move {
            dl.download(req, Arc::new(Recorder::default()), cancel)
                .await
        })
    };
    wait_until("some bytes", || server.bytes_sent() > after).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err()
}

#[tokio::test]
async fn cancel_keeps_the_partial_and_resume_fetches_the_rest() {
    let (server, file) = server_with(8 << 20, false).await;
    server
        .faults()
        .throttle_bytes_per_sec
        .store(2 << 20, Ordering::SeqCst);
    let d = dirs();
    let err = cancel_after(&server, &d, Some(file.sha256()), 2 << 20).await;
    assert!(matches!(err, DownloadError::Cancelled), "{err}");
    // the last caller to cancel returns once the partial and its state are saved
    let (part, state) = Downloader::partial_paths(&request(&server, &d, None));
    assert!(part.exists());
    let kept = ResumeState::load(&state).unwrap().done.covered();

    server
        .faults()
        .throttle_bytes_per_sec
        .store(0, Ordering::SeqCst);
    let sent_before = server.bytes_sent();
    let (r, rec) = fetch(fast_config(), request(&server, &d, Some(file.sha256()))).await;
    let out = r.unwrap();
    assert!(out.verified);
    assert_eq!(out.resumed_bytes, kept);
    assert!(rec.said("resuming"), "{:?}", rec.messages.lock().unwrap());
    let refetched = server.bytes_sent() - sent_before;
    // what was kept is not fetched again; the slack is what was in flight when a
    // part was split between connections (sent by the server, dropped by us)
    assert!(
        refetched <= (8 << 20) - kept + (1 << 20),
        "fetched {refetched}, {kept} were kept"
    );
}

#[tokio::test]
async fn a_changed_remote_file_starts_over() {
    let (server, file) = server_with(4 << 20, false).await;
    server
        .faults()
        .throttle_bytes_per_sec
        .store(2 << 20, Ordering::SeqCst);
    let d = dirs();
    let cancel = CancellationToken::new();
    let dl = Downloader::new(fast_config()).unwrap();
    let task = {
        let (dl, req, cancel) = (dl.clone(), request(&server, &d, None), cancel.clone());
        tokio::spawn(async move {
            dl.download(req, Arc::new(Recorder::default()), cancel)
                .await
        })
    };
    wait_until("some bytes", || server.bytes_sent() > 1 << 20).await;
    cancel.cancel();
    let _ = task.await;
    let (_, state) = Downloader::partial_paths(&request(&server, &d, None));
    assert!(ResumeState::load(&state).is_some());

    // a new commit replaces the file
    let new = RepoFile::lfs(FILE, test_bytes(4 << 20, 99));
    server.add_repo(Repo::new(REPO, vec![new.clone()]));
    server
        .faults()
        .throttle_bytes_per_sec
        .store(0, Ordering::SeqCst);
    let (r, rec) = fetch(fast_config(), request(&server, &d, Some(new.sha256()))).await;
    let out = r.unwrap();
    assert_eq!(out.sha256, Some(new.sha256()));
    assert_ne!(out.sha256, Some(file.sha256()));
    assert_eq!(out.resumed_bytes, 0);
    assert!(rec.said("changed"), "{:?}", rec.messages.lock().unwrap());
}

const CHILD_URL: &str = "DOWNLOAD_TEST_CHILD_URL";
const CHILD_DEST: &str = "DOWNLOAD_TEST_CHILD_DEST";
const CHILD_WORK: &str = "DOWNLOAD_TEST_CHILD_WORK";

/// The child's side of `kill_9_at_random_moments`: downloads, then exits.
#[tokio::test]
#[ignore = "run by kill_9_at_random_moments as a child process"]
async fn child_download() {
    let (Ok(url), Ok(dest), Ok(work)) = (
        std::env::var(CHILD_URL),
        std::env::var(CHILD_DEST),
        std::env::var(CHILD_WORK),
    ) else {
        return;
    };
    let req = download::DownloadRequest {
        url: url.parse().unwrap(),
        dest: dest.into(),
        work_dir: work.into(),
        sha256: None,
        size: None,
        credential: None,
    };
    let config = DownloadConfig {
        state_interval: Duration::from_millis(50),
        checkpoint_interval: Duration::from_secs(1),
        // a loaded machine may leave a connection quiet for a while: not a fault
        stall_timeout: Duration::from_secs(5),
        ..fast_config()
    };
    fetch(config, req).await.0.unwrap();
}

/// A pull (4 connections at 4 MiB/s each) killed -9 at 20 random points: each
/// restart resumes from what the killed one wrote, re-fetching at most 5 % of the
/// file, and the last ends with the right sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_20_random_points_loses_at_most_5_percent_each() {
    use rand::Rng as _;
    let size = 96usize << 20;
    let (server, file) = server_with(size, false).await;
    server
        .faults()
        .throttle_bytes_per_sec
        .store(4 << 20, Ordering::SeqCst);
    let d = dirs();
    let (_, state) = Downloader::partial_paths(&request(&server, &d, None));
    let spawn = || {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "resume::child_download",
                "--nocapture",
            ])
            .env(CHILD_URL, server.resolve_url(REPO, "main", FILE))
            .env(CHILD_DEST, &d.dest)
            .env(CHILD_WORK, &d.work)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let kept = || ResumeState::load(&state).map_or(0, |s| s.done.covered());
    let mut rng = rand::rng();
    let mut losses = Vec::new();
    for _ in 0..20 {
        let (sent_before, kept_before) = (server.bytes_sent(), kept());
        // somewhere between 1 % and 4 % of the file further on
        let further = rng.random_range(size as u64 / 100..size as u64 / 25);
        let mut child = spawn();
        wait_until("progress", || {
            server.bytes_sent() >= sent_before + further || child.try_wait().unwrap().is_some()
        })
        .await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the download finished before its kill"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let sent = server.bytes_sent() - sent_before;
        let gained = kept() - kept_before;
        losses.push(sent.saturating_sub(gained));
    }
    server
        .faults()
        .throttle_bytes_per_sec
        .store(0, Ordering::SeqCst);
    let mut last = spawn();
    wait_until("the last run to finish", || {
        last.try_wait().unwrap().is_some()
    })
    .await;
    assert!(last.wait().unwrap().success());
    assert_eq!(sha256_of(&d.dest), file.sha256());
    let worst = losses.iter().copied().max().unwrap_or(0);
    eprintln!("bytes re-fetched after each kill: {losses:?}");
    assert!(
        worst <= size as u64 / 20,
        "a kill lost more than 5 % of {size}: {losses:?}"
    );
}

fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(fs_err::read(path).unwrap()))
}

#[tokio::test]
async fn a_full_disk_is_refused_before_downloading() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    fs_err::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("RBEE_REQUIRE_ROOT_TESTS").is_none(),
            "cannot mount a tmpfs, and RBEE_REQUIRE_ROOT_TESTS is set"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let (server, _) = server_with(8 << 20, false).await;
    let d = crate::Dirs {
        dest: mount.join("models/m/model.gguf"),
        work: mount.join("downloads"),
        _tmp: tempfile::tempdir().unwrap(),
    };
    let (r, _) = fetch(fast_config(), request(&server, &d, None)).await;
    let err = r.unwrap_err();
    let msg = err.to_string();
    let _ = Command::new("umount").arg(&mount).status();
    assert!(
        matches!(err, DownloadError::InsufficientSpace { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("needs 8.0 MiB") && msg.contains("free"),
        "{msg}"
    );
    assert!(
        server.bytes_sent() <= 1,
        "nothing downloaded: {}",
        server.bytes_sent()
    );
}

#[tokio::test]
async fn a_cancelled_stream_without_ranges_keeps_nothing() {
    let (server, file) = server_with(8 << 20, false).await;
    server.faults().mirror.store(true, Ordering::SeqCst);
    server
        .faults()
        .throttle_bytes_per_sec
        .store(2 << 20, Ordering::SeqCst);
    let d = dirs();
    let err = cancel_after(&server, &d, Some(file.sha256()), 1 << 20).await;
    assert!(matches!(err, DownloadError::Cancelled), "{err}");
    // a server that cannot resume: the partial would only be fetched again whole
    let (part, state) = Downloader::partial_paths(&request(&server, &d, None));
    assert!(!part.exists() && !state.exists());
    assert!(!d.dest.exists());
}
