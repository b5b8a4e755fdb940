//! What a hostile model file or a stranger on this machine can do to the worker:
//! a chat template that loops for ever (the model rewritten by llama.cpp's own
//! `gguf` package, `gguf_new_metadata`), and requests without the worker's key.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{smollm2, start};

/// A Python with llama.cpp's `gguf` package, or a skip.
fn python() -> Option<PathBuf> {
    hf_test_server::python_with("gguf")
}

const LOOP_BOMB: &str = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}{{ a }}{% endfor %}{% endfor %}{% endfor %}";

fn rss_kib(pid: u32) -> u64 {
    let status = fs_err::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_chat_template_that_loops_for_ever_is_a_400_and_the_worker_goes_on() {
    let (Some(python), Some(model)) = (python(), smollm2()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.gguf");
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--force",
            "--chat-template",
            LOOP_BOMB,
        ])
        .arg(&model)
        .arg(&bomb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = start(&bomb, &[]).await;
    let before = rss_kib(w.child.id());
    let chat = |content: &str| {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", w.url))
            .json(&json!({"messages": [{"role": "user", "content": content}], "max_tokens": 2}))
            .send()
    };
    let asked = std::time::Instant::now();
    let r = chat("Hi").await.unwrap();
    eprintln!(
        "the loop bomb was answered {} in {:?}",
        r.status(),
        asked.elapsed()
    );
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "template_too_expensive", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too expensive"),
        "{v}"
    );
    // bounded: the render stopped, it did not grow the worker by gigabytes
    let after = rss_kib(w.child.id());
    eprintln!("the worker's RSS: {before} KiB before, {after} KiB after");
    assert!(
        after < before + (256 << 10),
        "RSS went from {before} KiB to {after} KiB"
    );
    // and the worker serves on: health, and a completion, which needs no template
    let h: Value = reqwest::get(format!("{}/health", w.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ready", "{h}");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", w.url))
        .json(&json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        chat("again").await.unwrap().status(),
        400,
        "the next render is bounded too"
    );
}

#[tokio::test]
async fn with_a_key_every_route_but_health_needs_it() {
    let Some(model) = smollm2() else {
        return;
    };
    let mut c = crate::worker_cmd(&model, &[]);
    c.env("RBEE_WORKER_API_KEY", "worker-key-3b9");
    let w = crate::spawn(c).await;
    let client = reqwest::Client::new();
    let ask = |key: Option<&str>| {
        let mut rb = client
            .post(format!("{}/v1/completions", w.url))
            .json(&json!({"prompt": "Hi", "max_tokens": 1}));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send()
    };
    assert_eq!(ask(None).await.unwrap().status(), 401);
    assert_eq!(ask(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(ask(Some("worker-key-3b9")).await.unwrap().status(), 200);
    let models = client
        .get(format!("{}/v1/models", w.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
    let health = reqwest::get(format!("{}/health", w.url)).await.unwrap();
    assert_eq!(health.status(), 200, "health is open: it says nothing");
    let cmdline = fs_err::read(format!("/proc/{}/cmdline", w.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("worker-key-3b9"));
}
