//! The release vendor against a real HTTP server on loopback, with archives made by
//! the `tar` crate; the local-build vendor's checks that need no build.
#![allow(clippy::unwrap_used)]

mod llama;

use std::path::Path;
use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use provisioning::{ArtifactProvisioner as _, ProvisionContext, ProvisionError, ProvisionRequest};
use sha2::Digest as _;
use worker_catalog::WorkerType;
use worker_provisioner::{LocalBuildVendor, ReleaseVendor, WorkerProvisioner, worker_provisioner};

const SCRIPT: &[u8] = b"#!/bin/sh\necho llm-worker-rbee 9.9.9\n";

/// A `.tar.gz` holding `entries` (name, bytes).
fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw, so a hostile name such as ../x stays as it is.
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_cksum();
        tar.append(&header, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn sha(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Serves `files` (path → bytes) on 127.0.0.1:0.
async fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let files = Arc::new(files);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let files = Arc::clone(&files);
        async move {
            match files.iter().find(|(p, _)| *p == uri.path()) {
                Some((_, data)) => (axum::http::StatusCode::OK, data.clone()),
                None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn provisioner(home: &Path) -> WorkerProvisioner {
    worker_provisioner(
        LocalBuildVendor {
            source_dir: home.join("no-source"),
            profile: "release".into(),
            target_dir: None,
            workers_dir: home.join("workers"),
        },
        ReleaseVendor {
            downloader: download::Downloader::new(download::DownloadConfig::default()).unwrap(),
            workers_dir: home.join("workers"),
            downloads_dir: home.join("downloads"),
        },
    )
}

async fn install(
    p: &WorkerProvisioner,
    url: &str,
    sha256: Option<String>,
) -> Result<worker_catalog::WorkerBinary, ProvisionError> {
    let resolved = p
        .resolve(&ProvisionRequest::new(url.to_owned()).with_sha256(sha256))
        .await?;
    p.fetch(resolved, &ProvisionContext::default()).await
}

const NAME: &str = "/rel/llm-worker-rbee-cpu-v9.9.9-linux.tar.gz";

#[tokio::test]
async fn a_release_archive_installs_its_executable_and_nothing_else() {
    let good = archive(&[
        ("README.md", b"docs"),
        ("../../escape", b"never written"),
        (
            "llm-worker-rbee-cpu-v9.9.9-linux/llm-worker-rbee-cpu",
            SCRIPT,
        ),
    ]);
    let base = serve(vec![(NAME, good.clone())]).await;
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let b = install(&p, &format!("{base}{NAME}"), Some(sha(&good)))
        .await
        .unwrap();
    assert_eq!(b.id, "llm-worker-rbee-cpu-v9.9.9-linux");
    assert_eq!(b.worker_type, WorkerType::CpuLlm);
    assert_eq!(b.status, ArtifactStatus::Available);
    assert!(b.path.starts_with(home.path().join("workers")));
    assert_eq!(b.sha256.as_deref(), Some(sha(SCRIPT).as_str()));
    let out = std::process::Command::new(&b.path).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "llm-worker-rbee 9.9.9"
    );
    // Only the executable was written; the archive itself is gone.
    let mut written = Vec::new();
    for entry in walk(home.path()) {
        written.push(entry.strip_prefix(home.path()).unwrap().to_path_buf());
    }
    assert_eq!(
        written,
        vec![
            Path::new("workers/llm-worker-rbee-cpu-v9.9.9-linux/llm-worker-rbee-cpu").to_path_buf()
        ],
        "{written:?}"
    );
    assert!(!home.path().join("../escape").exists());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs_err::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_release_without_a_good_sha256_is_refused() {
    let good = archive(&[("llm-worker-rbee-cpu", SCRIPT)]);
    let empty = archive(&[("README.md", b"no binary here")]);
    let base = serve(vec![
        (NAME, good.clone()),
        (
            "/rel/llm-worker-rbee-cuda-v1.0.0-linux.tar.gz",
            empty.clone(),
        ),
    ])
    .await;
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let url = format!("{base}{NAME}");

    let e = install(&p, &url, None).await.unwrap_err();
    assert_eq!(e.code(), "invalid_reference");
    assert!(e.to_string().contains("sha256"), "{e}");
    let e = install(&p, &url, Some("abc".into())).await.unwrap_err();
    assert_eq!(e.code(), "invalid_reference");
    let e = install(&p, &url, Some(sha(b"something else")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
    let e = install(
        &p,
        &format!("{base}/rel/llm-worker-rbee-cuda-v1.0.0-linux.tar.gz"),
        Some(sha(&empty)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "invalid_artifact");
    assert!(e.to_string().contains("no llm-worker-rbee-cuda"), "{e}");
    let e = install(
        &p,
        &format!("{base}/rel/llm-worker-rbee-cpu-v9.9.9-linux-x.tar.gz"),
        Some(sha(&good)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "invalid_reference");
    let e = install(
        &p,
        &format!("{base}/rel/llm-worker-rbee-cpu-v9.9.8-linux.tar.gz"),
        Some(sha(&good)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "not_found");
    let other = if cfg!(target_os = "macos") {
        "linux"
    } else {
        "macos"
    };
    let e = install(
        &p,
        &format!("{base}/rel/llm-worker-rbee-cpu-v9.9.9-{other}.tar.gz"),
        Some(sha(&good)),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("this machine is"), "{e}");
    // Nothing was installed by any of them.
    let workers = home.path().join("workers");
    assert!(!workers.exists() || walk(&workers).is_empty());
}

#[tokio::test]
async fn local_builds_need_a_source_tree_and_a_known_type() {
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let e = p
        .resolve(&ProvisionRequest::new("local:cpu"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "not_found");
    assert!(e.to_string().contains("--worker-source-dir"), "{e}");
    let e = p
        .resolve(&ProvisionRequest::new("local:tpu"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_reference");
    let e = p
        .resolve(&ProvisionRequest::new("ftp://x/y.tar.gz"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "unsupported_reference");
    // This workspace is a source tree: it resolves to its own version.
    let here = worker_provisioner(
        LocalBuildVendor {
            source_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
            profile: "release".into(),
            target_dir: None,
            workers_dir: home.path().join("workers"),
        },
        ReleaseVendor {
            downloader: download::Downloader::new(download::DownloadConfig::default()).unwrap(),
            workers_dir: home.path().join("workers"),
            downloads_dir: home.path().join("downloads"),
        },
    );
    let r = here
        .resolve(&ProvisionRequest::new("local:cpu"))
        .await
        .unwrap();
    assert_eq!(
        r.id,
        format!("llm-worker-rbee-cpu-v{}-linux", env!("CARGO_PKG_VERSION"))
    );
}
