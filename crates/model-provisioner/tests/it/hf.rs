//! `hf:` references end to end.

use std::sync::atomic::Ordering;

use hf_test_server::{HfServer, Repo, RepoFile};
use model_catalog::ArtifactStatus;
use model_provisioner::{ArtifactProvisioner as _, ProvisionError, ProvisionRequest};

use crate::{ctx, fixture, provisioner, read_header};

fn repo() -> Repo {
    Repo::new(
        "bartowski/Tiny-GGUF",
        vec![
            RepoFile::lfs("Tiny-Q4_0.gguf", fixture("llama-q4_0.gguf")),
            RepoFile::lfs("Tiny-Q4_K_M.gguf", fixture("qwen2-q4_k_m.gguf")),
            RepoFile::lfs("Tiny-Q8_0.gguf", fixture("gemma-q8_0-align64.gguf")),
            RepoFile::plain("README.md", b"# tiny".to_vec()),
            RepoFile::plain("config.json", b"{}".to_vec()),
        ],
    )
}

fn split_repo() -> Repo {
    // llama-q4_0's model cut into three shards by llama.cpp's gguf writer
    let shard = |i: u32| {
        RepoFile::lfs(
            &format!("Q4_0/Split-Q4_0-{i:05}-of-00003.gguf"),
            fixture(&format!("llama-q4_0-split-{i:05}-of-00003.gguf")),
        )
    };
    Repo::new("org/Split-GGUF", vec![shard(1), shard(2), shard(3)])
}

async fn pull(
    server: &HfServer,
    home: &std::path::Path,
    reference: &str,
) -> Result<model_catalog::ModelEntry, ProvisionError> {
    let p = provisioner(home, &server.url(), None, false);
    p.provision(&ProvisionRequest::new(reference), &ctx().0)
        .await
}

