//! `file:` imports and `https://` URLs.

use std::os::unix::fs::MetadataExt as _;

use hf_test_server::{HfServer, Repo, RepoFile};
use model_catalog::ArtifactStatus;
use model_provisioner::{ArtifactProvisioner as _, ProvisionRequest};

use crate::{ctx, fixture, fixture_path, provisioner};

#[tokio::test]
async fn import_hard_links_on_the_same_filesystem() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("elsewhere/model.gguf");
    fs_err::create_dir_all(src.parent().unwrap()).unwrap();
    fs_err::copy(fixture_path("llama-q4_0.gguf"), &src).unwrap();
    let p = provisioner(home.path(), "http://127.0.0.1:9", None, true);
    let (c, rec) = ctx();
    let e = p
        .provision(
            &ProvisionRequest::new(format!("file:{}", src.display())),
            &c,
        )
        .await
        .unwrap();
    assert_eq!(e.id, format!("file:{}", src.display()));
    assert_eq!(e.status, ArtifactStatus::Available);
    assert_eq!(
        fs_err::metadata(&e.path).unwrap().ino(),
        fs_err::metadata(&src).unwrap().ino()
    );
    assert_eq!(e.gguf.unwrap().architecture.as_deref(), Some("llama"));
    assert_eq!(e.sha256, Some(model_catalog::sha256_file(&src).unwrap()));
    assert!(
        rec.narration
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("hard-linked"))
    );
    // file:/// works too
    let home2 = tempfile::tempdir().unwrap();
    let p2 = provisioner(home2.path(), "http://127.0.0.1:9", None, true);
    assert!(
        p2.provision(
            &ProvisionRequest::new(format!("file://{}", src.display())),
            &ctx().0
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn import_copies_across_filesystems() {
    // /dev/shm is a tmpfs: another filesystem than the temporary folder, where it exists
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    if fs_err::metadata(shm.path()).unwrap().dev() == fs_err::metadata(home.path()).unwrap().dev() {
        eprintln!("skipped: /dev/shm is on the same filesystem");
        return;
    }
    let src = shm.path().join("m.gguf");
    fs_err::copy(fixture_path("qwen2-q4_k_m.gguf"), &src).unwrap();
    let p = provisioner(home.path(), "http://127.0.0.1:9", None, true);
    let (c, rec) = ctx();
    let e = p
        .provision(
            &ProvisionRequest::new(format!("file:{}", src.display())),
            &c,
        )
        .await
        .unwrap();
    assert_ne!(
        fs_err::metadata(&e.path).unwrap().ino(),
        fs_err::metadata(&src).unwrap().ino()
    );
    assert_eq!(fs_err::read(&e.path).unwrap(), fs_err::read(&src).unwrap());
    assert!(
        rec.narration
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("copying"))
    );
    assert_eq!(*rec.last.lock().unwrap(), Some((e.size, Some(e.size))));
}

#[tokio::test]
async fn import_refuses_what_is_not_a_model() {
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path(), "http://127.0.0.1:9", None, true);
    let text = home.path().join("notes.gguf");
    fs_err::write(&text, b"not a model at all").unwrap();
    let truncated = home.path().join("cut.gguf");
    fs_err::write(&truncated, &fixture("llama-q4_0.gguf")[..5000]).unwrap();
    let check = |r: Result<model_catalog::ModelEntry, model_provisioner::ProvisionError>,
                 code: &str,
                 words: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains(words), "{e} lacks {words:?}");
    };
    let req = |s: String| ProvisionRequest::new(s);
    check(
        p.provision(&req("file:relative/x.gguf".into()), &ctx().0)
            .await,
        "invalid_reference",
        "absolute",
    );
    check(
        p.provision(&req("file:/no/such/file.gguf".into()), &ctx().0)
            .await,
        "not_found",
        "/no/such/file.gguf",
    );
    check(
        p.provision(&req(format!("file:{}", home.path().display())), &ctx().0)
            .await,
        "invalid_artifact",
        "not a regular file",
    );
    check(
        p.provision(&req(format!("file:{}", text.display())), &ctx().0)
            .await,
        "invalid_artifact",
        "not a GGUF",
    );
    check(
        p.provision(&req(format!("file:{}", truncated.display())), &ctx().0)
            .await,
        "invalid_artifact",
        "truncated",
    );
    assert!(
        !home.path().join("models").exists()
            || fs_err::read_dir(home.path().join("models"))
                .unwrap()
                .count()
                == 0
    );
}

