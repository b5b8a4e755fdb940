//! The audit log: every mutating request, the caller as a hash, never a secret.

use serde_json::{Value, json};

use crate::{fixture, start};

const TOKEN: &str = "audit-test-secret-4f1e";

#[tokio::test]
async fn mutating_requests_are_logged_without_secrets() {
    let home = tempfile::tempdir().unwrap();
    let h = start(
        home.path(),
        "http://127.0.0.1:9",
        &["--api-token", TOKEN, "--hf-token", "hf_never_logged_9c2d"],
    );
    let c = crate::client();
    let src = home.path().join("in.gguf");
    fs_err::write(&src, fixture("llama-q4_0.gguf")).unwrap();
    let r = c
        .post(format!("{}/v1/models/import", h.url))
        .bearer_auth(TOKEN)
        .json(&json!({"path": src}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .post(format!("{}/v1/models/download", h.url))
        .bearer_auth("wrong-token")
        .json(&json!({"model_ref": "hf:org/repo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .delete(format!("{}/v1/jobs/job-nope", h.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Reads are not logged.
    let _ = c
        .get(format!("{}/v1/models", h.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();

    let mut entries = Value::Null;
    crate::wait_for("two entries", async || {
        entries = c
            .get(format!("{}/v1/audit", h.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        entries.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let e = entries.as_array().unwrap();
    assert_eq!(e[0]["operation"], "model_import");
    assert_eq!(e[0]["target"], src.to_str().unwrap());
    assert_eq!(e[0]["outcome"], "ok");
    // the refused request (a wrong token) never reached the log: auth runs first
    assert_eq!(e[1]["operation"], "job_cancel");
    assert_eq!(e[1]["target"], "job-nope");
    assert!(e[0]["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let caller = e[0]["caller"].as_str().unwrap();
    assert!(
        caller.starts_with("token:") && caller.len() == 18,
        "{caller}"
    );
    assert_eq!(e[1]["caller"], caller, "the same token, the same caller");

    // No secret reaches the file.
    let text = fs_err::read_to_string(home.path().join("audit.log")).unwrap();
    assert_eq!(text.lines().count(), 2);
    for secret in [TOKEN, "wrong-token", "hf_never_logged_9c2d", "Bearer"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // since: nothing after now.
    let later = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    let none: Value = c
        .get(format!("{}/v1/audit", h.url))
        .query(&[("since", later)])
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!([]));
}
