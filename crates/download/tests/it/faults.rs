//! Downloads that go right, and every way the server can make them go wrong.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use download::{DownloadConfig, DownloadError, Downloader};
use hf_test_server::{HfServer, Repo, RepoFile};
use tokio_util::sync::CancellationToken;

use crate::{FILE, REPO, Recorder, dirs, fast_config, fetch, leftovers, request, server_with};

#[tokio::test]
async fn parallel_download_verifies_and_fetches_each_byte_once() {
    let (server, file) = server_with(5 << 20, false).await;
    let d = dirs();
    let (r, rec) = fetch(fast_config(), request(&server, &d, Some(file.sha256()))).await;
    let out = r.unwrap();
    assert_eq!(out.size, 5 << 20);
    assert_eq!(out.sha256, Some(file.sha256()));
    assert!(out.verified && out.resumable);
    assert_eq!(fs_err::read(&d.dest).unwrap(), file.data);
    // at most 1 byte for the probe, then every byte once
    assert!(
        (5 << 20..=(5 << 20) + 1).contains(&server.bytes_sent()),
        "{}",
        server.bytes_sent()
    );
    assert!(
        server.state.data_requests.load(Ordering::SeqCst) > 4,
        "split into parts"
    );
    assert!(leftovers(&d.work).is_empty(), "{:?}", leftovers(&d.work));
    let last = *rec.progress.lock().unwrap().last().unwrap();
    assert_eq!(
        (last.bytes_done, last.bytes_total),
        (5 << 20, Some(5 << 20))
    );
}

#[tokio::test]
async fn no_hash_known_computes_ours() {
    // a file outside LFS: the hub gives no sha256 for it
    let file = RepoFile::plain(FILE, hf_test_server::test_bytes(300_000, 3));
    let server = HfServer::start(vec![Repo::new(REPO, vec![file.clone()])], None, false).await;
    let d = dirs();
    let out = fetch(fast_config(), request(&server, &d, None))
        .await
        .0
        .unwrap();
    assert_eq!(out.sha256, Some(file.sha256()));
    assert!(!out.verified);
}

#[tokio::test]
async fn the_hubs_x_linked_etag_is_checked() {
    let (server, file) = server_with(1 << 20, false).await;
    let d = dirs();
    let out = fetch(fast_config(), request(&server, &d, None))
        .await
        .0
        .unwrap();
    assert!(out.verified, "checked against X-Linked-Etag");
    server.faults().corrupt_offset.store(1000, Ordering::SeqCst);
    let d = dirs();
    let err = fetch(fast_config(), request(&server, &d, None))
        .await
        .0
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::Sha256Mismatch { ref expected, .. } if *expected == file.sha256()),
        "{err}"
    );
}

#[tokio::test]
async fn token_goes_to_the_hub_and_never_to_the_cdn() {
    let file = RepoFile::lfs(FILE, hf_test_server::test_bytes(2 << 20, 1));
    let server = HfServer::start(
        vec![Repo::new(REPO, vec![file.clone()]).gated()],
        Some("secret"),
        true,
    )
    .await;
    let d = dirs();
    let mut req = request(&server, &d, Some(file.sha256()));
    // without the token: a clear refusal
    let err = fetch(fast_config(), req.clone()).await.0.unwrap_err();
    assert!(matches!(err, DownloadError::Unauthorized { .. }), "{err}");
    req.credential = Some(download::Credential::Bearer("secret".into()));
    let out = fetch(fast_config(), req).await.0.unwrap();
    assert!(out.verified);
    assert!(server.state.hub_saw_token.load(Ordering::SeqCst) > 0);
    assert_eq!(server.state.cdn_saw_authorization.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn dropped_connections_500s_and_429s_are_retried() {
    let (server, file) = server_with(3 << 20, false).await;
    let f = server.faults();
    f.drop_count.store(3, Ordering::SeqCst);
    f.drop_after_bytes.store(100_000, Ordering::SeqCst);
    f.fail_500.store(2, Ordering::SeqCst);
    f.too_many.store(1, Ordering::SeqCst);
    f.retry_after_secs.store(1, Ordering::SeqCst);
    let d = dirs();
    let started = Instant::now();
    let out = fetch(fast_config(), request(&server, &d, Some(file.sha256())))
        .await
        .0
        .unwrap();
    assert!(out.verified);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was honoured"
    );
    // a dropped part resumes where it broke: little is fetched twice
    assert!(
        server.bytes_sent() < (3 << 20) + 3 * 100_000 + 10,
        "{}",
        server.bytes_sent()
    );
}

#[tokio::test]
async fn a_stalled_connection_is_reconnected() {
    let (server, file) = server_with(1 << 20, false).await;
    server.faults().stall_count.store(2, Ordering::SeqCst);
    server
        .faults()
        .stall_after_bytes
        .store(64 << 10, Ordering::SeqCst);
    let d = dirs();
    let config = DownloadConfig {
        max_retries: 0, // stalls must not count as failures
        ..fast_config()
    };
    let out = fetch(config, request(&server, &d, Some(file.sha256())))
        .await
        .0
        .unwrap();
    assert!(out.verified);
}

#[tokio::test]
async fn four_hundreds_are_not_retried() {
    let (server, _) = server_with(1000, false).await;
    let d = dirs();
    let mut req = request(&server, &d, None);
    req.url = server
        .resolve_url(REPO, "main", "missing.gguf")
        .parse()
        .unwrap();
    let started = server.state.data_requests.load(Ordering::SeqCst);
    let err = fetch(fast_config(), req).await.0.unwrap_err();
    assert!(matches!(err, DownloadError::NotFound { .. }), "{err}");
    assert_eq!(server.state.data_requests.load(Ordering::SeqCst), started);
    assert!(!d.dest.exists());
}

#[tokio::test]
async fn corrupt_bytes_fail_verification_and_are_deleted() {
    let (server, file) = server_with(1 << 20, false).await;
    server
        .faults()
        .corrupt_offset
        .store(500_000, Ordering::SeqCst);
    let d = dirs();
    let err = fetch(fast_config(), request(&server, &d, Some(file.sha256())))
        .await
        .0
        .unwrap_err();
    match &err {
        DownloadError::Sha256Mismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &file.sha256());
            assert_ne!(actual, expected);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("bad sha256"), "{err}");
    assert!(!d.dest.exists());
    assert!(leftovers(&d.work).is_empty(), "{:?}", leftovers(&d.work));
}

