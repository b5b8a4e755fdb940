//! Worker binaries registered where they lie (`worker-binaries add`), and the
//! llama.cpp engine: a real `llama-server` spawned and supervised by the hive.
//!
//! The llama.cpp tests need a built `llama-server` (`scripts/fetch-llama-server.sh`
//! builds one into `~/.cache/rbee-test`, or set `RBEE_LLAMA_SERVER`); without one
//! they say so and skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::workers::{alive, finish, hive, import};
use crate::{Hive, get, post, wait_for};

use hf_test_server::test_model as smollm2;

/// The `llm-worker-rbee` the workspace build made beside `rbee-hive`.
pub(crate) fn our_worker() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rbee-hive")).with_file_name("llm-worker-rbee")
}

/// Where the fetch scripts keep what the tests need.
fn test_cache() -> Option<PathBuf> {
    std::env::var_os("RBEE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(Path::new(&std::env::var_os("HOME")?).join(".cache/rbee-test")))
}

/// What a llama.cpp test needs, when this machine has it; with
/// `RBEE_REQUIRE_LLAMA_TESTS=1` (as CI sets) a missing one fails the test.
fn required(what: &str, found: Option<PathBuf>, how: &str) -> Option<PathBuf> {
    let found = found.filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("RBEE_REQUIRE_LLAMA_TESTS").is_none(),
            "{what} is missing: {how}"
        );
        eprintln!("skipped: no {what} ({how})");
    }
    found
}

/// A built `llama-server`.
pub(crate) fn llama_server() -> Option<PathBuf> {
    let found = std::env::var_os("RBEE_LLAMA_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            Some(test_cache()?.join("llama.cpp-0.3.36/src/build-rbee-cpu/bin/llama-server"))
        });
    required(
        "llama-server",
        found,
        "scripts/fetch-llama-server.sh builds one",
    )
}

/// Gemma 3 270M, an architecture our own worker does not run.
pub(crate) fn gemma() -> Option<PathBuf> {
    let found = test_cache().map(|d| d.join("gemma-3-270m-q4_k_m.gguf"));
    required("Gemma 3 270M", found, "scripts/fetch-gemma.sh fetches it")
}

/// llama-server added, and SmolLM2 imported from a copy in the home: the model's id.
pub(crate) async fn smollm2_on_llama(h: &Hive, home: &Path, server: &Path, model: &Path) -> String {
    add(h, server, "cpu").await;
    let local = home.join("SmolLM2.gguf");
    fs_err::copy(model, &local).unwrap();
    import(h, &local).await
}

