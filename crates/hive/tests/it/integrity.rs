//! Integrity checks: on request, at start; problems mark the model failed, files stay.

use serde_json::{Value, json};

use crate::{Hive, enc, events, fixture, get, post, start, wait_for};

async fn import(h: &Hive, path: &std::path::Path) -> Value {
    let (status, job) = post(h, "/v1/models/import", json!({"path": path})).await;
    assert_eq!(status, 202, "{job}");
    let ev = events(h, job["job_id"].as_str().unwrap()).await;
    ev.iter().find(|(k, _)| k == "result").unwrap().1.clone()
}

async fn verify(h: &Hive, rehash: bool) -> Value {
    let (status, job) = post(h, "/v1/models/verify", json!({"rehash": rehash})).await;
    assert_eq!(status, 202, "{job}");
    let ev = events(h, job["job_id"].as_str().unwrap()).await;
    ev.iter()
        .find(|(k, _)| k == "result")
        .unwrap_or_else(|| panic!("{ev:?}"))
        .1
        .clone()
}

#[tokio::test]
async fn a_damaged_model_is_marked_failed_and_its_file_kept() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let h = start(home.path(), "http://127.0.0.1:9", &[]);
    let a = src.path().join("a.gguf");
    let b = src.path().join("b.gguf");
    fs_err::write(&a, fixture("llama-q4_0.gguf")).unwrap();
    fs_err::write(&b, fixture("qwen2-q4_k_m.gguf")).unwrap();
    let ma = import(&h, &a).await;
    let mb = import(&h, &b).await;
    let report = verify(&h, false).await;
    assert_eq!(report["checked"], 2);
    assert_eq!(report["problems"], json!([]));

    // a: grows by a byte; b: one byte flipped, same size.
    let pa = std::path::PathBuf::from(ma["path"].as_str().unwrap());
    let pb = std::path::PathBuf::from(mb["path"].as_str().unwrap());
    let mut bytes = fs_err::read(&pa).unwrap();
    bytes.push(0);
    fs_err::write(&pa, &bytes).unwrap();
    let mut bytes = fs_err::read(&pb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs_err::write(&pb, &bytes).unwrap();

    let report = verify(&h, false).await;
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["id"], ma["id"]);
    assert!(
        problems[0]["reason"].as_str().unwrap().contains("bytes"),
        "{report}"
    );
    let (_, m) = get(
        &h,
        &format!("/v1/models/{}", enc(ma["id"].as_str().unwrap())),
    )
    .await;
    assert_eq!(m["status"]["state"], "failed", "{m}");
    assert!(pa.exists(), "the user's file is never deleted");

    // Only a rehash sees the flipped byte.
    let report = verify(&h, true).await;
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["id"], mb["id"]);
    assert!(
        problems[0]["reason"].as_str().unwrap().contains("sha256"),
        "{report}"
    );
    assert!(pb.exists());
    let metrics = crate::get_text(&h, "/metrics").await;
    assert!(metrics.contains("rbee_integrity_problems 1"), "{metrics}");
    assert!(
        metrics.contains("rbee_models{state=\"failed\"} 2"),
        "{metrics}"
    );
    let (status, _) = post(&h, "/v1/models/verify", json!({"rehash": "yes"})).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_missing_file_is_found_at_start() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let a = src.path().join("a.gguf");
    fs_err::write(&a, fixture("llama-q4_0.gguf")).unwrap();
    let id = {
        let h = start(home.path(), "http://127.0.0.1:9", &[]);
        let m = import(&h, &a).await;
        fs_err::remove_file(m["path"].as_str().unwrap()).unwrap();
        m["id"].as_str().unwrap().to_owned()
    };
    let h = start(home.path(), "http://127.0.0.1:9", &[]);
    wait_for("the check at start", async || {
        let (_, m) = get(&h, &format!("/v1/models/{}", enc(&id))).await;
        m["status"]["state"] == "failed"
    })
    .await;
    let (_, m) = get(&h, &format!("/v1/models/{}", enc(&id))).await;
    assert!(
        m["status"]["error"].as_str().unwrap().contains("missing"),
        "{m}"
    );
}
