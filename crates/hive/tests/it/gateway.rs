//! The one endpoint, against a real hive and real llama-server workers: the official
//! `openai` and `ollama` Python clients (`tests/clients.py`), a model loaded on its
//! first request, concurrent requests sharing one load, a worker killed mid-stream,
//! and bad requests in each route family's shape.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::engines::{add, llama_server, llama_servers_under};
use crate::workers::{hive, import};
use crate::{get, post, wait_for};

use hf_test_server::test_model as smollm2;

fn python() -> Option<PathBuf> {
    crate::python_with("openai, ollama")
}

/// Runs `tests/clients.py` against a fresh hive with llama-server and `model`
/// imported as `file_name`; answers what the script saw and the hive.
async fn run_clients(
    server: &std::path::Path,
    model: &std::path::Path,
    python: &std::path::Path,
    file_name: &str,
    alias: &str,
    architecture: &str,
) -> (Value, crate::Hive, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    add(&h, server, "cpu").await;
    let local = home.path().join(file_name);
    fs_err::copy(model, &local).unwrap();
    import(&h, &local).await;
    let other = home.path().join("tiny-copy.gguf");
    fs_err::copy(model, &other).unwrap();
    // no worker yet: the first request loads one
    assert_eq!(get(&h, "/v1/workers").await.1["workers"], json!([]));
    let seen = crate::python_script(
        python,
        "clients.py",
        &[
            &h.url,
            alias,
            &format!("file:{}", other.display()),
            architecture,
        ],
    )
    .await;
    (seen, h, home)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_and_ollama_clients_talk_to_the_one_endpoint() {
    let (Some(server), Some(model), Some(python)) = (llama_server(), smollm2(), python()) else {
        return;
    };
    let (seen, h, _home) = run_clients(
        &server,
        &model,
        &python,
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "smollm2-135m-instruct:q4_1",
        "llama",
    )
    .await;
    assert!(seen["openai_stream_chunks"].as_u64().unwrap() > 1, "{seen}");
    // one worker served it all, and says it was used
    let (_, list) = get(&h, "/v1/workers").await;
    let workers = list["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{list}");
    assert_eq!(workers[0]["requests_in_flight"], 0, "{list}");
    let metrics = crate::get_text(&h, "/metrics").await;
    assert!(
        metrics.contains("rbee_gateway_requests_total{model="),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "rbee_gateway_loads_total"),
        1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("rbee_gateway_first_byte_seconds_count{model="),
        "{metrics}"
    );
    assert!(
        metrics.contains("rbee_gateway_load_seconds_count{model="),
        "{metrics}"
    );
    // the streamed chats and generates gave a first token and a speed
    assert!(metric(&metrics, "rbee_gateway_time_to_first_token_seconds_count") >= 2.0);
    assert!(metric(&metrics, "rbee_gateway_tokens_per_second_count") >= 2.0);
    assert!(metric(&metrics, "rbee_gateway_tokens_per_second_sum") > 0.0);
    assert!(metric(&metrics, "rbee_gateway_queue_wait_seconds_count") >= 2.0);
    // asking is not a change: the audit log has the pull and the delete, no chat
    let (_, audit) = get(&h, "/v1/audit").await;
    let ops: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operation"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!ops.iter().any(|r| r.contains("chat")), "{ops:?}");
    assert!(ops.iter().any(|r| r == "model_download"), "{ops:?}");
    assert!(ops.iter().any(|r| r == "model_delete"), "{ops:?}");
}

/// The same clients on Gemma 3, an architecture only llama.cpp runs here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_talk_to_gemma_too() {
    let (Some(server), Some(python)) = (llama_server(), python()) else {
        return;
    };
    let Some(model) = crate::engines::gemma() else {
        return;
    };
    let (seen, _h, _home) = run_clients(
        &server,
        &model,
        &python,
        "gemma-3-270m-q4_k_m.gguf",
        "gemma-3-270m:q4_k_m",
        "gemma3",
    )
    .await;
    assert!(seen["ollama_stream_chunks"].as_u64().unwrap() > 2, "{seen}");
}

