//! Serving completions over HTTP.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::{Worker, eventually, smollm2, start};

async fn post(w: &Worker, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", w.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn health(w: &Worker) -> Value {
    reqwest::get(format!("{}/health", w.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `data:` payloads of a whole SSE response.
async fn sse_events(r: reqwest::Response) -> Vec<String> {
    let text = r.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn greedy_completion_knows_the_capital_of_france() {
    let Some(model) = smollm2() else { return };
    let w = start(&model, &[]).await;
    let (status, v) = post(
        &w,
        "/v1/completions",
        json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(v["usage"]["total_tokens"], 13);

    // Greedy is deterministic; a stop string cuts the text before it.
    let (_, again) = post(
        &w,
        "/v1/completions",
        json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "stop": ["."]}),
    )
    .await;
    let cut = again["choices"][0]["text"].as_str().unwrap();
    assert_eq!(again["choices"][0]["finish_reason"], "stop");
    assert!(
        text.starts_with(cut) && !cut.contains('.'),
        "{cut:?} vs {text:?}"
    );

    // Sampling with a seed repeats itself.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0.9, "top_p": 0.95, "seed": 7});
    let (_, a) = post(&w, "/v1/completions", body.clone()).await;
    let (_, b) = post(&w, "/v1/completions", body).await;
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    // and so does the default sampling (llama.cpp's chain), with nothing but a seed
    let body = json!({"prompt": "The capital of France is", "max_tokens": 8, "seed": 11});
    let (_, a) = post(&w, "/v1/completions", body.clone()).await;
    let (_, b) = post(&w, "/v1/completions", body).await;
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"], "{a}");
}

#[tokio::test]
async fn chat_completion_answers_through_the_models_template() {
    let Some(model) = smollm2() else { return };
    let w = start(&model, &[]).await;
    let (status, v) = post(
        &w,
        "/v1/chat/completions",
        json!({
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            "max_tokens": 16,
            "temperature": 0
        }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!answer.trim().is_empty());
    assert!(
        !answer.contains("<|im_end|>") && !answer.contains("<|im_start|>"),
        "{answer:?}"
    );
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length");
    // SmolLM2's template adds its default system prompt: well over the user's words.
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 20, "{v}");
}

#[tokio::test]
async fn streaming_sends_chunks_then_done() {
    let Some(model) = smollm2() else { return };
    let w = start(&model, &[]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", w.url))
        .json(&json!({
            "messages": [{"role": "user", "content": "Tell me about bees."}],
            "max_tokens": 12, "temperature": 0, "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(r).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.len() >= 4, "{events:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!content.is_empty());
    let with_text = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(with_text >= 2, "several chunks carry text: {events:?}");
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, "length");

    // The completions endpoint streams too.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", w.url))
        .json(&json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "stream": true}))
        .send()
        .await
        .unwrap();
    let events = sse_events(r).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert!(text.contains("Paris"), "{text:?}");
}

#[tokio::test]
async fn bad_requests_are_400s_with_a_reason() {
    let Some(model) = smollm2() else { return };
    let w = start(&model, &[]).await;
    let client = reqwest::Client::new();
    let raw = |body: &'static str| {
        client
            .post(format!("{}/v1/completions", w.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = raw("{not json").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(
        raw(r#"{"max_tokens": 3}"#).await.unwrap().status(),
        400,
        "no prompt"
    );
    assert_eq!(raw(r#"{"prompt": 5}"#).await.unwrap().status(), 400);

    for (path, body, param) in [
        (
            "/v1/completions",
            json!({"prompt": "x", "temperature": 9}),
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": -1}),
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "top_p": 0}),
            "top_p",
        ),
        ("/v1/completions", json!({"prompt": "x", "n": 3}), "n"),
        ("/v1/completions", json!({"prompt": ["a", "b"]}), "prompt"),
        ("/v1/completions", json!({"prompt": ""}), "prompt"),
        ("/v1/chat/completions", json!({"messages": []}), "messages"),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            "messages",
        ),
    ] {
        let (status, v) = post(&w, path, body.clone()).await;
        assert_eq!(status, 400, "{body} → {v}");
        assert_eq!(v["error"]["param"], param, "{body} → {v}");
    }

    // A prompt longer than the context: 400 naming both numbers.
    let long = "word ".repeat(5000);
    let (status, v) = post(&w, "/v1/completions", json!({"prompt": long})).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // SmolLM2's file says 8192; candle's llama stops at 4096, and the message says so
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("holds 4096") && message.contains("its file says 8192"),
        "{v}"
    );
    for (field, bad) in [
        ("top_k", json!(-1)),
        ("min_p", json!(2)),
        ("repeat_penalty", json!(0)),
    ] {
        let (status, v) = post(&w, "/v1/completions", json!({"prompt": "x", field: bad})).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(field)),
            "{v}"
        );
    }

    let r = client
        .post(format!("{}/v1/completions", w.url))
        .body(r#"{"prompt":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "no JSON content type");
    let r = client
        .get(format!("{}/v1/nothing", w.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Still serving after all that.
    assert_eq!(health(&w).await["status"], "ready");
}

#[tokio::test]
async fn requests_beyond_the_queue_get_429_and_a_gone_client_frees_its_slot() {
    let Some(model) = smollm2() else { return };
    let w = start(&model, &["--slots", "1", "--queue", "1"]).await;
    let client = reqwest::Client::new();
    let long = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 3000, "temperature": 0, "stream": true});
    // The first request takes the only slot: its first chunk has arrived.
    let first = client
        .post(format!("{}/v1/completions", w.url))
        .json(&long)
        .send()
        .await
        .unwrap();
    let mut first_stream = first.bytes_stream();
    first_stream.next().await.unwrap().unwrap();
    assert_eq!(health(&w).await["slots_available"], 0);

    // The second waits in the queue...
    let url = format!("{}/v1/completions", w.url);
    let queued = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .post(url)
                .json(&json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    eventually(30, "a queued request", || async {
        health(&w).await["queued"] == 1
    })
    .await;
    // ...and the third finds the queue full.
    let (status, v) = post(
        &w,
        "/v1/completions",
        json!({"prompt": "Hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "queue_full");

    // The first client goes away: its generation stops and the queued one runs.
    drop(first_stream);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), queued)
            .await
            .unwrap()
            .unwrap(),
        200
    );
    eventually(30, "the slot to come back", || async {
        health(&w).await["slots_available"] == 1
    })
    .await;
}

#[tokio::test]
async fn sigterm_cuts_requests_after_the_grace_period_and_exits_0() {
    let Some(model) = smollm2() else { return };
    let mut w = start(&model, &["--grace-secs", "1"]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", w.url))
        .json(&json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 3000, "temperature": 0, "stream": true,
                      "ignore_eos": true}))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let pid = i32::try_from(w.child.id()).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The stream ends (cut: finish_reason "cancelled") and closes with [DONE].
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
    {
        match chunk {
            Ok(bytes) => rest.extend_from_slice(&bytes),
            Err(_) => break,
        }
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("\"finish_reason\":\"cancelled\""), "{rest}");
    assert!(rest.contains("data: [DONE]"), "{rest}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = w.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not exit"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(code.code(), Some(0));
}