#[tokio::test]
async fn auto_picks_q4_k_m_and_records_everything() {
    let server = HfServer::start(vec![repo()], None, true).await;
    let home = tempfile::tempdir().unwrap();
    let e = pull(&server, home.path(), "hf:bartowski/Tiny-GGUF")
        .await
        .unwrap();
    assert_eq!(e.id, "hf:bartowski/Tiny-GGUF/Tiny-Q4_K_M.gguf");
    assert_eq!(e.provider, "huggingface");
    assert_eq!(e.status, ArtifactStatus::Available);
    assert!(e.verified, "checked against the LFS sha256");
    assert_eq!(
        e.sha256.as_deref(),
        Some(
            server.repo("bartowski/Tiny-GGUF").files[1]
                .sha256()
                .as_str()
        )
    );
    assert_eq!(
        e.revision.as_deref(),
        Some(server.repo("bartowski/Tiny-GGUF").commit.as_str())
    );
    assert!(e.path.starts_with(home.path().join("models")));
    assert_eq!(fs_err::read(&e.path).unwrap(), fixture("qwen2-q4_k_m.gguf"));
    let g = e.gguf.unwrap();
    assert_eq!(
        (g.architecture.as_deref(), g.quantization.as_deref()),
        (Some("qwen2"), Some("Q4_K_M"))
    );
    assert_eq!(e.name, "Tiny Qwen2 Test");
    // nothing left in downloads/
    assert_eq!(
        fs_err::read_dir(home.path().join("downloads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn quant_path_and_revision() {
    let server = HfServer::start(vec![repo()], None, false).await;
    let home = tempfile::tempdir().unwrap();
    let commit = server.repo("bartowski/Tiny-GGUF").commit;
    let e = pull(&server, home.path(), "hf:bartowski/Tiny-GGUF:q8_0")
        .await
        .unwrap();
    assert_eq!(e.id, "hf:bartowski/Tiny-GGUF/Tiny-Q8_0.gguf");
    let e = pull(
        &server,
        home.path(),
        &format!("hf:bartowski/Tiny-GGUF@{commit}/Tiny-Q4_0.gguf"),
    )
    .await
    .unwrap();
    assert_eq!(e.id, "hf:bartowski/Tiny-GGUF/Tiny-Q4_0.gguf");
    assert_eq!(e.revision.as_deref(), Some(commit.as_str()));
}

#[tokio::test]
async fn clear_errors() {
    let server = HfServer::start(
        vec![
            repo(),
            Repo::new("org/empty", vec![RepoFile::plain("a.txt", b"x".to_vec())]),
        ],
        None,
        false,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let check = |r: Result<_, ProvisionError>, code: &str, words: &[&str]| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        for w in words {
            assert!(e.to_string().contains(w), "{e:?} lacks {w:?}");
        }
    };
    check(
        pull(&server, home.path(), "hf:nobody/nothing").await,
        "not_found",
        &["nobody/nothing", "not found"],
    );
    check(
        pull(&server, home.path(), "hf:bartowski/Tiny-GGUF/missing.gguf").await,
        "not_found",
        &["missing.gguf", "Tiny-Q4_0.gguf"],
    );
    check(
        pull(&server, home.path(), "hf:bartowski/Tiny-GGUF:Q5_K_M").await,
        "not_found",
        &[
            "Q5_K_M",
            "hf:bartowski/Tiny-GGUF:Q4_K_M",
            "hf:bartowski/Tiny-GGUF:Q8_0",
        ],
    );
    check(
        pull(&server, home.path(), "hf:bartowski/Tiny-GGUF@nope").await,
        "not_found",
        &["revision nope"],
    );
    check(
        pull(&server, home.path(), "hf:org/empty").await,
        "not_found",
        &["no GGUF"],
    );
    check(
        pull(&server, home.path(), "hf:bad ref/x").await,
        "invalid_reference",
        &["ORG and REPO"],
    );
    check(
        pull(&server, home.path(), "ftp://x/y.gguf").await,
        "unsupported_reference",
        &["hf:ORG/REPO", "file:/"],
    );
    // nothing was written for any of them
    let models = home.path().join("models");
    assert!(!models.exists() || fs_err::read_dir(&models).unwrap().count() == 0);
}

#[tokio::test]
async fn ambiguous_without_a_preferred_quant() {
    let server = HfServer::start(
        vec![Repo::new(
            "o/two",
            vec![
                RepoFile::lfs("a-Q4_0.gguf", fixture("llama-q4_0.gguf")),
                RepoFile::lfs("b-F16.gguf", fixture("phi3-f16-bigendian.gguf")),
            ],
        )],
        None,
        false,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let e = pull(&server, home.path(), "hf:o/two").await.unwrap_err();
    assert_eq!(e.code(), "ambiguous_reference");
    assert!(
        e.to_string().contains("hf:o/two:Q4_0") && e.to_string().contains("hf:o/two:F16"),
        "{e}"
    );
}

#[tokio::test]
async fn split_models_are_fetched_whole() {
    let server = HfServer::start(vec![split_repo()], None, true).await;
    let home = tempfile::tempdir().unwrap();
    let e = pull(&server, home.path(), "hf:org/Split-GGUF:Q4_0")
        .await
        .unwrap();
    assert_eq!(
        e.id,
        "hf:org/Split-GGUF/Q4_0/Split-Q4_0-00001-of-00003.gguf"
    );
    assert_eq!(e.shards.len(), 3);
    let repo = server.repo("org/Split-GGUF");
    for (shard, file) in e.shards.iter().zip(&repo.files) {
        assert_eq!(fs_err::read(&shard.path).unwrap(), file.data.to_vec());
    }
    assert_eq!(
        e.size,
        repo.files.iter().map(|f| f.data.len() as u64).sum::<u64>()
    );
    assert!(e.verified);
    // the summary is the whole model's, as the unsplit file's: every shard's tensors
    let whole = gguf::read_bytes(&fixture("llama-q4_0.gguf"), &gguf::ReadOptions::default())
        .unwrap()
        .summary();
    assert_eq!(e.gguf.as_ref(), Some(&whole));

    // the plan reads the three headers and nothing past them, and says the same
    let p = provisioner(home.path(), &server.url(), None, false);
    let header = read_header(&p, "hf:org/Split-GGUF:Q4_0").await.unwrap();
    assert_eq!(header.summary, whole);
    assert_eq!(header.requests, 3);
    assert_eq!(header.bytes_read, e.size, "small shards are read whole");

    // naming any shard names the model
    let home2 = tempfile::tempdir().unwrap();
    let e2 = pull(
        &server,
        home2.path(),
        "hf:org/Split-GGUF/Q4_0/Split-Q4_0-00002-of-00003.gguf",
    )
    .await
    .unwrap();
    assert_eq!(e2.id, e.id);
}

#[tokio::test]
async fn shards_whose_headers_disagree_with_their_names_are_refused() {
    // named two of two, but the headers are two of a three-way split
    let shard = |i: u32| {
        RepoFile::lfs(
            &format!("Q4_0/Cut-Q4_0-{i:05}-of-00002.gguf"),
            fixture(&format!("llama-q4_0-split-{i:05}-of-00003.gguf")),
        )
    };
    let server = HfServer::start(
        vec![Repo::new("org/Cut-GGUF", vec![shard(1), shard(2)])],
        None,
        true,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path(), &server.url(), None, false);
    let e = read_header(&p, "hf:org/Cut-GGUF:Q4_0").await.unwrap_err();
    assert_eq!(e.code(), "invalid_artifact", "{e}");
    assert!(e.to_string().contains("split.count says 3"), "{e}");
    let e = pull(&server, home.path(), "hf:org/Cut-GGUF:Q4_0")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_artifact", "{e}");
    assert!(e.to_string().contains("split.count says 3"), "{e}");
    // what is not a model does not stay
    let resolved = p
        .resolve(&ProvisionRequest::new("hf:org/Cut-GGUF:Q4_0"))
        .await
        .unwrap();
    for f in resolved.plan.files() {
        assert!(!f.exists(), "{} was left", f.display());
    }
}

#[tokio::test]
async fn gated_repos_need_the_token_and_the_cdn_never_sees_it() {
    let server = HfServer::start(vec![repo().gated()], Some("hf_secret"), true).await;
    let home = tempfile::tempdir().unwrap();
    let e = pull(&server, home.path(), "hf:bartowski/Tiny-GGUF")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "unauthorized");
    assert!(
        e.to_string().contains("gated") && e.to_string().contains("HF_TOKEN"),
        "{e}"
    );
    let p = crate::provisioner(home.path(), &server.url(), Some("hf_secret"), false);
    let e = p
        .provision(&ProvisionRequest::new("hf:bartowski/Tiny-GGUF"), &ctx().0)
        .await
        .unwrap();
    assert!(e.verified);
    assert!(server.state.hub_saw_token.load(Ordering::SeqCst) >= 2);
    assert_eq!(server.state.cdn_saw_authorization.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn offline_touches_no_network() {
    let server = HfServer::start(vec![repo()], None, false).await;
    let home = tempfile::tempdir().unwrap();
    let p = crate::provisioner(home.path(), &server.url(), None, true);
    let e = p
        .provision(&ProvisionRequest::new("hf:bartowski/Tiny-GGUF"), &ctx().0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "offline");
    assert!(e.to_string().contains("HF_HUB_OFFLINE"));
    assert_eq!(server.state.data_requests.load(Ordering::SeqCst), 0);
    assert_eq!(server.bytes_sent(), 0);
}

#[tokio::test]
async fn two_requests_for_one_model_share_one_download() {
    let big = hf_test_server::test_bytes(3 << 20, 5);
    let mut data = fixture("llama-q4_0.gguf");
    data.extend_from_slice(&big); // a GGUF with trailing bytes still reads
    let server = HfServer::start(
        vec![Repo::new(
            "o/big",
            vec![RepoFile::lfs("big-Q4_0.gguf", data.clone())],
        )],
        None,
        false,
    )
    .await;
    server
        .faults()
        .throttle_bytes_per_sec
        .store(4 << 20, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let p = crate::provisioner(home.path(), &server.url(), None, false);
    let (ra, rb) = (
        ProvisionRequest::new("hf:o/big"),
        ProvisionRequest::new("hf:o/big:Q4_0"),
    );
    let (ca, cb) = (ctx().0, ctx().0);
    let (a, b) = tokio::join!(p.provision(&ra, &ca), p.provision(&rb, &cb));
    assert_eq!(a.unwrap().id, b.unwrap().id);
    assert!(
        server.bytes_sent() <= data.len() as u64 + 1,
        "{} for {}",
        server.bytes_sent(),
        data.len()
    );
}