#[tokio::test]
async fn importing_any_shard_imports_the_whole_split_model() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("elsewhere");
    fs_err::create_dir_all(&dir).unwrap();
    let shard = |i: u32| dir.join(format!("big-Q4_0-{i:05}-of-00003.gguf"));
    for i in 1..=3 {
        fs_err::copy(
            fixture_path(&format!("llama-q4_0-split-{i:05}-of-00003.gguf")),
            shard(i),
        )
        .unwrap();
    }
    let p = provisioner(home.path(), "http://127.0.0.1:9", None, true);
    // named by its second shard: the model, by its first
    let request = ProvisionRequest::new(format!("file:{}", shard(2).display()));
    let resolved = p.resolve(&request).await.unwrap();
    assert_eq!(resolved.id, format!("file:{}", shard(1).display()));
    let header = crate::read_header(&p, &request.reference).await.unwrap();
    let e = p.provision(&request, &ctx().0).await.unwrap();
    assert_eq!(e.id, resolved.id);
    assert_eq!(e.shards.len(), 3);
    for (i, s) in e.shards.iter().enumerate() {
        let src = shard(i as u32 + 1);
        assert_eq!(fs_err::read(&s.path).unwrap(), fs_err::read(&src).unwrap());
        assert_eq!(s.sha256, Some(model_catalog::sha256_file(&src).unwrap()));
    }
    assert_eq!(e.path, e.shards[0].path);
    let whole = gguf::read_bytes(&fixture("llama-q4_0.gguf"), &gguf::ReadOptions::default())
        .unwrap()
        .summary();
    assert_eq!(e.gguf.as_ref(), Some(&whole));
    assert_eq!(header.summary, whole);
    assert_eq!(header.requests, 3);

    // a hub cache's snapshot: each shard a link to a blob named by its sha256; the
    // shards are found, and the copies named, by the links' names
    let blobs = home.path().join("hub/blobs");
    let snapshot = home.path().join("hub/snapshots/abc");
    fs_err::create_dir_all(&blobs).unwrap();
    fs_err::create_dir_all(&snapshot).unwrap();
    for i in 1..=3 {
        let blob = blobs.join(model_catalog::sha256_file(&shard(i)).unwrap());
        fs_err::copy(shard(i), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snapshot.join(shard(i).file_name().unwrap())).unwrap();
    }
    let home3 = tempfile::tempdir().unwrap();
    let p3 = provisioner(home3.path(), "http://127.0.0.1:9", None, true);
    let linked = ProvisionRequest::new(format!(
        "file:{}",
        snapshot.join("big-Q4_0-00001-of-00003.gguf").display()
    ));
    let e3 = p3.provision(&linked, &ctx().0).await.unwrap();
    assert_eq!(e3.shards.len(), 3);
    for (i, s) in e3.shards.iter().enumerate() {
        assert_eq!(s.path.file_name(), shard(i as u32 + 1).file_name());
    }
    assert_eq!(e3.gguf.as_ref(), Some(&whole));

    // one shard missing: nothing is written
    fs_err::remove_file(shard(3)).unwrap();
    let home2 = tempfile::tempdir().unwrap();
    let p2 = provisioner(home2.path(), "http://127.0.0.1:9", None, true);
    let err = p2.provision(&request, &ctx().0).await.unwrap_err();
    assert_eq!(err.code(), "not_found", "{err}");
    assert!(err.to_string().contains("00003-of-00003"), "{err}");
    assert!(
        !home2.path().join("models").exists()
            || fs_err::read_dir(home2.path().join("models"))
                .unwrap()
                .next()
                .is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn http_urls_with_and_without_sha256() {
    let data = fixture("llama-q4_0.gguf");
    let server = HfServer::start(
        vec![Repo::new(
            "o/r",
            vec![
                RepoFile::lfs("m.gguf", data.clone()),
                RepoFile::lfs("junk.gguf", b"<html>nope</html>".to_vec()),
            ],
        )],
        None,
        false,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path(), "http://127.0.0.1:9", None, false);
    let url = server.resolve_url("o/r", "main", "m.gguf");
    let good_sha = server.repo("o/r").files[0].sha256();
    let e = p
        .provision(
            &ProvisionRequest::new(format!("{url}#frag")).with_sha256(Some(good_sha.clone())),
            &ctx().0,
        )
        .await
        .unwrap();
    assert_eq!(e.id, url, "the fragment is dropped");
    assert!(e.verified);
    assert_eq!(e.path.file_name().unwrap(), "m.gguf");
    assert_eq!(e.gguf.unwrap().quantization.as_deref(), Some("Q4_0"));
    // a wrong sha256: refused, nothing kept
    let home2 = tempfile::tempdir().unwrap();
    let p2 = provisioner(home2.path(), "http://127.0.0.1:9", None, false);
    let err = p2
        .provision(
            &ProvisionRequest::new(url.clone()).with_sha256(Some("0".repeat(64))),
            &ctx().0,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "sha256_mismatch", "{err}");
    // not a GGUF: refused and deleted
    let junk = server.resolve_url("o/r", "main", "junk.gguf");
    let err = p2
        .provision(&ProvisionRequest::new(junk.clone()), &ctx().0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_artifact", "{err}");
    let resolved = p2.resolve(&ProvisionRequest::new(junk)).await.unwrap();
    assert!(!resolved.plan.path.exists());
    // a 404
    let err = p2
        .provision(
            &ProvisionRequest::new(server.resolve_url("o/r", "main", "gone.gguf")),
            &ctx().0,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found", "{err}");
}