#[tokio::test]
async fn a_lying_content_length_is_caught_and_retried() {
    let (server, file) = server_with(1 << 20, false).await;
    server.faults().lie_count.store(2, Ordering::SeqCst);
    let d = dirs();
    let out = fetch(fast_config(), request(&server, &d, Some(file.sha256())))
        .await
        .0
        .unwrap();
    assert_eq!(out.size, 1 << 20);
    assert!(out.verified);
}

#[tokio::test]
async fn a_wrong_expected_size_is_refused_before_downloading() {
    let (server, _) = server_with(1000, false).await;
    let d = dirs();
    let mut req = request(&server, &d, None);
    req.size = Some(999);
    let err = fetch(fast_config(), req).await.0.unwrap_err();
    assert!(
        err.to_string()
            .contains("expected 999 bytes, the server has 1000"),
        "{err}"
    );
}

#[tokio::test]
async fn without_ranges_one_stream() {
    let (server, file) = server_with(2 << 20, false).await;
    server.faults().no_ranges.store(true, Ordering::SeqCst);
    let d = dirs();
    let (r, rec) = fetch(fast_config(), request(&server, &d, Some(file.sha256()))).await;
    let out = r.unwrap();
    assert!(out.verified && !out.resumable);
    assert!(
        rec.said("does not support ranges"),
        "{:?}",
        rec.messages.lock().unwrap()
    );
    // and a dropped stream starts over
    let d = dirs();
    server.faults().drop_count.store(1, Ordering::SeqCst);
    server
        .faults()
        .drop_after_bytes
        .store(500_000, Ordering::SeqCst);
    let out = fetch(fast_config(), request(&server, &d, Some(file.sha256())))
        .await
        .0
        .unwrap();
    assert!(out.verified);
}

/// A mirror of the hub: a chunked body with no length, `Range` ignored, no
/// `X-Linked-*` headers. The end of the stream is the end of the file, and the sha256
/// given with the request is the judge.
#[tokio::test]
async fn a_stream_of_unknown_length_is_read_to_its_end() {
    let (server, file) = server_with(3 << 20, false).await;
    server.faults().mirror.store(true, Ordering::SeqCst);
    let d = dirs();
    let mut req = request(&server, &d, Some(file.sha256()));
    req.size = Some(3 << 20);
    let (r, rec) = fetch(fast_config(), req).await;
    let out = r.unwrap();
    assert_eq!(out.size, 3 << 20);
    assert!(out.verified && !out.resumable);
    assert_eq!(fs_err::read(&d.dest).unwrap(), file.data.to_vec());
    assert!(rec.said("does not support ranges"));
    // one whole stream, plus the probe's answer (also whole) that became it
    assert_eq!(server.bytes_sent(), 3 << 20);
    assert!(leftovers(&d.work).is_empty(), "{:?}", leftovers(&d.work));

    // a body that ends early is caught by the size the tree API gave, and by the sha256
    let d = dirs();
    let mut req = request(&server, &d, Some(file.sha256()));
    req.size = Some((3 << 20) + 1);
    let err = fetch(fast_config(), req).await.0.unwrap_err();
    assert!(err.to_string().contains("expected"), "{err}");
    assert!(!d.dest.exists());
    let d = dirs();
    let req = request(&server, &d, Some("0".repeat(64)));
    let err = fetch(fast_config(), req).await.0.unwrap_err();
    assert!(matches!(err, DownloadError::Sha256Mismatch { .. }), "{err}");
    assert!(!d.dest.exists());
}

#[tokio::test]
async fn the_bandwidth_cap_holds() {
    let (server, file) = server_with(3 << 20, false).await;
    let d = dirs();
    let config = DownloadConfig {
        bandwidth_limit: Some(1 << 20),
        ..fast_config()
    };
    let started = Instant::now();
    let out = fetch(config, request(&server, &d, Some(file.sha256())))
        .await
        .0
        .unwrap();
    assert!(out.verified);
    // one second of burst, then 1 MiB/s: at least 2 s for 3 MiB, however fast the machine
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn two_requests_share_one_download() {
    let (server, file) = server_with(4 << 20, false).await;
    server
        .faults()
        .throttle_bytes_per_sec
        .store(8 << 20, Ordering::SeqCst);
    let d = dirs();
    let dl = Downloader::new(fast_config()).unwrap();
    let (a, b) = tokio::join!(
        dl.download(
            request(&server, &d, Some(file.sha256())),
            Arc::new(Recorder::default()),
            CancellationToken::new()
        ),
        dl.download(
            request(&server, &d, Some(file.sha256())),
            Arc::new(Recorder::default()),
            CancellationToken::new()
        ),
    );
    assert_eq!(a.unwrap(), b.unwrap());
    // the probe's one byte may or may not have left the server before it was dropped
    assert!(
        server.bytes_sent() <= (4 << 20) + 1,
        "one download, not two: {}",
        server.bytes_sent()
    );
}
