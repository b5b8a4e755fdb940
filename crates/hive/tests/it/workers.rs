//! Worker binaries and worker processes: a real worker built from this workspace by
//! the local-build vendor, on a real model, real signals, `/proc` checked for leftovers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Hive, events, get, model_list, post, start, wait_for};

use hf_test_server::test_model as smollm2;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A hive whose local builds use the dev profile (the test build's own binary).
pub fn hive(home: &Path, extra: &[&str]) -> Hive {
    let mut args = vec![
        "--worker-build-profile",
        "dev",
        "--health-interval-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    let source = workspace();
    let source = source.to_str().unwrap();
    let mut all = vec!["--worker-source-dir", source];
    all.extend_from_slice(&args);
    start(home, "http://127.0.0.1:9", &all)
}

/// Runs a job to its end; returns its last (result or error) payload and state.
pub async fn finish(h: &Hive, job: &Value) -> (String, Value, Vec<(String, Value)>) {
    let id = job["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job: {job}"));
    let ev = events(h, id).await;
    let state = ev.last().unwrap().1["state"].as_str().unwrap().to_owned();
    let payload = ev
        .iter()
        .rev()
        .find(|(k, _)| k == "result" || k == "error")
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Null);
    (state, payload, ev)
}

/// Registers the worker this test run built (once, with the workspace) where it
/// lies, as `rbee worker-binaries add` does; a cargo build through the hive is
/// `a_cpu_worker_is_built_from_its_source_and_installed`'s, on a tiny crate.
async fn install_cpu_worker(h: &Hive) -> Value {
    let (status, result) = crate::engines::add(h, &crate::engines::our_worker(), "cpu").await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["status"]["state"], "available");
    result
}

