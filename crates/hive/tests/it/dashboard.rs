//! The dashboard in a real browser: Debian's Chromium, headless, driven by
//! Playwright for Python (`tests/dashboard.py`), against a real hive with a token,
//! a real llama.cpp worker and a throttled hub for a pull it can watch. Screenshots
//! of each page go to `target/test-output/dashboard/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use hf_test_server::{HfServer, Repo, RepoFile};
use serde_json::Value;

use crate::engines::{add, llama_server};
use crate::workers::import;
use hf_test_server::test_model as smollm2;

/// A Python with Playwright, and Chromium; else the test skips, unless
/// `RBEE_REQUIRE_BROWSER_TESTS` is set.
pub fn browser() -> Option<PathBuf> {
    let chromium = std::env::var_os("RBEE_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.is_file() {
        assert!(
            std::env::var_os("RBEE_REQUIRE_BROWSER_TESTS").is_none(),
            "no Chromium at {}: apt-get install chromium",
            chromium.display()
        );
        eprintln!("skipped: no Chromium (apt-get install chromium)");
        return None;
    }
    crate::python_with("playwright.sync_api, gguf")
}

/// A GGUF whose name is HTML with script in it, written by llama.cpp's `gguf`.
fn hostile_gguf(python: &Path, path: &Path) {
    let script = r#"
import sys, numpy as np, gguf
w = gguf.GGUFWriter(sys.argv[1], "llama")
w.add_name('<img src=x onerror=alert(1)><script>alert(2)</script>')
w.add_context_length(128)
w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_models_pulls_workers_and_chats_in_chromium() {
    let (Some(python), Some(server), Some(model)) = (browser(), llama_server(), smollm2()) else {
        return;
    };
    // a pull slow enough to watch: 16 MiB at 4 x 1 MiB/s
    let data = crate::big_gguf(16 << 20);
    let hf = HfServer::start(
        vec![Repo::new(
            "org/Big-GGUF",
            vec![RepoFile::lfs("Big-Q4_0.gguf", data)],
        )],
        None,
        false,
    )
    .await;
    hf.faults()
        .throttle_bytes_per_sec
        .store(1 << 20, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    // set up without a token, then run with one
    let (smol, hostile) = {
        let h = crate::start(home.path(), &hf.url(), &[]);
        add(&h, &server, "cpu").await;
        let local = home.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
        fs_err::copy(&model, &local).unwrap();
        let smol = import(&h, &local).await;
        // it sees: the chat can attach an image
        let (s, paired) = crate::post(
            &h,
            "/v1/models/mmproj",
            serde_json::json!({"id": smol, "path": Path::new(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/fixtures/mmproj-tiny-mlp.gguf")}),
        )
        .await;
        assert_eq!(s, 200, "{paired}");
        let bad = home.path().join("hostile.gguf");
        hostile_gguf(&python, &bad);
        (smol, import(&h, &bad).await)
    };
    let token = "dashboard-test-token";
    let h = crate::start(home.path(), &hf.url(), &["--api-token", token]);
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/dashboard");
    fs_err::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([&h.url, token])
        .arg(&shots)
        .args([&smol, "hf:org/Big-GGUF", &hostile])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dashboard.py: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap();
    eprintln!("the browser saw: {seen}\nscreenshots: {}", shots.display());
    for page in [
        "token-refused",
        "models",
        "pull",
        "model",
        "workers",
        "binaries",
        "jobs",
        "machine",
        "fleet",
        "chat",
        "chat-image",
        "models-phone",
    ] {
        assert!(shots.join(format!("{page}.png")).is_file(), "{page}.png");
    }
}
