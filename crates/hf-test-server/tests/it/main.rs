//! The test server speaks the hub's protocol: the hub's own Python client,
//! `huggingface_hub.hf_hub_download`, downloads from it.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use hf_test_server::{HfServer, Repo, RepoFile, test_bytes};

/// The Python with `huggingface_hub`: `RBEE_TEST_PYTHON`, else the repo's `.venv`
/// (made by `.ci/run`). Without one the test says so and passes, unless
/// `RBEE_REQUIRE_PYTHON_TESTS` is set (CI sets it).
fn python() -> Option<PathBuf> {
    hf_test_server::python_with("huggingface_hub")
}

const SCRIPT: &str = r#"
import sys
from huggingface_hub import hf_hub_download
path = hf_hub_download(repo_id=sys.argv[1], filename=sys.argv[2], cache_dir=sys.argv[3], token=sys.argv[4] or False)
print(path)
"#;

async fn download_with_python(
    python: &PathBuf,
    server: &HfServer,
    repo: &str,
    file: &str,
    token: &str,
) -> Vec<u8> {
    let cache = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(python)
        .args([
            "-c",
            SCRIPT,
            repo,
            file,
            cache.path().to_str().unwrap(),
            token,
        ])
        .env("HF_ENDPOINT", server.url())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    fs_err::read(path.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hf_hub_download_fetches_from_it() {
    let Some(python) = python() else { return };
    let lfs = RepoFile::lfs("sub/model-Q4_K_M.gguf", test_bytes(3 << 20, 3));
    let plain = RepoFile::plain("config.json", br#"{"model_type": "llama"}"#.to_vec());
    let repos = vec![
        Repo::new("org/model", vec![lfs.clone(), plain.clone()]),
        Repo::new("org/gated", vec![lfs.clone()]).gated(),
    ];
    for cdn in [false, true] {
        let server = HfServer::start(repos.clone(), Some("hf_token_x"), cdn).await;
        assert_eq!(
            download_with_python(&python, &server, "org/model", &lfs.path, "").await,
            lfs.data.to_vec()
        );
        assert_eq!(
            download_with_python(&python, &server, "org/model", &plain.path, "").await,
            plain.data.to_vec()
        );
        assert_eq!(
            download_with_python(&python, &server, "org/gated", &lfs.path, "hf_token_x").await,
            lfs.data.to_vec()
        );
        assert_eq!(
            server
                .state
                .cdn_saw_authorization
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }
}
