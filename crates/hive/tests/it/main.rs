//! The daemon as a user runs it: the real binary, a temporary home, the Hugging Face
//! test server, HTTP on loopback.
#![allow(clippy::unwrap_used)]

mod api;
mod audit;
mod batch;
mod dashboard;
mod draft;
mod edge;
mod engines;
mod fields;
mod fleet;
mod gateway;
mod integrity;
mod oci;
mod pulls;
mod repair;
mod restart;
mod scan;
mod storage;
mod vision;
mod warm;
mod workers;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running daemon, killed when dropped.
#[derive(Debug)]
pub struct Hive {
    pub child: Child,
    pub url: String,
}

impl Drop for Hive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn hive_cmd(home: &Path, hf: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rbee-hive"));
    c.args(["--port", "0", "--download-connections", "4"])
        .args(extra)
        .env("RBEE_HOME", home)
        .env("RBEE_HF_ENDPOINT", hf)
        // Ollama's library is a closed port here: no test reaches off the machine
        .env("RBEE_OLLAMA_REGISTRY", "127.0.0.1:9")
        .env_remove("RBEE_API_TOKEN")
        .env_remove("HF_TOKEN")
        .env("HF_HOME", home.join("no-hf-home"))
        // each test installs the binaries it wants (`engines::the_engines_on_this_machine_are_found_at_start` tests finding them)
        .env("RBEE_NO_FIND_ENGINES", "1")
        .env_remove("LLAMA_SERVER")
        .env("RUST_LOG", "warn");
    c
}

/// Starts the daemon and waits for its "listening on" line.
pub fn start(home: &Path, hf: &str, extra: &[&str]) -> Hive {
    spawn_hive(hive_cmd(home, hf, extra))
}

/// Starts the daemon `command` describes and waits for its "listening on" line.
pub fn spawn_hive(mut command: Command) -> Hive {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("rbee-hive listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Hive { child, url }
}

/// The Python that can `import modules` (`"openai, ollama"`), or a skip.
pub fn python_with(modules: &str) -> Option<std::path::PathBuf> {
    hf_test_server::python_with(modules)
}

/// The real `huggingface_hub` downloads `file` of `repo` from the hub at `hub` into
/// the cache `cache`, as a user's own tools would; the snapshot path it gives.
pub fn hf_hub_download(
    python: &Path,
    hub: &str,
    cache: &Path,
    repo: &str,
    file: &str,
) -> std::path::PathBuf {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys; from huggingface_hub import hf_hub_download; print(hf_hub_download(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3]))",
            repo,
            file,
        ])
        .arg(cache)
        .env("HF_ENDPOINT", hub)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs one of `tests/*.py` with `python` and `args`; the JSON its last line
/// prints. Its output is in the panic when it fails.
pub async fn python_script(python: &Path, script: &str, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(python)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join(script),
        )
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap()
}

/// How many workers a hive runs.
pub async fn workers_of(h: &Hive) -> usize {
    get(h, "/v1/workers").await.1["workers"]
        .as_array()
        .map_or(0, Vec::len)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn post(h: &Hive, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}{path}", h.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn patch(h: &Hive, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .patch(format!("{}{path}", h.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn get(h: &Hive, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", h.url))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The catalog, as `GET /v1/models` lists it (its first page): the `data` of
/// OpenAI's list shape.
pub async fn model_list(h: &Hive) -> Value {
    let (s, list) = get(h, "/v1/models").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["object"], "list", "{list}");
    list["data"].clone()
}

/// A text answer, such as `/metrics`.
pub async fn get_text(h: &Hive, path: &str) -> String {
    client()
        .get(format!("{}{path}", h.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reads a job's whole SSE stream: (event, data) pairs up to `done`.
pub async fn events(h: &Hive, job: &str) -> Vec<(String, Value)> {
    let text = client()
        .get(format!("{}/v1/jobs/{job}/stream", h.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut kind = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if !kind.is_empty() {
            out.push((kind, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

/// Pulls a reference to its end: the answer's status, then the job's end state
/// (or, when no job started, the answer) and its events.
pub async fn pull(h: &Hive, reference: &str) -> (u16, String, Vec<(String, Value)>) {
    let (s, job) = post(
        h,
        "/v1/models/download",
        serde_json::json!({"model_ref": reference}),
    )
    .await;
    let Some(id) = job["job_id"].as_str().filter(|_| s == 202) else {
        return (s, job.to_string(), Vec::new());
    };
    let ev = events(h, id).await;
    let state = ev.last().map_or_else(String::new, |(_, d)| {
        d["state"].as_str().unwrap_or_default().to_owned()
    });
    (s, state, ev)
}

pub async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An id as one path segment.
pub fn enc(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn fixture(name: &str) -> Vec<u8> {
    fs_err::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../gguf/tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// A real GGUF followed by padding, so a download takes long enough to interrupt.
pub fn big_gguf(len: usize) -> Vec<u8> {
    let mut d = fixture("llama-q4_0.gguf");
    d.extend_from_slice(&hf_test_server::test_bytes(len, 9));
    d
}

/// A worker's own key, read from its environment as only its user can: what a
/// request straight to the worker (not through the hive) must carry.
pub fn worker_key(worker: &Value) -> String {
    let pid = worker["pid"].as_u64().unwrap();
    let environ = fs_err::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| {
            kv.strip_prefix("LLAMA_API_KEY=")
                .or_else(|| kv.strip_prefix("RBEE_WORKER_API_KEY="))
        })
        .unwrap_or_else(|| panic!("worker {pid} has no key in its environment"))
        .to_owned()
}
