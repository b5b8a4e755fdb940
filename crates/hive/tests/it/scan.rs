//! Adopting other tools' models where they lie: a Hugging Face cache made by the
//! real `huggingface_hub` (`hf_hub_download` from the test hub), an Ollama store laid
//! out as Ollama writes it (manifests naming `blobs/sha256-*`), an LM Studio folder.
//! Nothing of theirs is modified, a second scan records nothing twice, removing one
//! only forgets it, and one gone from its store is marked.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use hf_test_server::{HfServer, Repo, RepoFile};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::workers::finish;
use crate::{get, model_list, post};

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// inode, mtime and length of a file (its target, for a symlink).
fn stamp(p: &Path) -> (u64, i64, u64) {
    let m = fs_err::metadata(p).unwrap();
    (m.ino(), m.mtime_nsec() + m.mtime() * 1_000_000_000, m.len())
}

async fn scan(h: &crate::Hive, dirs: &[&Path]) -> (String, Value) {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let (s, job) = post(h, "/v1/models/scan", json!({"dirs": dirs})).await;
    assert_eq!(s, 202, "{job}");
    let (state, result, _) = finish(h, &job).await;
    (state, result)
}

/// A hive whose user has no hub cache, no Ollama store and no llama.cpp cache.
fn hive_without_stores(user: &Path, home: &Path) -> crate::Hive {
    let mut c = crate::hive_cmd(home, "http://127.0.0.1:9", &[]);
    c.env("HOME", user)
        .env("HF_HUB_CACHE", user.join("none"))
        .env("OLLAMA_MODELS", user.join("none"))
        .env("LLAMA_CACHE", user.join("none"));
    crate::spawn_hive(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hf_cache_ollama_and_lm_studio_are_adopted_in_place() {
    let Some(python) = crate::python_with("huggingface_hub") else {
        return;
    };
    let gguf = crate::fixture("llama-q4_0.gguf");
    let gemma = crate::fixture("gemma-q8_0-align64.gguf");
    let user = tempfile::tempdir().unwrap();
    let home = user.path().join("rbee");

    // the Hugging Face cache, written by huggingface_hub itself
    let hf = HfServer::start(
        vec![Repo::new(
            "TheOrg/Tiny-GGUF",
            vec![RepoFile::lfs("tiny.Q4_0.gguf", gguf.clone())],
        )],
        None,
        false,
    )
    .await;
    let hub_cache = user.path().join("hf-cache");
    let snapshot_file = crate::hf_hub_download(
        &python,
        &hf.url(),
        &hub_cache,
        "TheOrg/Tiny-GGUF",
        "tiny.Q4_0.gguf",
    );
    assert!(
        fs_err::symlink_metadata(&snapshot_file)
            .unwrap()
            .is_symlink()
    );

    // Ollama's store: a model, a corrupt manifest, one whose model blob is not GGUF
    let ollama = user.path().join("ollama");
    let blobs = ollama.join("blobs");
    fs_err::create_dir_all(&blobs).unwrap();
    let blob = blobs.join(format!("sha256-{}", sha(&gemma)));
    fs_err::write(&blob, &gemma).unwrap();
    let junk = b"not a model at all";
    fs_err::write(blobs.join(format!("sha256-{}", sha(junk))), junk).unwrap();
    let library = ollama.join("manifests/registry.ollama.ai/library");
    let manifest = |digest: &str, size: usize| {
        json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
               "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
               "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{digest}"), "size": size}]})
        .to_string()
    };
    for (name, body) in [
        ("gemma-tiny", manifest(&sha(&gemma), gemma.len())),
        ("junk", manifest(&sha(junk), junk.len())),
        ("broken", "{\"schemaVersion\": 2, \"layers\": [".to_owned()),
    ] {
        fs_err::create_dir_all(library.join(name)).unwrap();
        fs_err::write(library.join(name).join("latest"), body).unwrap();
    }

    // LM Studio's folder, with a symlink loop in it
    let lms = user
        .path()
        .join(".lmstudio/models/lmstudio-community/Tiny-GGUF");
    fs_err::create_dir_all(&lms).unwrap();
    let lms_file = lms.join("tiny-lms.Q4_0.gguf");
    fs_err::write(&lms_file, &gguf).unwrap();
    std::os::unix::fs::symlink(user.path().join(".lmstudio/models"), lms.join("loop")).unwrap();

    let before: Vec<_> = [&snapshot_file, &blob, &lms_file]
        .iter()
        .map(|p| stamp(p))
        .collect();
    let start = || {
        let mut c = crate::hive_cmd(&home, "http://127.0.0.1:9", &[]);
        c.env("HOME", user.path())
            .env("HF_HUB_CACHE", &hub_cache)
            .env("OLLAMA_MODELS", &ollama)
            .env("LLAMA_CACHE", user.path().join("no-llama-cache"));
        crate::spawn_hive(c)
    };
    let h = start();
    let (state, r) = scan(&h, &[]).await;
    assert_eq!(state, "completed", "{r}");
    let added: Vec<&str> = r["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let lms_id = format!("file:{}", lms_file.display());
    for id in [
        "hf:TheOrg/Tiny-GGUF/tiny.Q4_0.gguf",
        "ollama:gemma-tiny:latest",
        lms_id.as_str(),
    ] {
        assert!(added.contains(&id), "{id} in {added:?}");
    }
    assert_eq!(added.len(), 3, "{r}");
    let problems = r["problems"].to_string();
    assert!(problems.contains("broken"), "{problems}");
    assert!(problems.contains("not a GGUF model"), "{problems}");
    assert!(problems.contains("loop"), "{problems}");

    // each with its true reference, summary and sha256
    let model = async |id: &str| get(&h, &format!("/v1/models/{}", crate::enc(id))).await.1;
    let m = model("hf:TheOrg/Tiny-GGUF/tiny.Q4_0.gguf").await;
    assert_eq!(m["external"], true, "{m}");
    assert_eq!(
        m["sha256"],
        sha(&gguf).as_str(),
        "from the blob's name: {m}"
    );
    assert!(
        m["reference"]
            .as_str()
            .unwrap()
            .starts_with("hf:TheOrg/Tiny-GGUF@"),
        "{m}"
    );
    assert_eq!(m["path"], snapshot_file.display().to_string(), "{m}");
    assert_eq!(m["gguf"]["architecture"], "llama", "{m}");
    let m = model("ollama:gemma-tiny:latest").await;
    assert_eq!(m["sha256"], sha(&gemma).as_str(), "{m}");
    assert_eq!(m["path"], blob.display().to_string(), "{m}");
    assert_eq!(m["gguf"]["architecture"], "gemma", "{m}");
    assert_eq!(m["status"]["state"], "available", "{m}");
    assert_eq!(
        m["alias"], "gemma-tiny:latest",
        "the name Ollama knows: {m}"
    );
    // LM Studio's has no sha256 in its name: hashed after
    assert_eq!(r["hashed"], 1, "{r}");
    let m = model(&lms_id).await;
    assert_eq!(m["sha256"], sha(&gguf).as_str(), "{m}");

    // a second scan records nothing twice; nothing of theirs changed
    let (_, again) = scan(&h, &[]).await;
    assert_eq!(again["added"], json!([]), "{again}");
    assert_eq!(again["unchanged"], 3, "{again}");
    let list = model_list(&h).await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    let after: Vec<_> = [&snapshot_file, &blob, &lms_file]
        .iter()
        .map(|p| stamp(p))
        .collect();
    assert_eq!(
        before, after,
        "inode, mtime and size of every file the same"
    );
    assert!(
        fs_err::symlink_metadata(&snapshot_file)
            .unwrap()
            .is_symlink()
    );

    // removing one forgets it; its file stays
    let r = crate::client()
        .delete(format!(
            "{}/v1/models/{}",
            h.url,
            crate::enc("ollama:gemma-tiny:latest")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(stamp(&blob), before[1], "the blob is untouched");

    // a file gone from its store is marked, not dropped
    fs_err::remove_file(&lms_file).unwrap();
    let (_, third) = scan(&h, &[]).await;
    assert_eq!(third["gone"], json!([lms_id]), "{third}");
    let m = model(&lms_id).await;
    assert_eq!(m["status"]["state"], "failed", "{m}");
    assert!(
        m["status"]["error"].as_str().unwrap().contains("gone"),
        "{m}"
    );

    // a folder that is not there, or not absolute: a 400, nothing changed
    for bad in ["/no/such/folder", "relative/dir"] {
        let (s, e) = post(&h, "/v1/models/scan", json!({"dirs": [bad]})).await;
        assert_eq!(s, 400, "{e}");
        assert_eq!(e["error"]["code"], "invalid_path", "{e}");
    }
}

/// A folder the user names is scanned as what it holds; a file the hive has already
/// (imported) and the hive's own home are never adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_folder_is_adopted_and_the_hives_own_files_are_not() {
    let user = tempfile::tempdir().unwrap();
    let home = user.path().join("rbee");
    let folder = user.path().join("models");
    fs_err::create_dir_all(folder.join("sub")).unwrap();
    fs_err::write(folder.join("sub/a.gguf"), crate::fixture("llama-q4_0.gguf")).unwrap();
    fs_err::write(folder.join("b.gguf"), b"GGUF but not really").unwrap();
    let h = hive_without_stores(user.path(), &home);
    let imported = crate::workers::import(&h, &folder.join("sub/a.gguf")).await;
    let (state, r) = scan(&h, &[&folder, &home]).await;
    assert_eq!(state, "completed", "{r}");
    // a.gguf was imported: the hive's own entry for that path, not adopted again;
    // nothing under the hive's home is adopted
    assert_eq!(r["added"], json!([]), "{r}");
    assert_eq!(r["the_hives_own"], json!([imported]), "{r}");
    assert!(r["problems"].to_string().contains("b.gguf"), "{r}");
    let list = model_list(&h).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["external"], Value::Null, "{list}");
}