pub(crate) async fn add(h: &Hive, path: &Path, worker: &str) -> (u16, Value) {
    let (status, v) = post(
        h,
        "/v1/worker-binaries/install",
        json!({"worker": worker, "source": format!("file:{}", path.display())}),
    )
    .await;
    if status != 202 {
        return (status, v);
    }
    let (state, result, ev) = finish(h, &v).await;
    assert_eq!(state, "completed", "{ev:?}");
    (200, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_on_this_machine_are_found_at_start() {
    let Some(server) = llama_server() else { return };
    let home = tempfile::tempdir().unwrap();
    // a hive beside our worker (as the workspace build leaves it), llama-server named
    // by LLAMA_SERVER, as a user of llama.cpp sets it
    let found = |llama: &Path| {
        let mut c = crate::hive_cmd(home.path(), "http://127.0.0.1:9", &[]);
        c.env_remove("RBEE_NO_FIND_ENGINES")
            .env("LLAMA_SERVER", llama);
        crate::spawn_hive(c)
    };
    let h = found(&server);
    let (_, list) = get(&h, "/v1/worker-binaries").await;
    let mut seen: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["engine"].as_str().unwrap().to_owned(),
                b["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("llama.cpp".to_owned(), server.display().to_string()),
            ("rbee".to_owned(), our_worker().display().to_string()),
        ],
        "{list}"
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"]["state"] == "available"),
        "{list}"
    );
    drop(h);
    // a home with binaries finds nothing more; a LLAMA_SERVER that is not llama.cpp's
    // server is said and skipped, and the hive starts anyway
    let scratch = tempfile::tempdir().unwrap();
    let other = scratch.path().join("llama-server");
    fs_err::write(&other, "#!/bin/sh\necho 'other-tool 1.2.3'\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let h = found(&other);
    let (_, again) = get(&h, "/v1/worker-binaries").await;
    assert_eq!(again.as_array().unwrap().len(), 2, "{again}");
    drop(h);
    let fresh = tempfile::tempdir().unwrap();
    let mut c = crate::hive_cmd(fresh.path(), "http://127.0.0.1:9", &[]);
    c.env_remove("RBEE_NO_FIND_ENGINES")
        .env("LLAMA_SERVER", &other);
    let h = crate::spawn_hive(c);
    let (_, only_ours) = get(&h, "/v1/worker-binaries").await;
    let engines: Vec<&str> = only_ours
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["engine"].as_str())
        .collect();
    assert_eq!(engines, vec!["rbee"], "{only_ours}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_binary_is_registered_where_it_lies_and_bad_ones_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let worker = our_worker();
    assert!(
        worker.is_file(),
        "{} is built with the workspace",
        worker.display()
    );

    // Bad ones: a clear 4xx, nothing recorded.
    let scratch = tempfile::tempdir().unwrap();
    let failing = scratch.path().join("fails");
    fs_err::write(&failing, "#!/bin/sh\necho 'no such option' >&2\nexit 3\n").unwrap();
    let other = scratch.path().join("other");
    fs_err::write(&other, "#!/bin/sh\necho 'other-tool 1.2.3'\n").unwrap();
    for f in [&failing, &other] {
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (path, status, words) in [
        (PathBuf::from("relative/llama-server"), 400, "absolute"),
        (scratch.path().join("missing"), 404, "missing"),
        (scratch.path().to_path_buf(), 400, "not a file"),
        (failing.clone(), 400, "failed (exit status: 3)"),
        (
            other.clone(),
            400,
            "does not name llm-worker-rbee or llama.cpp",
        ),
    ] {
        let (s, v) = post(
            &h,
            "/v1/worker-binaries/install",
            json!({"worker": "cpu", "source": format!("file:{}", path.display())}),
        )
        .await;
        assert_eq!(s, status, "{} → {v}", path.display());
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{} → {v}", path.display());
    }
    assert_eq!(get(&h, "/v1/worker-binaries").await.1, json!([]));

    // Our own worker, as the README's build left it: recorded in place, hashed.
    let copy = scratch.path().join("llm-worker-rbee");
    fs_err::copy(&worker, &copy).unwrap();
    let (s, b) = add(&h, &copy, "cpu").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["id"], "llm-worker-rbee-cpu-v0.1.0-linux");
    assert_eq!(b["engine"], "rbee");
    assert_eq!(b["path"], copy.display().to_string());
    assert_eq!(b["source"], format!("file:{}", copy.display()));
    assert_eq!(b["sha256"].as_str().unwrap().len(), 64);
    assert!(
        fs_err::read_dir(home.path().join("workers"))
            .unwrap()
            .next()
            .is_none(),
        "nothing copied into the home"
    );

    // A file that changed after it was added is not run.
    if let Some(model) = smollm2() {
        let model_id = import(&h, &model).await;
        let mut bytes = fs_err::read(&copy).unwrap();
        bytes.push(0);
        fs_err::write(&copy, bytes).unwrap();
        let (s, v) = post(&h, "/v1/workers/spawn", json!({"model": model_id})).await;
        assert_eq!(s, 409, "{v}");
        assert_eq!(v["error"]["code"], "binary_changed", "{v}");
    }

    // Removing it forgets it; the file stays.
    let r = crate::client()
        .delete(format!(
            "{}/v1/worker-binaries/llm-worker-rbee-cpu-v0.1.0-linux",
            h.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(copy.is_file());
    assert_eq!(get(&h, "/v1/worker-binaries").await.1, json!([]));
}

/// Every live `llama-server` whose command line names this home.
pub(crate) fn llama_servers_under(home: &Path) -> Vec<u64> {
    let needle = home.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in fs_err::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        if let Ok(cmd) = fs_err::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains(&needle) && cmd.contains("llama-server") && alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

async fn complete(url: &str, key: Option<&str>, prompt: &str) -> String {
    let mut r = crate::client().post(format!("{url}/v1/completions"));
    if let Some(key) = key {
        r = r.bearer_auth(key);
    }
    let r = r
        .json(&json!({"prompt": prompt, "max_tokens": 16, "temperature": 0, "seed": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["choices"][0]["text"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama_server_worker_answers_as_the_same_binary_by_hand_and_leaves_nothing() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    // secrets in the hive's environment, which no worker may inherit
    let mut c = crate::hive_cmd(home.path(), "http://127.0.0.1:9", &[]);
    c.env("RBEE_OCI_PASSWORD", "hive-secret-oci-5a")
        .env("HF_TOKEN", "hf_hive_secret_5a");
    let h = crate::spawn_hive(c);
    let (s, b) = add(&h, &server, "cpu").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["engine"], "llama.cpp");
    assert!(
        b["id"].as_str().unwrap().starts_with("llama-server-cpu-"),
        "{b}"
    );
    // the model sits in the home, so its path marks the worker's command line
    let local = home.path().join("SmolLM2.gguf");
    fs_err::copy(&model, &local).unwrap();
    let model_id = import(&h, &local).await;

    // extra arguments may not change what the hive sets
    for bad in [
        json!(["--port", "9"]),
        json!(["--host=0.0.0.0"]),
        json!(["-m", "/etc/passwd"]),
        json!(["--api-key", "x"]),
    ] {
        let (s, v) = post(
            &h,
            "/v1/workers/spawn",
            json!({"model": model_id, "engine_args": bad}),
        )
        .await;
        assert_eq!(s, 400, "{bad} → {v}");
        assert_eq!(v["error"]["code"], "invalid_engine_args", "{v}");
    }
    let (s, v) = post(
        &h,
        "/v1/workers/spawn",
        json!({"model": model_id, "engine": "rbee", "engine_args": ["--temp", "1"]}),
    )
    .await;
    assert_eq!(s, 404, "no rbee binary here: {v}");
    assert_eq!(get(&h, "/v1/workers").await.1["workers"], json!([]));

    // llama.cpp is the default engine once installed
    let (status, job) = post(
        &h,
        "/v1/workers/spawn",
        json!({"model": model_id, "threads": 2}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let (state, w, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    assert_eq!(w["engine"], "llama.cpp", "{w}");
    let url = w["url"].as_str().unwrap().to_owned();
    let prompt = "The capital of France is";
    // straight to the worker: it takes only its own key, which only its user can read
    let key = crate::worker_key(&w);
    let r = crate::client()
        .post(format!("{url}/v1/completions"))
        .json(&json!({"prompt": prompt, "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a request without the worker's key");
    let environ = fs_err::read(format!("/proc/{}/environ", w["pid"])).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for secret in ["RBEE_API_TOKEN", "hive-secret-oci-5a", "hf_hive_secret_5a"] {
        assert!(
            !environ.contains(secret),
            "{secret} in a worker's environment"
        );
    }
    let cmdline = fs_err::read(format!("/proc/{}/cmdline", w["pid"])).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&key),
        "the key is not on its command line"
    );
    let through_hive = complete(&url, Some(&key), prompt).await;

    // the same binary by hand, the same command line but the port
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut by_hand = Command::new(&server)
        .args(["-m", local.to_str().unwrap(), "--host", "127.0.0.1"])
        .args([
            "--port",
            &port.to_string(),
            "-c",
            "4096",
            "-t",
            "2",
            "-tb",
            "2",
        ])
        // llama-server's own default slots: auto, 4 on a unified KV cache
        .args(["--alias", &model_id, "--metrics", "--jinja", "-ngl", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hand_url = format!("http://127.0.0.1:{port}");
    wait_for("llama-server by hand", async || {
        crate::client()
            .get(format!("{hand_url}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let by_hand_text = complete(&hand_url, None, prompt).await;
    by_hand.kill().unwrap();
    by_hand.wait().unwrap();
    assert_eq!(through_hive, by_hand_text);
    assert!(!through_hive.is_empty());

    // kill -9: restarted on the same port, answering again
    let pid = w["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let id = w["id"].as_str().unwrap().to_owned();
    wait_for("the restart", async || {
        let w = get(&h, &format!("/v1/workers/{id}")).await.1;
        w["state"] == "ready" && w["pid"].as_u64() != Some(pid)
    })
    .await;
    let again = get(&h, &format!("/v1/workers/{id}")).await.1;
    assert_eq!(again["url"].as_str(), Some(url.as_str()));
    assert_eq!(complete(&url, Some(&key), prompt).await, through_hive);

    // what it reports reaches the worker's record and the hive's metrics
    wait_for("its speed from /metrics", async || {
        let w = get(&h, &format!("/v1/workers/{id}")).await.1;
        w["slots_total"] == 4 && w["tokens_per_second"].as_f64().is_some_and(|t| t > 0.0)
    })
    .await;
    let metrics = crate::get_text(&h, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rbee_worker_tokens_per_second{")
                && l.contains("engine=\"llama.cpp\"")),
        "{metrics}"
    );

    // an idle TTL ends it as it ends ours
    let (s, job) = post(
        &h,
        "/v1/models/load",
        json!({"id": model_id, "idle_ttl_secs": 2}),
    )
    .await;
    assert_eq!(s, 202);
    let (_, w2, _) = finish(&h, &job).await;
    assert_eq!(
        (w2["id"].as_str(), &w2["idle_ttl_secs"]),
        (Some(id.as_str()), &json!(2))
    );
    wait_for("the idle worker to go", async || {
        get(&h, "/v1/workers").await.1["workers"] == json!([])
    })
    .await;
    wait_for("its process to end", async || {
        llama_servers_under(home.path()).is_empty()
    })
    .await;

    // a load starts one again; unload stops it; nothing is left
    let (s, job) = post(&h, "/v1/models/load", json!({"id": model_id})).await;
    assert_eq!(s, 202);
    let (state, w3, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    let (s, v) = post(&h, "/v1/models/unload", json!({"id": model_id})).await;
    assert_eq!((s, &v["stopped"]), (200, &json!([w3["id"]])));
    wait_for("no llama-server left", async || {
        llama_servers_under(home.path()).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_hive_stops_its_llama_servers() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let mut h = hive(home.path(), &[]);
    add(&h, &server, "cpu").await;
    let local = home.path().join("SmolLM2.gguf");
    fs_err::copy(&model, &local).unwrap();
    let model_id = import(&h, &local).await;
    let (_, job) = post(
        &h,
        "/v1/workers/spawn",
        json!({"model": model_id, "engine": "llama.cpp"}),
    )
    .await;
    let (state, w, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    assert!(alive(w["pid"].as_u64().unwrap()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(h.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(h.child.wait().unwrap().success());
    assert!(llama_servers_under(home.path()).is_empty());
}

/// SIGTERM while a long generation streams: the stream ends with an error event that
/// says the hive is stopping, the hive is gone within its grace and a few seconds, and
/// no worker is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_stream_ends_it_and_exits_in_bounded_time() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let grace = 2;
    let mut h = hive(home.path(), &["--shutdown-grace-secs", &grace.to_string()]);
    let model_id = smollm2_on_llama(&h, home.path(), &server, &model).await;
    // 30,000 tokens would take many minutes here
    let mut r = crate::client()
        .post(format!("{}/openai/v1/completions", h.url))
        .json(
            &json!({"model": model_id, "prompt": "Once upon a time", "max_tokens": 30000,
                      "ignore_eos": true, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut seen = String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()).into_owned();
    let signalled = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(h.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    while let Ok(Some(chunk)) = r.chunk().await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let status = h.child.wait().unwrap();
    let took = signalled.elapsed();
    eprintln!("the hive exited {took:?} after SIGTERM, with {grace}s of grace");
    assert!(status.success(), "{status}");
    assert!(took < std::time::Duration::from_secs(grace + 5), "{took:?}");
    assert!(
        seen.contains("the hive is stopping"),
        "the stream's last event: {}",
        &seen[seen.len().saturating_sub(400)..]
    );
    assert!(
        llama_servers_under(home.path()).is_empty(),
        "no worker left"
    );
}

/// The README's path for a model our worker cannot run: add llama-server, import
/// the Gemma file, spawn it (llama.cpp by default), ask it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemma_runs_on_llama_cpp_and_answers() {
    let (Some(server), Some(model)) = (llama_server(), gemma()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let local = home.path().join("gemma.gguf");
    fs_err::copy(&model, &local).unwrap();
    let model_id = import(&h, &local).await;
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&model_id))).await;
    assert_eq!(m["gguf"]["architecture"], "gemma3", "{m}");
    // without llama.cpp: refused, not a crash loop
    let (s, v) = post(&h, "/v1/workers/spawn", json!({"model": model_id})).await;
    assert_eq!(s, 404, "no worker binary at all yet: {v}");
    let (s, b) = add(&h, &server, "cpu").await;
    assert_eq!(s, 200, "{b}");
    let (status, job) = post(&h, "/v1/workers/spawn", json!({"model": model_id})).await;
    assert_eq!(status, 202, "{job}");
    let (state, w, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    // the file is the base model, with no chat template: a completion, which a
    // model of 270M parameters continues on the subject
    let text = complete(
        w["url"].as_str().unwrap(),
        Some(&crate::worker_key(&w)),
        "The capital of France is",
    )
    .await;
    assert!(text.contains("France"), "{text:?}");
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": model_id})).await;
    assert_eq!(s, 200);
    wait_for("no llama-server left", async || {
        llama_servers_under(home.path()).is_empty()
    })
    .await;
}

/// The README's path from source: the hive builds llama-server from a llama.cpp tree
/// with cmake (the tree the fetch script built, so nothing is left to compile), then
/// Gemma is imported, spawned on it, and answers a chat completion. Bad installs
/// first: each a clear 4xx, nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_server_built_by_the_hive_from_source_serves_gemma() {
    let (Some(server), Some(model)) = (llama_server(), gemma()) else {
        return;
    };
    let build_dir = server.parent().unwrap().parent().unwrap();
    let tree = build_dir.parent().unwrap();
    let Ok(args) = fs_err::read_to_string(build_dir.join("rbee-cmake-args")) else {
        assert!(
            std::env::var_os("RBEE_REQUIRE_LLAMA_TESTS").is_none(),
            "{} is not a tree built by scripts/fetch-llama-server.sh",
            tree.display()
        );
        return;
    };
    let cmake_args: Vec<&str> = args.lines().collect();
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let empty = tempfile::tempdir().unwrap();
    for (body, status, words) in [
        (json!({"worker": "llama.cpp:cpu"}), 400, "source tree"),
        (
            json!({"worker": "llama.cpp:cpu", "source": empty.path()}),
            404,
            "no CMakeLists.txt",
        ),
        (
            json!({"worker": "rbee:vulkan", "source": "local"}),
            400,
            "no vulkan build",
        ),
        (
            json!({"worker": "llama.cpp:tpu", "source": tree}),
            400,
            "tpu",
        ),
        (
            json!({"worker": "llama.cpp:cpu", "source": tree, "cmake_args": ["--fresh"]}),
            400,
            "-DNAME=VALUE",
        ),
    ] {
        let (s, v) = post(&h, "/v1/worker-binaries/install", body.clone()).await;
        assert_eq!(s, status, "{body} → {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{body} → {v}");
    }
    assert_eq!(get(&h, "/v1/worker-binaries").await.1, json!([]));

    let (s, job) = post(
        &h,
        "/v1/worker-binaries/install",
        json!({"worker": "llama.cpp:cpu", "source": tree, "cmake_args": cmake_args}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let (state, b, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    assert_eq!(b["engine"], "llama.cpp", "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("llama-server-cpu-v"), "{b}");
    assert!(
        b["path"]
            .as_str()
            .unwrap()
            .starts_with(&home.path().display().to_string()),
        "installed into the home: {b}"
    );
    let said = format!("{ev:?}");
    assert!(
        said.contains("cmake -S"),
        "the configure line is narrated: {said}"
    );
    // the placeholder it was recorded under while building is gone
    let all = get(&h, "/v1/worker-binaries").await.1;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["id"], id.as_str());

    let local = home.path().join("gemma.gguf");
    fs_err::copy(&model, &local).unwrap();
    let model_id = import(&h, &local).await;
    let (status, job) = post(&h, "/v1/workers/spawn", json!({"model": model_id})).await;
    assert_eq!(status, 202, "{job}");
    let (state, w, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    assert_eq!(w["engine"], "llama.cpp", "{w}");
    assert_eq!(w["binary_id"], id.as_str(), "{w}");
    let r = crate::client()
        .post(format!(
            "{}/v1/chat/completions",
            w["url"].as_str().unwrap()
        ))
        .bearer_auth(crate::worker_key(&w))
        .json(&json!({
            "model": model_id,
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": 8,
            "temperature": 0
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["choices"][0]["message"]["content"].is_string(),
        "an answer: {v}"
    );
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": model_id})).await;
    assert_eq!(s, 200);
    wait_for("no llama-server left", async || {
        llama_servers_under(home.path()).is_empty()
    })
    .await;
}

/// A model llama-server cannot load (a file cut short after it was imported): the
/// spawn fails with llama-server's own last log lines, after the few restarts it is
/// allowed, and no process is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_llama_cpp_cannot_load_fails_with_its_log_and_stops_restarting() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(
        home.path(),
        &["--max-restarts", "1", "--restart-backoff-ms", "50"],
    );
    add(&h, &server, "cpu").await;
    let local = home.path().join("cut.gguf");
    fs_err::copy(&model, &local).unwrap();
    let model_id = import(&h, &local).await;
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&model_id))).await;
    let path = m["path"].as_str().unwrap().to_owned();
    let len = fs_err::metadata(&path).unwrap().len();
    fs_err::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (status, job) = post(
        &h,
        "/v1/workers/spawn",
        json!({"model": model_id, "force": true}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let (state, error, ev) = finish(&h, &job).await;
    assert_eq!(state, "failed", "{ev:?}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("gave up after 1 restarts"), "{message}");
    assert!(
        message.contains("llama_model_load") || message.contains("error loading model"),
        "llama-server's own words: {message}"
    );
    let restarts = ev
        .iter()
        .filter(|(_, v)| v["action"] == "restarting")
        .count();
    assert_eq!(restarts, 1, "{ev:?}");
    assert!(llama_servers_under(home.path()).is_empty());
}

/// A llama-server built for another CPU dies of SIGILL at its first matrix product:
/// the spawn fails saying so and how to rebuild, after its few restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_built_for_another_cpu_says_so() {
    let Some(model) = smollm2() else { return };
    let home = tempfile::tempdir().unwrap();
    let h = hive(
        home.path(),
        &["--max-restarts", "1", "--restart-backoff-ms", "50"],
    );
    let fake = home.path().join("llama-server");
    fs_err::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in\n  --version) echo 'version: 7000 (abcdef1)' >&2 ;;\n  --list-devices) echo 'Available devices:' ;;\n  *) echo 'main: loading model' >&2; kill -ILL $$ ;;\nesac\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (s, b) = add(&h, &fake, "cpu").await;
    assert_eq!(s, 200, "{b}");
    let model_id = import(&h, &model).await;
    let (status, job) = post(&h, "/v1/workers/spawn", json!({"model": model_id})).await;
    assert_eq!(status, 202, "{job}");
    let (state, error, ev) = finish(&h, &job).await;
    assert_eq!(state, "failed", "{ev:?}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("illegal instruction"), "{message}");
    assert!(message.contains("-DGGML_NATIVE=OFF"), "{message}");
}

/// `--hf-cache-layout` for llama.cpp: SmolLM2 pulled from the test hub into a hub
/// cache, then `llama-server -hf ORG/REPO:QUANT --offline` with that cache finds it
/// there (by `refs/main`, the snapshot and the quant tag), loads it and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_runs_a_pull_in_the_hub_cache_layout_offline() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let file = hf_test_server::RepoFile::lfs(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        fs_err::read(&model).unwrap(),
    );
    let hf = hf_test_server::HfServer::start(
        vec![hf_test_server::Repo::new("org/Smol-GGUF", vec![file])],
        None,
        false,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hf-hub");
    let mut c = crate::hive_cmd(home.path(), &hf.url(), &["--hf-cache-layout"]);
    c.env("HF_HUB_CACHE", &cache);
    let h = crate::spawn_hive(c);
    let (_, state, ev) = crate::pull(&h, "hf:org/Smol-GGUF:Q4_1").await;
    assert_eq!(state, "completed", "{ev:?}");
    drop(h);

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut llama = Command::new(&server)
        .args([
            "-hf",
            "org/Smol-GGUF:Q4_1",
            "--offline",
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--port",
            &port.to_string(),
            "-c",
            "2048",
            "-t",
            "2",
            "-np",
            "1",
        ])
        .env("HF_HUB_CACHE", &cache)
        .env_remove("LLAMA_CACHE")
        .env_remove("HF_HOME")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_for("llama-server -hf --offline", async || {
        assert!(
            llama.try_wait().unwrap().is_none(),
            "llama-server did not find the model in the hub cache"
        );
        crate::client()
            .get(format!("{url}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let text = complete(&url, None, "The capital of France is").await;
    llama.kill().unwrap();
    llama.wait().unwrap();
    assert!(!text.is_empty());
}
