//! The worker as the hive runs it: the real binary on a real model
//! (SmolLM2-135M-Instruct Q4_1, fetched by `scripts/fetch-test-model.sh`), HTTP on
//! loopback, real signals.
#![allow(clippy::unwrap_used)]

mod hostile;
mod load;
mod serve;
mod tokenize;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use hf_test_server::test_model as smollm2;

/// A running worker, killed when dropped.
#[derive(Debug)]
pub struct Worker {
    pub child: Child,
    pub url: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn worker_cmd(model: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llm-worker-rbee"));
    c.args(["--worker-id", "test-worker", "--port", "0", "--model"])
        .arg(model)
        .args(extra)
        .env("RUST_LOG", "warn");
    c
}

/// Starts a worker and waits until it answers `ready`.
pub async fn start(model: &Path, extra: &[&str]) -> Worker {
    spawn(worker_cmd(model, extra)).await
}

/// Starts the worker `command` describes and waits until it answers `ready`.
pub async fn spawn(mut command: Command) -> Worker {
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
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let w = Worker { child, url };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/health", w.url)).await
            && r.status() == 200
        {
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["status"], "ready");
            return w;
        }
        assert!(Instant::now() < deadline, "the worker never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it holds, failing after `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