/// A split model (shards written by llama.cpp's gguf writer) is adopted as one model
/// with the whole model's summary; one short of a shard is a problem, not a model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_model_is_adopted_whole_and_one_short_of_a_shard_is_not() {
    let user = tempfile::tempdir().unwrap();
    let home = user.path().join("rbee");
    let folder = user.path().join("models");
    fs_err::create_dir_all(&folder).unwrap();
    let shard = |i: u32| crate::fixture(&format!("llama-q4_0-split-{i:05}-of-00003.gguf"));
    for i in 1..=3 {
        fs_err::write(
            folder.join(format!("big-Q4_0-{i:05}-of-00003.gguf")),
            shard(i),
        )
        .unwrap();
    }
    for i in 1..=2 {
        fs_err::write(
            folder.join(format!("half-Q4_0-{i:05}-of-00003.gguf")),
            shard(i),
        )
        .unwrap();
    }
    let h = hive_without_stores(user.path(), &home);
    let (state, r) = scan(&h, &[&folder]).await;
    assert_eq!(state, "completed", "{r}");
    let id = format!(
        "file:{}",
        folder.join("big-Q4_0-00001-of-00003.gguf").display()
    );
    assert_eq!(r["added"], json!([id]), "{r}");
    let problems = r["problems"].to_string();
    assert!(
        problems.contains("half-Q4_0-00001-of-00003.gguf")
            && problems.contains("split.count says 3"),
        "{problems}"
    );

    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&id))).await;
    let whole = gguf::read_bytes(
        &crate::fixture("llama-q4_0.gguf"),
        &gguf::ReadOptions::default(),
    )
    .unwrap()
    .summary();
    assert_eq!(m["gguf"]["parameter_count"], whole.parameter_count, "{m}");
    assert_eq!(m["gguf"]["tensor_data_size"], whole.tensor_data_size, "{m}");
    assert_eq!(m["shards"].as_array().map(Vec::len), Some(3), "{m}");
    let size: usize = (1..=3).map(|i| shard(i).len()).sum();
    assert_eq!(m["size"], size, "{m}");
}