/// A client that goes away mid-stream cancels the generation upstream: the worker
/// is idle again long before the answer it was asked for would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_generation() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let id = crate::engines::smollm2_on_llama(&h, home.path(), &server, &model).await;
    assert_eq!(ask(&h, &id).await.0, 200, "warm");
    let (_, list) = get(&h, "/v1/workers").await;
    let worker = list["workers"][0]["url"].as_str().unwrap().to_owned();
    let key = crate::worker_key(&list["workers"][0]);
    let busy = async || {
        let text = crate::client()
            .get(format!("{worker}/metrics"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("llamacpp:requests_processing"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            > 0.0
    };
    // 4000 tokens would take minutes here
    let mut r = crate::client()
        .post(format!("{}/openai/v1/completions", h.url))
        .json(&json!({"model": id, "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.chunk().await.unwrap().unwrap();
    wait_for("the generation to run", async || busy().await).await;
    drop(r);
    // the whole answer would run for a minute or more: it must stop well before
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while busy().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the generation went on after its client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_for("the request to leave the worker's count", async || {
        get(&h, "/v1/workers").await.1["workers"][0]["requests_in_flight"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_share_one_load_and_a_killed_worker_ends_its_stream() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &["--restart-backoff-ms", "50"]);
    add(&h, &server, "cpu").await;
    let local = home.path().join("SmolLM2.gguf");
    fs_err::copy(&model, &local).unwrap();
    let id = import(&h, &local).await;

    // six cold requests at once: one worker, six answers
    let url = format!("{}/openai/v1/chat/completions", h.url);
    let asks = (0..6).map(|i| {
        let url = url.clone();
        let id = id.clone();
        async move {
            let r = crate::client()
                .post(&url)
                .json(&json!({"model": id, "messages": [{"role": "user", "content": format!("Say {i}.")}], "max_tokens": 4}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    for (status, v) in futures_util::future::join_all(asks).await {
        assert_eq!(status, 200, "{v}");
        assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    }
    let (_, list) = get(&h, "/v1/workers").await;
    assert_eq!(list["workers"].as_array().unwrap().len(), 1, "{list}");
    let pid = list["workers"][0]["pid"].as_u64().unwrap();

    // a stream whose worker is killed mid-way ends with an error event, not a hang
    let mut r = crate::client()
        .post(&url)
        .json(&json!({"model": id, "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 2000, "stream": true, "ignore_eos": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data:"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut rest = String::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(chunk)) = r.chunk().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream hung after its worker died");
    assert!(
        rest.contains("worker_failed"),
        "an error event at the end: {rest}"
    );

    // the next request is answered (the worker restarted, or a new one)
    wait_for("an answer after the kill", async || {
        let r = crate::client()
            .post(&url)
            .json(&json!({"model": id, "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}))
            .send()
            .await
            .unwrap();
        r.status() == 200
    })
    .await;
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": id})).await;
    assert_eq!(s, 200);
    wait_for("no llama-server left", async || {
        llama_servers_under(home.path()).is_empty()
    })
    .await;
}

#[tokio::test]
async fn bad_gateway_requests_are_4xx_in_each_familys_shape() {
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let client = crate::client();
    for (path, body, status, words) in [
        ("/openai/v1/chat/completions", "{not json", 400, "not JSON"),
        ("/openai/v1/chat/completions", "[1]", 400, "JSON object"),
        (
            "/openai/v1/chat/completions",
            r#"{"messages": []}"#,
            400,
            "needs `model`",
        ),
        (
            "/openai/v1/chat/completions",
            r#"{"model": 5}"#,
            400,
            "must be a string",
        ),
        (
            "/openai/v1/completions",
            r#"{"model": "nope:q4"}"#,
            404,
            "not in this hive",
        ),
        (
            "/openai/v1/chat/completions",
            r#"{"model": "x", "stream": "yes"}"#,
            400,
            "stream",
        ),
    ] {
        let r = client
            .post(format!("{}{path}", h.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path} {body}");
        let v: Value = r.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{path} {body} → {v}");
        assert!(v["error"]["type"].is_string(), "OpenAI's shape: {v}");
    }
    for (path, body, status, words) in [
        (
            "/api/chat",
            r#"{"model": "nope", "messages": []}"#,
            404,
            "not in this hive",
        ),
        (
            "/api/chat",
            r#"{"model": "x", "messages": "hi"}"#,
            400,
            "messages must be an array",
        ),
        (
            "/api/generate",
            r#"{"model": "x", "keep_alive": "soon"}"#,
            400,
            "keep_alive",
        ),
        (
            "/api/generate",
            r#"{"model": "x", "options": 3}"#,
            400,
            "options must be an object",
        ),
        (
            "/api/generate",
            r#"{"model": "x", "options": {"temperature": "hot"}}"#,
            400,
            "options.temperature",
        ),
        ("/api/show", r#"{}"#, 400, "model is required"),
        ("/api/show", "{bad", 400, "not JSON"),
    ] {
        let r = client
            .post(format!("{}{path}", h.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path} {body}");
        let v: Value = r.json().await.unwrap();
        let message = v["error"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{path} {body} → {v}");
    }
    // a body too large, in each family's shape (answered before it is all read: the
    // client may see the connection close while it still writes)
    let huge = format!(r#"{{"model": "x", "prompt": "{}"}}"#, "a".repeat(17 << 20));
    for (path, openai) in [("/openai/v1/completions", true), ("/api/generate", false)] {
        // a connection of its own each: the server closes it without reading the rest
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let sent = fresh
            .post(format!("{}{path}", h.url))
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(e) => {
                assert!(e.is_request(), "{e}");
                continue;
            }
        };
        assert_eq!(r.status(), 413, "{path}");
        let v: Value = r.json().await.unwrap();
        let message = if openai {
            v["error"]["message"].as_str()
        } else {
            v["error"].as_str()
        };
        assert!(
            message.unwrap_or_default().contains("16 MiB"),
            "{path} → {v}"
        );
    }
    let r = client
        .delete(format!("{}/api/delete", h.url))
        .json(&json!({"model": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(get(&h, "/api/tags").await.1, json!({"models": []}));
    assert_eq!(get(&h, "/v1/workers").await.1["workers"], json!([]));
}

/// The sum of a metric's samples over its labels, from Prometheus' text format.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the admission counts for a model before its worker is measured, from the
/// model's record as the API shows it (weights and a KV cache of 4096 tokens).
fn estimate(model: &Value) -> u64 {
    let g = &model["gguf"];
    let ctx = g["context_length"].as_u64().unwrap_or(4096).min(4096);
    let kv = g["kv_cache_bytes_per_token"].as_u64().unwrap_or(0) * ctx;
    (g["tensor_data_size"].as_u64().unwrap() + kv).max(model["size"].as_u64().unwrap())
}

async fn ask(h: &crate::Hive, model: &str) -> (u16, Value) {
    let r = crate::client()
        .post(format!("{}/openai/v1/completions", h.url))
        .json(&json!({"model": model, "prompt": "Hello", "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A RAM budget that holds one model but not two: the second model's request stops
/// the idle first; while the first is busy, the other's request is a 503 that says
/// why, and the busy stream is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_for_one_model_evicts_the_idle_one_and_never_the_busy_one() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    // first, what one worker of this model holds once ready
    let (rss, need) = {
        let home = tempfile::tempdir().unwrap();
        let h = hive(home.path(), &[]);
        add(&h, &server, "cpu").await;
        let a = home.path().join("a.gguf");
        fs_err::copy(&model, &a).unwrap();
        let id = import(&h, &a).await;
        assert_eq!(ask(&h, &id).await.0, 200);
        let (_, list) = get(&h, "/v1/workers").await;
        let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&id))).await;
        // the hive's one estimate, as the model's page shows it, is this one
        assert_eq!(
            m["memory"]["worker"]["total_bytes"].as_u64(),
            Some(estimate(&m)),
            "{m}"
        );
        assert_eq!(m["memory"]["worker"]["context"], 4096, "{m}");
        (
            list["workers"][0]["rss_bytes"].as_u64().unwrap(),
            estimate(&m),
        )
    };
    let budget = (need + rss / 2).to_string();
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &["--ram-budget-bytes", &budget]);
    add(&h, &server, "cpu").await;
    let (a, b) = (home.path().join("a.gguf"), home.path().join("b.gguf"));
    fs_err::copy(&model, &a).unwrap();
    fs_err::copy(&model, &b).unwrap();
    let (a, b) = (import(&h, &a).await, import(&h, &b).await);

    assert_eq!(ask(&h, &a).await.0, 200);
    let (s, v) = ask(&h, &b).await;
    assert_eq!(s, 200, "{v}");
    let (_, list) = get(&h, "/v1/workers").await;
    let live: Vec<&Value> = list["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ready")
        .collect();
    assert_eq!(live.len(), 1, "{list}");
    assert_eq!(live[0]["model_ref"], b.as_str(), "{list}");
    let metrics = crate::get_text(&h, "/metrics").await;
    assert!(
        metrics.contains(&format!("rbee_evictions_total{{model=\"{a}\"}} 1")),
        "the idle first model was the one stopped: {metrics}"
    );

    // b busy with a long stream: a request for a cannot make room
    let mut stream = crate::client()
        .post(format!("{}/openai/v1/completions", h.url))
        .json(&json!({"model": b, "prompt": "Once upon a time", "max_tokens": 150, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()).into_owned();
    let (s, v) = ask(&h, &a).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_memory", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("in flight") && message.contains("needs about"),
        "{message}"
    );
    while let Some(chunk) = stream.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the busy stream ran to its end: {text}"
    );
    assert!(!text.contains("worker_failed"), "{text}");
    // idle again: now a's request stops b
    assert_eq!(ask(&h, &a).await.0, 200);
}

/// A model's kind comes from its GGUF (rank pooling: a reranker; another pooling
/// type or an encoder: an embedding model; else a language model), and a request
/// of another kind is refused in its family's shape before any worker starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_model_cannot_answer_is_refused_before_any_worker_starts() {
    let (Some(server), Some(model), Some(python)) =
        (llama_server(), smollm2(), crate::python_with("gguf, numpy"))
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    add(&h, &server, "cpu").await;
    let local = home.path().join("SmolLM2.gguf");
    fs_err::copy(&model, &local).unwrap();
    let smol = import(&h, &local).await;
    // written by llama.cpp's own gguf package
    let script = r#"
import sys, numpy as np, gguf
for path, arch, pooling in [(sys.argv[1], "bert", 4), (sys.argv[2], "qwen3", 3)]:
    w = gguf.GGUFWriter(path, arch)
    w.add_name(path.rsplit("/", 1)[-1])
    w.add_context_length(512)
    w.add_uint32(f"{arch}.pooling_type", pooling)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"#;
    let (ranker, embedder) = (
        home.path().join("ranker.gguf"),
        home.path().join("embedder.gguf"),
    );
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .args([&ranker, &embedder])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ranker = import(&h, &ranker).await;
    let embedder = import(&h, &embedder).await;
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&ranker))).await;
    assert_eq!(m["gguf"]["pooling_type"], 4, "{m}");
    for (path, body, words, ollama) in [
        (
            "/v1/rerank",
            json!({"model": smol, "query": "a", "documents": ["b"]}),
            "not a reranker",
            false,
        ),
        (
            "/v1/embeddings",
            json!({"model": smol, "input": "a"}),
            "no embeddings",
            false,
        ),
        (
            "/v1/chat/completions",
            json!({"model": ranker, "messages": [{"role": "user", "content": "hi"}]}),
            "is a reranker",
            false,
        ),
        (
            "/v1/messages",
            json!({"model": embedder, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}),
            "embedding model",
            false,
        ),
        (
            "/v1/rerank",
            json!({"model": embedder, "query": "a", "documents": ["b"]}),
            "not a reranker",
            false,
        ),
        (
            "/api/chat",
            json!({"model": embedder, "messages": [{"role": "user", "content": "hi"}]}),
            "embedding model",
            true,
        ),
        (
            "/api/embed",
            json!({"model": ranker, "input": "a"}),
            "is a reranker",
            true,
        ),
    ] {
        let (s, v) = post(&h, path, body.clone()).await;
        assert_eq!(s, 400, "{path} {body} → {v}");
        let message = if ollama {
            v["error"].as_str()
        } else {
            v["error"]["message"].as_str()
        }
        .unwrap_or_else(|| panic!("{path}: not its family's shape: {v}"));
        assert!(message.contains(words), "{path}: {message}");
    }
    let (_, show) = post(&h, "/api/show", json!({"model": embedder})).await;
    assert_eq!(show["capabilities"], json!(["embedding"]), "{show}");
    let (_, workers) = get(&h, "/v1/workers").await;
    assert_eq!(
        workers["workers"],
        json!([]),
        "no worker was started: {workers}"
    );
}

/// A llama.cpp worker gets llama-server's own default parallelism, 4 slots on one KV
/// cache: 8 streaming clients at once are each answered whole, 4 at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_share_four_slots_of_one_worker() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    add(&h, &server, "cpu").await;
    let local = home.path().join("SmolLM2.gguf");
    fs_err::copy(&model, &local).unwrap();
    let id = import(&h, &local).await;
    assert_eq!(ask(&h, &id).await.0, 200, "warm");
    let (_, workers) = get(&h, "/v1/workers").await;
    assert_eq!(workers["workers"][0]["slots_total"], 4, "{workers}");
    let cmdline = fs_err::read(format!("/proc/{}/cmdline", workers["workers"][0]["pid"])).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let np = args
        .iter()
        .position(|a| a == "-np")
        .map(|i| args[i + 1].as_str());
    assert_eq!(np, Some("4"), "{args:?}");
    assert!(args.iter().any(|a| a == "--kv-unified"), "{args:?}");
    let url = format!("{}/v1/chat/completions", h.url);
    let streams = (0..8).map(|i| {
        let (url, id) = (url.clone(), id.clone());
        async move {
            let r = crate::client()
                .post(&url)
                .json(&json!({"model": id, "messages": [{"role": "user", "content": format!("Client {i}: name three colours.")}], "max_tokens": 16, "stream": true}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    for (status, body) in futures_util::future::join_all(streams).await {
        assert_eq!(status, 200, "{body}");
        assert!(body.trim_end().ends_with("data: [DONE]"), "whole: {body}");
    }
}

/// Twenty streaming clients at once on one model with a queue of 4: each is answered
/// whole or told 429 with Retry-After; no stream is lost, cut or mixed with another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_streams_at_once_are_answered_whole_or_told_to_retry() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &["--gateway-queue", "4"]);
    add(&h, &server, "cpu").await;
    let local = home.path().join("SmolLM2.gguf");
    fs_err::copy(&model, &local).unwrap();
    let id = import(&h, &local).await;
    assert_eq!(ask(&h, &id).await.0, 200, "warm");
    let url = format!("{}/openai/v1/chat/completions", h.url);
    let streams = (0..20).map(|i| {
        let (url, id) = (url.clone(), id.clone());
        async move {
            let r = crate::client()
                .post(&url)
                .json(&json!({"model": id, "messages": [{"role": "user", "content": format!("Client {i}: count to ten.")}], "max_tokens": 24, "stream": true}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            let body = r.text().await.unwrap();
            (status, retry, body)
        }
    });
    let results = futures_util::future::join_all(streams).await;
    let mut ids = std::collections::HashSet::new();
    let (mut answered, mut refused) = (0, 0);
    for (status, retry, body) in &results {
        match status {
            200 => {
                answered += 1;
                assert!(body.trim_end().ends_with("data: [DONE]"), "whole: {body}");
                let chunk_ids: std::collections::HashSet<String> = body
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .filter(|d| *d != "[DONE]")
                    .map(|d| serde_json::from_str::<Value>(d).unwrap()["id"].to_string())
                    .collect();
                assert_eq!(chunk_ids.len(), 1, "one answer per stream: {body}");
                assert!(
                    ids.insert(chunk_ids.into_iter().next().unwrap()),
                    "no two streams share an answer"
                );
            }
            429 => {
                refused += 1;
                assert!(retry, "429 carries Retry-After");
                assert!(body.contains("queue_full"), "{body}");
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert_eq!(answered + refused, 20);
    assert!(
        answered >= 5,
        "the slot and the queue were used: {answered}"
    );
    // those beyond the worker's slots waited in the hive, and the wait is counted
    let metrics = crate::get_text(&h, "/metrics").await;
    #[allow(clippy::cast_precision_loss)]
    let forwarded = (answered + 1) as f64;
    assert_eq!(
        metric(&metrics, "rbee_gateway_queue_wait_seconds_count"),
        forwarded,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "rbee_gateway_queue_wait_seconds_sum") > 0.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "rbee_gateway_time_to_first_token_seconds_count") >= forwarded - 1.0,
        "{metrics}"
    );
    // the server lets go of each stream just after its last byte went out
    crate::wait_for("no request in flight", async || {
        get(&h, "/v1/workers").await.1["workers"][0]["requests_in_flight"] == 0
    })
    .await;
}

/// A preset set with `PATCH /v1/models/{id}` is checked (a bad field, an engine that
/// is not installed, a taken alias: 4xx, nothing changed) and then used: its alias
/// names the model at both route families, its context and slots reach the
/// worker's command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_models_preset_is_checked_and_then_used_by_the_one_endpoint() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    add(&h, &server, "cpu").await;
    let (a, b) = (home.path().join("a.gguf"), home.path().join("b.gguf"));
    fs_err::copy(&model, &a).unwrap();
    fs_err::copy(&model, &b).unwrap();
    let (a, b) = (import(&h, &a).await, import(&h, &b).await);
    let patch = async |id: &str, body: Value| {
        let r = crate::client()
            .patch(format!("{}/v1/models/{}", h.url, crate::enc(id)))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    for (body, status, code) in [
        (json!({"engine": "rbee"}), 400, "engine_not_installed"),
        (
            json!({"engine_args": ["--port", "1"]}),
            400,
            "invalid_engine_args",
        ),
        (json!({"context": "big"}), 400, "invalid_preset"),
        (json!({"colour": "red"}), 400, "invalid_preset"),
    ] {
        let (s, v) = patch(&a, body.clone()).await;
        assert_eq!(s, status, "{body} → {v}");
        assert_eq!(v["error"]["code"], code, "{body} → {v}");
    }
    let (s, _) = patch("hf:no/such", json!({"pinned": true})).await;
    assert_eq!(s, 404);
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&a))).await;
    assert!(m.get("preset").is_none(), "nothing changed: {m}");

    let (s, v) = patch(
        &a,
        json!({"alias": "tiny:chat", "context": 2048, "slots": 2, "pinned": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["preset"]["context"], 2048);
    let (s, v) = patch(&b, json!({"alias": "tiny:chat"})).await;
    assert_eq!(s, 409, "{v}");
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&a))).await;
    assert_eq!(m["alias"], "tiny:chat", "{m}");

    let (s, v) = ask(&h, "tiny:chat").await;
    assert_eq!(s, 200, "{v}");
    let (_, tags) = get(&h, "/api/tags").await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"tiny:chat"), "{names:?}");
    let (_, list) = get(&h, "/v1/workers").await;
    let w = &list["workers"][0];
    assert_eq!(w["model_ref"], a.as_str());
    assert_eq!(w["slots_total"], 2, "{w}");
    let cmdline = fs_err::read(format!("/proc/{}/cmdline", w["pid"])).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    assert_eq!(after("-c").as_deref(), Some("2048"), "{args:?}");
    assert_eq!(after("-np").as_deref(), Some("2"), "{args:?}");
    // null clears
    let (s, v) = patch(
        &a,
        json!({"alias": null, "context": null, "slots": null, "pinned": null}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("preset").is_none(), "{v}");
}

/// Embeddings at both route families, from a llama.cpp worker the preset starts in
/// embedding mode (`--embeddings --pooling mean`): one vector per input, each as
/// long as the model's embedding length, the same text giving the same vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_come_from_a_worker_the_preset_starts_for_them() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let id = crate::engines::smollm2_on_llama(&h, home.path(), &server, &model).await;
    let r = crate::client()
        .patch(format!("{}/v1/models/{}", h.url, crate::enc(&id)))
        .json(&json!({"alias": "smol:embed", "engine_args": ["--embeddings", "--pooling", "mean"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&id))).await;
    let width = m["gguf"]["embedding_length"].as_u64().unwrap();
    assert_eq!(width, 576, "SmolLM2-135M's width: {m}");

    let (s, v) = post(
        &h,
        "/openai/v1/embeddings",
        json!({"model": "smol:embed", "input": ["a bee", "a hive", "a bee"]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{v}");
    let vectors: Vec<Vec<f64>> = data
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert!(vectors.iter().all(|e| e.len() as u64 == width), "{width}");
    assert_eq!(vectors[0], vectors[2], "the same text, the same vector");
    assert_ne!(vectors[0], vectors[1]);

    let (s, v) = post(
        &h,
        "/api/embed",
        json!({"model": "smol:embed", "input": "a bee"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 1, "{v}");
    assert_eq!(e[0].as_array().unwrap().len() as u64, width, "{v}");
    assert_eq!(v["model"], "smol:embed", "{v}");
    // Ollama's older route: one prompt, one vector, the same as /api/embed's
    let (s, old) = post(
        &h,
        "/api/embeddings",
        json!({"model": "smol:embed", "prompt": "a bee"}),
    )
    .await;
    assert_eq!(s, 200, "{old}");
    assert_eq!(old["embedding"], e[0], "{old}");
    let (s, empty) = post(
        &h,
        "/api/embeddings",
        json!({"model": "smol:embed", "prompt": ""}),
    )
    .await;
    assert_eq!((s, &empty["embedding"]), (200, &json!([])), "{empty}");
    // bad input, in each family's shape
    let (s, v) = post(&h, "/api/embed", json!({"model": "smol:embed", "input": 7})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].is_string(), "Ollama's shape: {v}");
    // started in embedding mode by its preset, it is an embedding model: a chat is
    // refused by the hive, not sent to a worker that answers 501
    let (s, v) = post(
        &h,
        "/openai/v1/chat/completions",
        json!({"model": "smol:embed", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedding model"),
        "{v}"
    );
    let (s, v) = post(
        &h,
        "/api/embeddings",
        json!({"model": "smol:embed", "prompt": [1]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].is_string(), "Ollama's shape: {v}");
    let (_, list) = get(&h, "/v1/workers").await;
    assert_eq!(
        list["workers"].as_array().unwrap().len(),
        1,
        "one worker: {list}"
    );
}

/// Our own worker sits behind the one endpoint too: a chat, a stream, and Ollama's
/// generate, with llm-worker-rbee the only engine installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_worker_answers_through_the_one_endpoint() {
    let Some(model) = smollm2() else { return };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let (s, b) = add(&h, &crate::engines::our_worker(), "cpu").await;
    assert_eq!(s, 200, "{b}");
    let id = import(&h, &model).await;
    let r = crate::client()
        .post(format!("{}/openai/v1/chat/completions", h.url))
        .json(&json!({"model": "smollm2-135m-instruct:q4_1", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 6, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    let (_, list) = get(&h, "/v1/workers").await;
    assert_eq!(list["workers"][0]["engine"], "rbee", "{list}");
    let text = crate::client()
        .post(format!("{}/openai/v1/completions", h.url))
        .json(&json!({"model": id, "prompt": "1, 2, 3,", "max_tokens": 6, "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let lines = crate::client()
        .post(format!("{}/api/generate", h.url))
        .json(&json!({"model": "smollm2-135m-instruct:q4_1", "prompt": "1, 2, 3,", "options": {"num_predict": 6, "temperature": 0}}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true, "{lines}");
    assert!(last["eval_count"].as_u64().unwrap() > 0, "{lines}");
    let (s, v) = post(
        &h,
        "/openai/v1/embeddings",
        json!({"model": id, "input": "x"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no embeddings"),
        "{v}"
    );
    // what only llama.cpp's server speaks is a 400 in the asker's own shape
    let (s, v) = post(
        &h,
        "/v1/messages",
        json!({"model": id, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("llama.cpp"),
        "{v}"
    );
    let (s, v) = post(&h, "/v1/responses", json!({"model": id, "input": "hi"})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "unsupported", "{v}");
    // a rerank without documents is refused before any worker
    let (s, v) = post(&h, "/v1/rerank", json!({"model": id, "query": "q"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("documents"),
        "{v}"
    );
    let (s, v) = post(
        &h,
        "/v1/messages",
        json!({"model": "nope", "max_tokens": 4, "messages": []}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (404, Some("not_found_error")),
        "{v}"
    );
}

/// OpenAI's routes at `/v1`, where the official clients look with
/// `base_url=http://127.0.0.1:7835/v1` (as with Ollama, LM Studio and llama-server):
/// the same answer as under `/openai/v1`, errors in OpenAI's shape; a route that does
/// not exist says which do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openais_routes_answer_at_v1_too() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let id = crate::engines::smollm2_on_llama(&h, home.path(), &server, &model).await;
    let body = json!({"model": id, "messages": [{"role": "user", "content": "Name a colour."}],
                      "max_tokens": 8, "temperature": 0});
    let (s, at_v1) = post(&h, "/v1/chat/completions", body.clone()).await;
    assert_eq!(s, 200, "{at_v1}");
    let (s, at_openai) = post(&h, "/openai/v1/chat/completions", body).await;
    assert_eq!(s, 200, "{at_openai}");
    assert_eq!(
        at_v1["choices"][0]["message"]["content"],
        at_openai["choices"][0]["message"]["content"]
    );
    let (s, v) = post(
        &h,
        "/v1/completions",
        json!({"model": id, "prompt": "1, 2, 3,", "max_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["choices"][0]["text"].is_string(), "{v}");
    let (s, v) = post(
        &h,
        "/v1/chat/completions",
        json!({"model": "no-such-model", "messages": []}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        v["error"]["type"], "invalid_request_error",
        "OpenAI's shape: {v}"
    );
    let (s, v) = post(&h, "/v1/messages-nope", json!({})).await;
    assert_eq!(s, 404);
    let said = v["error"]["message"].as_str().unwrap();
    assert!(
        said.contains("/v1/chat/completions") && said.contains("/api"),
        "{said}"
    );
}

/// Ollama's `/api/create` and `/api/copy` through the official client
/// (`tests/ollama_create.py`): a model made over SmolLM2 with a system prompt and
/// parameters answers as SmolLM2 does with that system prompt sent by hand, its copy
/// the same; neither copies the weights nor starts a worker of its own; what cannot
/// be honoured is refused and makes nothing; the base cannot go while they stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_made_over_another_answer_with_their_system_prompt_on_its_worker() {
    let (Some(server), Some(model), Some(python)) = (llama_server(), smollm2(), python()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let id = crate::engines::smollm2_on_llama(&h, home.path(), &server, &model).await;
    let files_before = gguf_files(&home.path().join("models")) + gguf_files(home.path());
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&id))).await;
    let alias = m["alias"].as_str().unwrap().to_owned();
    let seen = crate::python_script(&python, "ollama_create.py", &[&h.url, &alias]).await;
    assert_ne!(seen["prompt_tokens"][0], seen["prompt_tokens"][1], "{seen}");
    // every model made over it ran on its one worker, and no weight was copied
    assert_eq!(crate::workers_of(&h).await, 1);
    assert_eq!(
        gguf_files(&home.path().join("models")) + gguf_files(home.path()),
        files_before
    );
    let (_, audit) = get(&h, "/v1/audit").await;
    let ops: Vec<&str> = audit
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["operation"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        ops.contains(&"model_create") && ops.contains(&"model_copy"),
        "{audit}"
    );
    // the base goes once they are gone
    let (s, _) = crate::post(&h, "/v1/models/unload", json!({"id": id})).await;
    assert_eq!(s, 200);
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, crate::enc(&id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn gguf_files(dir: &std::path::Path) -> usize {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs_err::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
