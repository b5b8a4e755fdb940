//! Files the worker cannot serve: a clear error and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{smollm2, worker_cmd};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gguf/tests/fixtures")
        .join(name)
}

/// Runs the worker on `model` and returns its exit code and stderr.
fn run(model: &Path) -> (Option<i32>, String) {
    let mut child = worker_cmd(model, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the worker kept running on {}",
            model.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(model: &Path, words: &[&str]) {
    let (code, stderr) = run(model);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for w in words {
        assert!(stderr.contains(w), "expected {w:?} in {stderr}");
    }
}

#[test]
fn an_unsupported_architecture_is_named_with_what_is_supported() {
    assert_refused(
        &fixture("gemma-q8_0-align64.gguf"),
        &[
            "architecture `gemma` is not supported",
            "llama, qwen2, qwen3",
        ],
    );
}

#[test]
fn corrupt_and_missing_files_fail_cleanly() {
    assert_refused(&fixture("bad/bad-magic.gguf"), &["not a valid GGUF"]);
    assert_refused(
        Path::new("/nonexistent/model.gguf"),
        &["/nonexistent/model.gguf"],
    );
    // Tensors that do not fit the architecture's layout (no attention biases for qwen2).
    assert_refused(&fixture("qwen2-q4_k_m.gguf"), &["qwen2-q4_k_m.gguf"]);
}

#[test]
fn a_truncated_model_fails_cleanly() {
    let Some(model) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bytes = fs_err::read(&model).unwrap();
    for (name, len) in [
        ("header.gguf", 1000),
        ("half.gguf", bytes.len() / 2),
        ("last-byte.gguf", bytes.len() - 1),
    ] {
        let path = dir.path().join(name);
        fs_err::write(&path, &bytes[..len]).unwrap();
        assert_refused(&path, &["not a valid GGUF", name]);
    }
}