/// A folder holding a model and its projectors (as LM Studio and the hub's repos
/// keep them) is adopted as one model paired with its F16 projector, where they lie;
/// the projectors are no models of their own; unpairing forgets the projector and
/// leaves its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_adopted_with_the_projector_beside_it() {
    let Some(model) = hf_test_server::test_model() else {
        return;
    };
    let user = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = hive_without_stores(user.path(), home.path());
    let folder = user.path().join("lmstudio/lab/SmolVision-GGUF");
    fs_err::create_dir_all(&folder).unwrap();
    let file = folder.join("SmolVision-Q4_1.gguf");
    if fs_err::hard_link(&model, &file).is_err() {
        fs_err::copy(&model, &file).unwrap();
    }
    let projector = crate::fixture("mmproj-tiny-mlp.gguf");
    fs_err::write(folder.join("mmproj-SmolVision-F16.gguf"), &projector).unwrap();
    let mut other = projector.clone();
    if let Some(last) = other.last_mut() {
        *last ^= 1;
    }
    fs_err::write(folder.join("mmproj-SmolVision-Q8_0.gguf"), &other).unwrap();
    let (state, result) = scan(&h, &[user.path().join("lmstudio").as_path()]).await;
    assert_eq!(state, "completed", "{result}");
    let list = model_list(&h).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let m = &list[0];
    assert_eq!(m["external"], true, "{m}");
    assert_eq!(
        m["projector"]["path"],
        folder
            .join("mmproj-SmolVision-F16.gguf")
            .display()
            .to_string()
    );
    assert_eq!(m["capabilities"], json!(["completion", "vision"]), "{m}");
    let (s, v) = post(
        &h,
        "/v1/models/mmproj",
        json!({"id": m["id"], "path": null}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("projector").is_none(), "{v}");
    assert!(
        folder.join("mmproj-SmolVision-F16.gguf").exists(),
        "another tool's file stays"
    );
}
