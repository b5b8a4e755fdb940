//! Cancel, SIGTERM and kill -9 in the middle of a download.

use std::sync::atomic::Ordering;

use hf_test_server::{HfServer, Repo, RepoFile};
use serde_json::json;

use crate::{big_gguf, enc, events, get, model_list, post, start, wait_for};

const ID: &str = "hf:org/Big-GGUF/Big-Q4_0.gguf";

async fn throttled_server(len: usize) -> (HfServer, Vec<u8>) {
    let data = big_gguf(len);
    let hf = HfServer::start(
        vec![Repo::new(
            "org/Big-GGUF",
            vec![RepoFile::lfs("Big-Q4_0.gguf", data.clone())],
        )],
        None,
        false,
    )
    .await;
    // 4 connections at 1 MiB/s each
    hf.faults()
        .throttle_bytes_per_sec
        .store(1 << 20, Ordering::SeqCst);
    (hf, data)
}

/// Starts pulling the big model; returns its job once the daemon reports more than
/// `bytes` on disk.
async fn pull_until(h: &crate::Hive, bytes: u64) -> String {
    let (_, started) = post(
        h,
        "/v1/models/download",
        json!({"model_ref": "hf:org/Big-GGUF"}),
    )
    .await;
    wait_for("bytes on disk", async || {
        let (_, m) = get(h, &format!("/v1/models/{}", enc(ID))).await;
        assert_eq!(m["status"]["state"], "downloading", "{m}");
        m["progress"]["bytes_done"].as_u64().unwrap_or(0) > bytes
    })
    .await;
    started["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cancels_and_a_new_pull_resumes() {
    let (hf, data) = throttled_server(16 << 20).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let job = pull_until(&h, 3 << 20).await;
    let r = crate::client()
        .delete(format!("{}/v1/jobs/{job}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ev = events(&h, &job).await;
    assert_eq!(ev.last().unwrap().1, json!({"state": "cancelled"}));
    let err = &ev[ev.len() - 2];
    assert_eq!(err.0, "error");
    assert!(
        err.1["message"]
            .as_str()
            .unwrap()
            .contains("kept: pull again to resume"),
        "{}",
        err.1
    );
    // paused, with what is on disk: not failed
    let (_, m) = get(&h, &format!("/v1/models/{}", enc(ID))).await;
    assert_eq!(m["status"]["state"], "paused", "{m}");
    assert!(m["progress"]["bytes_done"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["progress"]["bytes_total"], data.len(), "{m}");

    let sent = hf.bytes_sent();
    hf.faults()
        .throttle_bytes_per_sec
        .store(0, Ordering::SeqCst);
    let (_, again) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": "hf:org/Big-GGUF"}),
    )
    .await;
    let ev = events(&h, again["job_id"].as_str().unwrap()).await;
    assert_eq!(
        ev.last().unwrap().1,
        json!({"state": "completed"}),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(k, d)| k == "narration" && d["message"].as_str().unwrap().contains("resuming")),
        "{ev:?}"
    );
    assert!(
        hf.bytes_sent() - sent < data.len() as u64 - (2 << 20),
        "the second pull fetched only the rest: {} of {}",
        hf.bytes_sent() - sent,
        data.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_resumes_by_itself() {
    let (hf, data) = throttled_server(16 << 20).await;
    // 4 connections at 512 KiB/s: 2 MiB/s
    hf.faults()
        .throttle_bytes_per_sec
        .store(512 << 10, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let mut h = start(home.path(), &hf.url(), &[]);
    // 8 MiB on disk, as the daemon reports it (to the catalog once a second); its
    // resume state holds what was written up to 50 ms before
    pull_until(&h, 8 << 20).await;
    h.child.kill().unwrap(); // SIGKILL
    h.child.wait().unwrap();
    drop(h);

    hf.faults()
        .throttle_bytes_per_sec
        .store(0, Ordering::SeqCst);
    let sent_before = hf.bytes_sent();
    let h = start(home.path(), &hf.url(), &[]);
    // it shows as downloading (or is already done), and finishes by itself
    wait_for("the resumed download", async || {
        let (_, m) = get(&h, &format!("/v1/models/{}", enc(ID))).await;
        assert_ne!(m["status"]["state"], "failed", "{m}");
        m["status"]["state"] == "available"
    })
    .await;
    let (_, m) = get(&h, &format!("/v1/models/{}", enc(ID))).await;
    assert!(m["verified"].as_bool().unwrap());
    assert_eq!(fs_err::read(m["path"].as_str().unwrap()).unwrap(), data);
    let (_, jobs) = get(&h, "/v1/jobs").await;
    let ev = events(&h, jobs[0]["job_id"].as_str().unwrap()).await;
    assert!(
        ev.iter()
            .any(|(k, d)| k == "narration" && d["message"].as_str().unwrap().contains("resuming")),
        "{ev:?}"
    );
    // what the checkpoint held is not fetched again (the server also counts bytes
    // it queued for parts that another connection took over)
    let refetched = hf.bytes_sent() - sent_before;
    assert!(
        refetched < data.len() as u64 - (2 << 20),
        "resumed, not restarted: {refetched} of {}",
        data.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_promptly_and_keeps_the_partial() {
    let (hf, _) = throttled_server(16 << 20).await;
    let home = tempfile::tempdir().unwrap();
    let mut h = start(home.path(), &hf.url(), &[]);
    post(
        &h,
        "/v1/models/download",
        json!({"model_ref": "hf:org/Big-GGUF"}),
    )
    .await;
    wait_for("bytes", async || hf.bytes_sent() > 2 << 20).await;
    let pid = h.child.id();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let started = std::time::Instant::now();
    wait_for("exit", async || h.child.try_wait().unwrap().is_some()).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(h.child.wait().unwrap().success());
    let partials: Vec<_> = fs_err::read_dir(home.path().join("downloads"))
        .unwrap()
        .collect();
    assert!(partials.len() >= 2, "partial and state kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_cancelled_model_removes_its_partial() {
    let (hf, _) = throttled_server(16 << 20).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let job = pull_until(&h, 0).await;
    crate::client()
        .delete(format!("{}/v1/jobs/{job}", h.url))
        .send()
        .await
        .unwrap();
    let ev = events(&h, &job).await;
    assert_eq!(ev.last().unwrap().1, json!({"state": "cancelled"}));
    let downloads = home.path().join("downloads");
    assert_eq!(
        fs_err::read_dir(&downloads).unwrap().count(),
        2,
        "partial and state kept"
    );
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, enc(ID)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["bytes_freed"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(
        fs_err::read_dir(&downloads).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_fails_the_job_and_keeps_the_partial() {
    let (_hf, _) = throttled_server(16 << 20).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &_hf.url(), &[]);
    let c = crate::client();
    let download = |header: &'static str, value: String| {
        c.post(format!("{}/v1/models/download", h.url))
            .header(header, value)
            .json(&json!({"model_ref": "hf:org/Big-GGUF"}))
            .send()
    };
    // Malformed: refused before anything starts.
    for (header, value) in [
        ("x-timeout-seconds", "soon".to_owned()),
        ("x-timeout-seconds", "-1".to_owned()),
        ("x-deadline", "tomorrow".to_owned()),
    ] {
        let r = download(header, value).await.unwrap();
        assert_eq!(r.status(), 400);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_deadline");
    }
    let models = model_list(&h).await;
    assert_eq!(models, json!([]));

    // 16 MiB at about 4 MiB/s does not fit in 1.5 s.
    let r = download("x-timeout-seconds", "1.5".to_owned())
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: serde_json::Value = r.json().await.unwrap();
    let ev = events(&h, job["job_id"].as_str().unwrap()).await;
    let (kind, error) = &ev[ev.len() - 2];
    assert_eq!(kind, "error", "{ev:?}");
    assert_eq!(error["code"], "deadline_exceeded", "{ev:?}");
    assert_eq!(ev.last().unwrap().1["state"], "failed");
    let (_, m) = get(&h, &format!("/v1/models/{}", enc(ID))).await;
    assert_eq!(m["status"]["state"], "paused", "{m}");
    let partials: Vec<_> = fs_err::read_dir(home.path().join("downloads"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!partials.is_empty(), "the partial download is kept");

    // A deadline already past fails at once, by the same code.
    let r = download("x-deadline", "2000-01-01T00:00:00Z".to_owned())
        .await
        .unwrap();
    let job: serde_json::Value = r.json().await.unwrap();
    let ev = events(&h, job["job_id"].as_str().unwrap()).await;
    assert_eq!(ev[ev.len() - 2].1["code"], "deadline_exceeded", "{ev:?}");
}