pub async fn import(h: &Hive, path: &Path) -> String {
    let (status, job) = post(h, "/v1/models/import", json!({"path": path})).await;
    assert_eq!(status, 202, "{job}");
    let (state, result, ev) = finish(h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    result["id"].as_str().unwrap().to_owned()
}

async fn spawn(h: &Hive, model: &str) -> Value {
    let (status, job) = post(h, "/v1/workers/spawn", json!({"model": model})).await;
    assert_eq!(status, 202, "{job}");
    let (state, result, ev) = finish(h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    result
}

pub fn alive(pid: u64) -> bool {
    // A zombie is dead: it only waits to be reaped.
    fs_err::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Every process whose command line names this home (workers get model paths in it).
fn processes_under(home: &Path) -> Vec<u64> {
    let needle = home.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in fs_err::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        if let Ok(cmd) = fs_err::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(&needle)
            && String::from_utf8_lossy(&cmd).contains("llm-worker-rbee")
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

async fn wait_gone(home: &Path, what: &str) {
    wait_for(what, async || processes_under(home).is_empty()).await;
}

#[tokio::test]
async fn a_cpu_worker_is_built_from_its_source_and_installed() {
    let home = tempfile::tempdir().unwrap();
    let source = hf_test_server::tiny_worker_source(home.path());
    let h = start(
        home.path(),
        "http://127.0.0.1:9",
        &[
            "--worker-source-dir",
            source.to_str().unwrap(),
            "--worker-build-profile",
            "dev",
        ],
    );
    let (status, job) = post(&h, "/v1/worker-binaries/install", json!({"worker": "cpu"})).await;
    assert_eq!(status, 202, "{job}");
    let (state, binary, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    assert_eq!(binary["id"], "llm-worker-rbee-cpu-v0.1.0-linux");
    assert_eq!(binary["status"]["state"], "available");
    // built by cargo, counted in crates, installed in the hive's own folder
    assert!(
        ev.iter().any(|(k, v)| k == "step" && v["unit"] == "crates"),
        "{ev:?}"
    );
    let path = PathBuf::from(binary["path"].as_str().unwrap());
    assert!(path.starts_with(home.path().join("workers")), "{binary}");
    let out = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "llm-worker-rbee 0.1.0"
    );
    let (_, list) = get(&h, "/v1/worker-binaries").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn a_worker_serves_restarts_after_kill_9_and_stops_cleanly() {
    let Some(model) = smollm2() else { return };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);

    // Nothing installed yet: spawning says what to do.
    let model_id = import(&h, &model).await;
    let (status, v) = post(&h, "/v1/workers/spawn", json!({"model": model_id})).await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("worker-binaries install cpu"),
        "{v}"
    );

    let binary = install_cpu_worker(&h).await;
    assert_eq!(binary["id"], "llm-worker-rbee-cpu-v0.1.0-linux");
    let (_, list) = get(&h, "/v1/worker-binaries").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let worker = spawn(&h, &model_id).await;
    assert_eq!(worker["state"], "ready");
    let url = worker["url"].as_str().unwrap().to_owned();
    let pid = worker["pid"].as_u64().unwrap();
    let id = worker["id"].as_str().unwrap().to_owned();

    // A completion through the worker's own URL, with its own key; none is refused.
    let key = crate::worker_key(&worker);
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(&json!({"prompt": "x", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a request without the worker's key");
    let v: Value = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["choices"][0]["text"].as_str().unwrap().contains("Paris"),
        "{v}"
    );

    // Its heartbeats arrive.
    wait_for("a heartbeat", async || {
        get(&h, &format!("/v1/workers/{id}")).await.1["last_heartbeat"].is_string()
    })
    .await;

    // A model in use cannot be deleted.
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, crate::enc(&model_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // kill -9: the hive starts it again.
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the restart", async || {
        let w = get(&h, &format!("/v1/workers/{id}")).await.1;
        w["state"] == "ready" && w["pid"].as_u64() != Some(pid)
    })
    .await;
    eprintln!("restarted and ready {:?} after kill -9", killed.elapsed());
    let w = get(&h, &format!("/v1/workers/{id}")).await.1;
    assert_eq!(w["restart_count"], 1);
    assert!(w["reason"].as_str().unwrap().contains("SIGKILL"), "{w}");
    assert_eq!(
        w["url"].as_str(),
        Some(url.as_str()),
        "a restarted worker keeps its URL: {w}"
    );
    let r = crate::client()
        .post(format!("{url}/v1/completions"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the URL printed at spawn still answers");
    assert!(!alive(pid));
    let metrics = crate::get_text(&h, "/metrics").await;
    assert!(
        metrics.contains("rbee_worker_restarts_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rbee_workers{state=\"ready\"} 1"),
        "{metrics}"
    );

    // Its log is served.
    let log = crate::client()
        .get(format!("{}/v1/workers/{id}/logs", h.url))
        .send()
        .await
        .unwrap();
    assert!(log.headers().contains_key("x-log-offset"));
    assert!(log.text().await.unwrap().contains("listening on"));

    // Stop: the process is gone, the model can go.
    let new_pid = w["pid"].as_u64().unwrap();
    let r = crate::client()
        .delete(format!("{}/v1/workers/{id}", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!alive(new_pid));
    assert!(processes_under(home.path()).is_empty());
    let (_, list) = get(&h, "/v1/workers").await;
    assert_eq!(list["workers"].as_array().unwrap().len(), 0);
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, crate::enc(&model_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_worker_that_keeps_dying_is_given_up_with_the_reason() {
    let home = tempfile::tempdir().unwrap();
    let h = hive(
        home.path(),
        &["--max-restarts", "2", "--restart-backoff-ms", "50"],
    );
    install_cpu_worker(&h).await;
    // An architecture our worker does not run is refused before anything starts.
    let gemma = home.path().join("gemma.gguf");
    fs_err::write(&gemma, crate::fixture("gemma-q8_0-align64.gguf")).unwrap();
    let gemma_id = import(&h, &gemma).await;
    let (status, v) = post(&h, "/v1/workers/spawn", json!({"model": gemma_id})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "unsupported_architecture", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("llama.cpp does"),
        "{v}"
    );
    assert_eq!(get(&h, "/v1/workers").await.1["workers"], json!([]));
    // A llama GGUF the catalog took whole, cut short afterwards: every start fails.
    let bad = home.path().join("llama.gguf");
    let whole = crate::fixture("llama-q4_0.gguf");
    fs_err::write(&bad, &whole).unwrap();
    let model_id = import(&h, &bad).await;
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&model_id))).await;
    fs_err::OpenOptions::new()
        .write(true)
        .open(m["path"].as_str().unwrap())
        .unwrap()
        .set_len(whole.len() as u64 - 100)
        .unwrap();
    let (status, job) = post(&h, "/v1/workers/spawn", json!({"model": model_id})).await;
    assert_eq!(status, 202);
    let (state, error, ev) = finish(&h, &job).await;
    assert_eq!(state, "failed", "{ev:?}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("gave up after 2 restarts"), "{message}");
    assert!(message.contains("tensor data is truncated"), "{message}");
    let restarts = ev
        .iter()
        .filter(|(_, v)| v["action"] == "restarting")
        .count();
    assert_eq!(restarts, 2, "{ev:?}");
    let (_, list) = get(&h, "/v1/workers").await;
    let w = &list["workers"][0];
    assert_eq!(w["state"], "failed");
    assert_eq!(w["restart_count"], 2);
    assert!(processes_under(home.path()).is_empty());
}

#[tokio::test]
async fn bad_spawn_requests_are_4xx() {
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    for (body, status) in [
        (json!({"model": "nope"}), 404),
        (json!({"model": "x", "worker": "tpu"}), 400),
        (json!({"model": "x", "device": 3}), 400),
        (json!({"model": 5}), 422),
        (json!({"model": "x", "engine": "vllm"}), 400),
        (json!({"model": "x", "engine_args": "--port 9"}), 422),
        (json!({"mdl": "x"}), 422),
    ] {
        let (s, v) = post(&h, "/v1/workers/spawn", body.clone()).await;
        assert_eq!(s, status, "{body} → {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let (s, v) = post(
        &h,
        "/v1/worker-binaries/install",
        json!({"worker": "cpu", "source": "https://example.invalid/llm-worker-rbee-cpu-v1.0.0-linux.tar.gz"}),
    )
    .await;
    assert_eq!(s, 400, "a release needs its sha256: {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("sha256"),
        "{v}"
    );
    let r = crate::client()
        .delete(format!("{}/v1/workers/worker-00000000", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = crate::client()
        .get(format!("{}/v1/workers/..%2F..%2Fetc/logs", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// SIGTERM to the hive stops every worker, in bounded time even when one does not
/// answer SIGTERM: the worker here is stopped (SIGSTOP), so its SIGTERM stays
/// pending, as with a llama-server that hangs in its signal handler; the hive's exit
/// does not wait out the long `--worker-stop-grace-secs`.
#[tokio::test]
async fn sigterm_to_the_hive_stops_every_worker() {
    let Some(model) = smollm2() else { return };
    let home = tempfile::tempdir().unwrap();
    let mut h = hive(
        home.path(),
        &[
            "--worker-stop-grace-secs",
            "60",
            "--shutdown-grace-secs",
            "1",
        ],
    );
    install_cpu_worker(&h).await;
    let model_id = import(&h, &model).await;
    let pid = spawn(&h, &model_id).await["pid"].as_u64().unwrap();
    assert!(alive(pid));
    let worker = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(worker, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(h.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = h.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the hive did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(20),
        "the hive waited out its worker's 60s grace: {took:?}"
    );
    assert!(!alive(pid), "the worker outlived the hive");
    assert!(processes_under(home.path()).is_empty());
}

#[tokio::test]
async fn kill_9_of_the_hive_leaves_no_worker_and_a_restart_is_clean() {
    let Some(model) = smollm2() else { return };
    let home = tempfile::tempdir().unwrap();
    let mut h = hive(home.path(), &[]);
    install_cpu_worker(&h).await;
    let model_id = import(&h, &model).await;
    let pid = spawn(&h, &model_id).await["pid"].as_u64().unwrap();
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    wait_for("the worker to die with its hive", async || !alive(pid)).await;
    wait_gone(home.path(), "no worker left").await;
    drop(h);

    // The next start finds the record of what ran and nothing to reap; it serves.
    let h = hive(home.path(), &[]);
    let (status, list) = get(&h, "/v1/workers").await;
    assert_eq!(status, 200);
    assert_eq!(list["workers"].as_array().unwrap().len(), 0);
    let record = fs_err::read_to_string(home.path().join("run/workers.json")).unwrap();
    assert_eq!(record.trim(), "[]");
    assert!(processes_under(home.path()).is_empty());
}

#[tokio::test]
async fn a_taken_port_is_skipped() {
    let Some(model) = smollm2() else { return };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let Some(end) = port.checked_add(50) else {
        return;
    };
    let range = format!("{port}-{end}");
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &["--worker-ports", &range]);
    install_cpu_worker(&h).await;
    let model_id = import(&h, &model).await;
    let w = spawn(&h, &model_id).await;
    let got = u16::try_from(w["port"].as_u64().unwrap()).unwrap();
    assert_ne!(got, port);
    assert!((port..=end).contains(&got), "{got} outside {range}");
    drop(taken);
}

#[tokio::test]
async fn the_hive_announces_itself_with_backoff_and_streams_heartbeats() {
    use std::sync::{Arc, Mutex};
    // An orchestrator that refuses the first two announcements.
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new().route(
        "/v1/hives/announce",
        axum::routing::post({
            let seen = Arc::clone(&seen);
            move |axum::Json(body): axum::Json<Value>| {
                let seen = Arc::clone(&seen);
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push(body);
                    if seen.len() <= 2 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let queen = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &["--queen-url", &queen]);
    wait_for("three announcements", async || {
        seen.lock().unwrap().len() >= 3
    })
    .await;
    let last = seen.lock().unwrap()[2].clone();
    assert_eq!(last["url"], h.url.as_str(), "the URL it really listens on");
    assert!(
        last["capabilities"]["cpu"]["logical_cores"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(last["capabilities"]["gpus"].is_array());

    // The heartbeat stream: hive telemetry and the (empty) worker list.
    let r = crate::client()
        .get(format!("{}/v1/heartbeats/stream", h.url))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = futures_util::StreamExt::boxed(r.bytes_stream());
    let mut text = String::new();
    let data = loop {
        let chunk = futures_util::StreamExt::next(&mut stream)
            .await
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(i) = text.find("event: heartbeat\ndata: ") {
            let rest = &text[i + "event: heartbeat\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                break serde_json::from_str::<Value>(&rest[..end]).unwrap();
            }
        }
    };
    assert_eq!(data["hive"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(data["workers"], json!([]));
}

#[tokio::test]
async fn spawning_a_reference_pulls_it_first_in_the_same_job() {
    let Some(model) = smollm2() else { return };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    install_cpu_worker(&h).await;
    let reference = format!("file:{}", model.display());
    let (status, v) = post(
        &h,
        "/v1/workers/spawn",
        json!({"model": reference, "pull": false}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    let models = model_list(&h).await;
    assert_eq!(models, json!([]), "a refused spawn records nothing");

    let (status, job) = post(&h, "/v1/workers/spawn", json!({"model": reference})).await;
    assert_eq!(status, 202, "{job}");
    let (state, worker, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    let actions: Vec<&str> = ev
        .iter()
        .filter_map(|(_, v)| v["action"].as_str())
        .collect();
    let pull = actions.iter().position(|a| *a == "pull").unwrap();
    let ready = actions.iter().position(|a| *a == "ready").unwrap();
    assert!(pull < ready, "{actions:?}");
    assert_eq!(worker["state"], "ready");
    let models = model_list(&h).await;
    assert_eq!(models[0]["status"]["state"], "available");
    assert_eq!(worker["model_ref"], models[0]["id"]);
}

#[tokio::test]
async fn load_reuses_a_worker_unload_stops_it_and_an_idle_ttl_ends_it() {
    let Some(model) = smollm2() else { return };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    install_cpu_worker(&h).await;
    let model_id = import(&h, &model).await;

    let load = async |body: Value| {
        let (status, job) = post(&h, "/v1/models/load", body).await;
        assert_eq!(status, 202, "{job}");
        let (state, worker, ev) = finish(&h, &job).await;
        assert_eq!(state, "completed", "{ev:?}");
        worker
    };
    let first = load(json!({"id": model_id})).await;
    let again = load(json!({"id": model_id})).await;
    assert_eq!(
        first["id"], again["id"],
        "a second load finds the same worker"
    );
    let (status, v) = post(&h, "/v1/models/unload", json!({"id": model_id})).await;
    assert_eq!(status, 200);
    assert_eq!(v["stopped"], json!([first["id"]]));
    assert!(!alive(first["pid"].as_u64().unwrap()));
    let (_, v) = post(&h, "/v1/models/unload", json!({"id": model_id})).await;
    assert_eq!(
        v["stopped"],
        json!([]),
        "unloading what is not loaded is no error"
    );

    // An idle TTL: with no request for 2 s the worker goes by itself. A load with a
    // TTL on a model that already has a worker gives that worker the new TTL.
    let w = load(json!({"id": model_id})).await;
    assert_eq!(w["idle_ttl_secs"], Value::Null);
    let (status, job) = post(
        &h,
        "/v1/models/load",
        json!({"id": model_id, "idle_ttl_secs": 2}),
    )
    .await;
    assert_eq!(status, 202);
    let (_, w2, ev) = finish(&h, &job).await;
    assert_eq!(w2["id"], w["id"], "the same worker");
    assert_eq!(w2["idle_ttl_secs"], 2, "{w2}");
    assert!(
        ev.iter().any(|(k, d)| k == "narration"
            && d["message"]
                .as_str()
                .unwrap()
                .contains("idle TTL is now 2s (was none)")),
        "{ev:?}"
    );
    let pid = w["pid"].as_u64().unwrap();
    wait_for("the idle worker to go", async || {
        get(&h, "/v1/workers").await.1["workers"] == json!([])
    })
    .await;
    wait_for("its process to end", async || !alive(pid)).await;
    assert!(processes_under(home.path()).is_empty());
}
