//! Models on an OCI registry: Debian's `docker-registry` on loopback, the `oras`
//! Python client as the third party. A push is read by oras and by a second hive;
//! what oras pushed is pulled; a blob corrupted in the registry's storage, a tag that
//! is not there, a manifest with no GGUF layer or one that lies about a layer's
//! size, a registry that answers HTML: each refused, nothing recorded available.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hf_test_server::registry::Registry;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::workers::{finish, hive, import};
use crate::{get, model_list, post};

fn python() -> Option<PathBuf> {
    crate::python_with("oras.client")
}

fn oras(python: &Path, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oras_client.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oras {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(fs_err::read(path).unwrap()))
}

/// A hive that reaches `registry` over plain HTTP.
fn hive_for(home: &Path, registry: &Registry) -> crate::Hive {
    hive(home, &["--oci-insecure", &registry.host])
}

async fn push(h: &crate::Hive, id: &str, target: &str) -> (String, Value) {
    let (s, job) = post(h, "/v1/models/push", json!({"id": id, "target": target})).await;
    assert_eq!(s, 202, "{job}");
    let (state, result, _) = finish(h, &job).await;
    (state, result)
}

/// The image manifest `repo:tag` on `registry`, as JSON.
async fn manifest_of(registry: &Registry, repo: &str, tag: &str) -> Value {
    reqwest::Client::new()
        .get(format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            registry.host
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn pull(h: &crate::Hive, reference: &str) -> (u16, String, Value) {
    let (s, job) = post(h, "/v1/models/download", json!({"model_ref": reference})).await;
    if s != 202 {
        return (s, String::new(), job);
    }
    let (state, result, _) = finish(h, &job).await;
    (s, state, result)
}

/// What `rbee models push` wrote, oras reads, and a second hive pulls: the same
/// bytes, checked by digest. A second push sends nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_read_by_oras_and_by_another_hive() {
    let (Some(registry), Some(python)) = (Registry::start(), python()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive_for(home.path(), &registry);
    let file = home.path().join("tiny-llama.Q4_0.gguf");
    // more than one 16 MiB chunk
    fs_err::write(&file, crate::big_gguf(40 << 20)).unwrap();
    let id = import(&h, &file).await;
    let sha = sha256_of(&file);
    let target = format!("oci://{}/models/tiny-llama:q4_0", registry.host);

    let (state, out) = push(&h, &id, &target).await;
    assert_eq!(state, "completed", "{out}");
    assert_eq!(out["blobs_uploaded"], 1, "{out}");
    assert_eq!(out["bytes_uploaded"], 40 * 1024 * 1024 + 39040, "{out}");
    let digest = out["manifest_digest"].as_str().unwrap().to_owned();
    assert!(
        out["reference"].as_str().unwrap().ends_with(&digest),
        "{out}"
    );
    // the blob is the file, as the registry stores it
    assert_eq!(
        sha256_of(&registry.blob_path(&format!("sha256:{sha}"))),
        sha
    );
    let (state, again) = push(&h, &id, &target).await;
    assert_eq!(state, "completed", "{again}");
    assert_eq!(again["blobs_uploaded"], 0, "{again}");
    assert_eq!(again["blobs_skipped"], 1, "{again}");
    // the tag names the last push's manifest
    let digest = again["manifest_digest"].as_str().unwrap().to_owned();

    // the manifest: ModelPack's types, the standard annotations
    let manifest = manifest_of(&registry, "models/tiny-llama", "q4_0").await;
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.cncf.model.weight.v1.raw"
    );
    assert_eq!(manifest["layers"][0]["digest"], format!("sha256:{sha}"));
    assert_eq!(
        manifest["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "tiny-llama.Q4_0.gguf"
    );
    assert!(
        manifest["annotations"]["org.opencontainers.image.source"].is_string(),
        "{manifest}"
    );
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value =
        serde_json::from_slice(&fs_err::read(registry.blob_path(config_digest)).unwrap()).unwrap();
    assert_eq!(config["config"]["format"], "gguf", "{config}");
    assert_eq!(config["config"]["architecture"], "llama", "{config}");
    assert_eq!(config["modelfs"]["diffIds"][0], format!("sha256:{sha}"));

    // oras reads it
    let out_dir = home.path().join("oras-out");
    let pulled = oras(
        &python,
        &[
            "pull",
            &format!("{}/models/tiny-llama:q4_0", registry.host),
            out_dir.to_str().unwrap(),
        ],
    );
    let files = pulled["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{pulled}");
    assert_eq!(sha256_of(Path::new(files[0].as_str().unwrap())), sha);

    // a second hive pulls it, by tag and then by digest (the same entry, already there)
    let home2 = tempfile::tempdir().unwrap();
    let h2 = hive_for(home2.path(), &registry);
    let (s, state, m) = pull(&h2, &target).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    assert_eq!(m["id"], target.as_str(), "{m}");
    assert_eq!(m["sha256"], sha.as_str(), "{m}");
    assert_eq!(m["verified"], true, "{m}");
    assert_eq!(m["revision"], digest.as_str(), "{m}");
    assert_eq!(m["gguf"]["architecture"], "llama", "{m}");
    assert_eq!(sha256_of(Path::new(m["path"].as_str().unwrap())), sha);
}

/// What oras pushed (a ModelPack raw layer, and a plain file titled `*.gguf`), a
/// hive pulls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hive_pulls_what_oras_pushed() {
    let (Some(registry), Some(python)) = (Registry::start(), python()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("src");
    fs_err::create_dir_all(&dir).unwrap();
    let file = dir.join("gemma.Q8_0.gguf");
    fs_err::write(&file, crate::fixture("gemma-q8_0-align64.gguf")).unwrap();
    let sha = sha256_of(&file);
    let raw = format!(
        "{}:application/vnd.cncf.model.weight.v1.raw",
        file.display()
    );
    oras(
        &python,
        &["push", &format!("{}/lab/gemma:raw", registry.host), &raw],
    );
    oras(
        &python,
        &[
            "push",
            &format!("{}/lab/gemma:plain", registry.host),
            file.to_str().unwrap(),
        ],
    );
    let h = hive_for(home.path(), &registry);
    for tag in ["raw", "plain"] {
        let reference = format!("oci://{}/lab/gemma:{tag}", registry.host);
        let (s, state, m) = pull(&h, &reference).await;
        assert_eq!((s, state.as_str()), (202, "completed"), "{tag}: {m}");
        assert_eq!(m["sha256"], sha.as_str(), "{m}");
        assert_eq!(m["gguf"]["architecture"], "gemma", "{m}");
        assert!(
            m["path"].as_str().unwrap().ends_with("gemma.Q8_0.gguf"),
            "{m}"
        );
    }
    // a README is not a model
    let readme = dir.join("README.txt");
    fs_err::write(&readme, "not a model").unwrap();
    oras(
        &python,
        &[
            "push",
            &format!("{}/lab/docs:v1", registry.host),
            readme.to_str().unwrap(),
        ],
    );
    let (s, _, e) = pull(&h, &format!("oci://{}/lab/docs:v1", registry.host)).await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no GGUF layer"),
        "{e}"
    );
}

/// A ModelPack whose layers are a model and its projector (`mmproj*.gguf`), as oras
/// pushes them: the pull brings the model with its projector paired (not a split
/// model of two files), `no_mmproj` leaves the projector out, and the hive's own
/// push of the paired model carries the projector as a layer that a second hive
/// pairs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_layer_comes_with_its_model_and_goes_with_its_push() {
    let (Some(registry), Some(python), Some(smol)) =
        (Registry::start(), python(), hf_test_server::test_model())
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("src");
    fs_err::create_dir_all(&dir).unwrap();
    let model = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    fs_err::copy(&smol, &model).unwrap();
    let projector = dir.join("mmproj-tiny-mlp.gguf");
    fs_err::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/fixtures/mmproj-tiny-mlp.gguf"),
        &projector,
    )
    .unwrap();
    let raw = |p: &Path| format!("{}:application/vnd.cncf.model.weight.v1.raw", p.display());
    oras(
        &python,
        &[
            "push",
            &format!("{}/lab/smol:vision", registry.host),
            &raw(&model),
            &raw(&projector),
        ],
    );
    let reference = format!("oci://{}/lab/smol:vision", registry.host);
    let h = hive_for(home.path(), &registry);
    let (s, state, m) = pull(&h, &reference).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    assert_eq!(m["sha256"], sha256_of(&model).as_str(), "{m}");
    assert!(
        m.get("shards")
            .is_none_or(|s| s.as_array().is_some_and(Vec::is_empty)),
        "{m}"
    );
    assert_eq!(
        m["projector"]["sha256"],
        sha256_of(&projector).as_str(),
        "{m}"
    );
    assert_eq!(m["projector"]["summary"]["vision"], true, "{m}");
    let paired = PathBuf::from(m["projector"]["path"].as_str().unwrap());
    assert_eq!(sha256_of(&paired), sha256_of(&projector));
    let id = m["id"].as_str().unwrap().to_owned();

    // another hive, with no_mmproj: the model alone
    let home2 = tempfile::tempdir().unwrap();
    let h2 = hive_for(home2.path(), &registry);
    let (s, job) = post(
        &h2,
        "/v1/models/download",
        json!({"model_ref": reference, "no_mmproj": true}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let (state, alone, _) = finish(&h2, &job).await;
    assert_eq!(state, "completed", "{alone}");
    assert!(alone.get("projector").is_none(), "{alone}");

    // the first hive's push carries the projector as its own layer
    let again = format!("oci://{}/lab/smol:again", registry.host);
    let (state, out) = push(&h, &id, &again).await;
    assert_eq!(state, "completed", "{out}");
    let manifest = manifest_of(&registry, "lab/smol", "again").await;
    let titles: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["org.opencontainers.image.title"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(titles.len(), 2, "{manifest}");
    assert!(titles[1].starts_with("mmproj"), "{manifest}");
    let (s, state, m2) = pull(&h2, &again).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m2}");
    assert_eq!(
        m2["projector"]["sha256"],
        sha256_of(&projector).as_str(),
        "{m2}"
    );
}

/// Bad references, missing tags, corrupt or lying blobs, a push of what is not
/// available, a server that answers HTML: each a clear error, nothing available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_failures_are_clear_and_record_nothing() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive_for(home.path(), &registry);
    let file = home.path().join("m.gguf");
    fs_err::write(&file, crate::fixture("llama-q4_0.gguf")).unwrap();
    let id = import(&h, &file).await;
    let host = &registry.host;

    for bad in [
        "oci://",
        format!("oci://{host}/Bad/Name:x").leak(),
        format!("oci://{host}/m@sha256:1234").leak(),
        "oci://no host/m:x",
    ] {
        let (s, _, e) = pull(&h, bad).await;
        assert_eq!(s, 400, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "invalid_reference", "{bad}: {e}");
        let (s, e) = post(&h, "/v1/models/push", json!({"id": id, "target": bad})).await;
        assert_eq!(s, 400, "{bad}: {e}");
    }
    let (s, _, e) = pull(&h, &format!("oci://{host}/models/none:v1")).await;
    assert_eq!(s, 404, "{e}");
    // a push of a model not in the catalog, or by digest
    let (s, e) = post(
        &h,
        "/v1/models/push",
        json!({"id": "hf:no/such", "target": format!("oci://{host}/m:x")}),
    )
    .await;
    assert_eq!(s, 404, "{e}");
    let (s, e) = post(
        &h,
        "/v1/models/push",
        json!({"id": id, "target": format!("oci://{host}/m@sha256:{}", "a".repeat(64))}),
    )
    .await;
    assert_eq!(s, 400, "{e}");

    // a good push, then its blob corrupted in the registry's own storage
    let target = format!("oci://{host}/models/m:v1");
    let (state, out) = push(&h, &id, &target).await;
    assert_eq!(state, "completed", "{out}");
    let blob = registry.blob_path(&format!("sha256:{}", sha256_of(&file)));
    let mut bytes = fs_err::read(&blob).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0xff;
    fs_err::write(&blob, &bytes).unwrap();
    let home2 = tempfile::tempdir().unwrap();
    let h2 = hive_for(home2.path(), &registry);
    let (s, state, e) = pull(&h2, &target).await;
    assert_eq!((s, state.as_str()), (202, "failed"), "{e}");
    assert!(
        e["message"].as_str().unwrap_or_default().contains("sha256"),
        "{e}"
    );
    let (_, m) = get(&h2, &format!("/v1/models/{}", crate::enc(&target))).await;
    assert_ne!(m["status"]["state"], "available", "{m}");

    // distribution refuses a manifest that lies about a blob's size; a server that
    // serves one anyway (and answers HTML to all else) must be refused by us
    let sha = sha256_of(&file);
    let lying = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": format!("sha256:{sha}"), "size": 39040 + 4096}],
    })
    .to_string();
    let put = reqwest::Client::new()
        .put(format!("http://{host}/v2/models/m/manifests/lying"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(lying.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status().as_u16(),
        400,
        "distribution checks sizes itself"
    );
    let blob = fs_err::read(&file).unwrap();
    let liar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar_host = liar.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use axum::routing::get;
        let manifest = move || {
            let body = lying.clone();
            async move {
                (
                    [("content-type", "application/vnd.oci.image.manifest.v1+json")],
                    body,
                )
            }
        };
        let app = axum::Router::new()
            .route("/v2/m/manifests/lying", get(manifest))
            .route(
                "/v2/m/blobs/{digest}",
                get(move || {
                    let b = blob.clone();
                    async move { b }
                }),
            )
            .fallback(|| async { axum::response::Html("<html><body>Welcome</body></html>") });
        axum::serve(liar, app).await.unwrap();
    });
    let h3home = tempfile::tempdir().unwrap();
    let h3 = hive(h3home.path(), &["--oci-insecure", &liar_host]);
    let (s, state, e) = pull(&h3, &format!("oci://{liar_host}/m:lying")).await;
    assert_eq!((s, state.as_str()), (202, "failed"), "{e}");
    assert!(
        e["message"].as_str().unwrap_or_default().contains("size"),
        "{e}"
    );
    let (_, m) = get(
        &h3,
        &format!(
            "/v1/models/{}",
            crate::enc(&format!("oci://{liar_host}/m:lying"))
        ),
    )
    .await;
    assert_ne!(m["status"]["state"], "available", "{m}");
    // the same server's HTML
    let (s, _, e) = pull(&h3, &format!("oci://{liar_host}/other:v1")).await;
    assert_eq!(s, 502, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("HTML"),
        "{e}"
    );
    // nothing listening, and plain HTTP not marked
    let (s, _, e) = pull(&h, "oci://127.0.0.1:9/m:v1").await;
    assert!(s >= 400 && s != 500, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{e}"
    );
}

/// A pull from the registry killed (-9) at 40 % goes on from what it had when the
/// hive comes back, without starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_killed_at_40_percent_resumes_from_the_registry() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive_for(home.path(), &registry);
    let file = home.path().join("big.gguf");
    let data = crate::big_gguf(24 << 20);
    fs_err::write(&file, &data).unwrap();
    let id = import(&h, &file).await;
    let target = format!("oci://{}/models/big:v1", registry.host);
    assert_eq!(push(&h, &id, &target).await.0, "completed");
    drop(h);

    let home2 = tempfile::tempdir().unwrap();
    let limit = (4u64 << 20).to_string();
    let mut h2 = hive(
        home2.path(),
        &[
            "--oci-insecure",
            &registry.host,
            "--bandwidth-limit",
            &limit,
        ],
    );
    let (s, _) = post(&h2, "/v1/models/download", json!({"model_ref": target})).await;
    assert_eq!(s, 202);
    let total = data.len() as u64;
    crate::wait_for("40 % on disk", async || {
        let (_, m) = get(&h2, &format!("/v1/models/{}", crate::enc(&target))).await;
        m["progress"]["bytes_done"].as_u64().unwrap_or(0) * 10 >= total * 4
    })
    .await;
    h2.child.kill().unwrap();
    h2.child.wait().unwrap();
    drop(h2);

    let h2 = hive_for(home2.path(), &registry);
    crate::wait_for("the resumed pull", async || {
        let (_, m) = get(&h2, &format!("/v1/models/{}", crate::enc(&target))).await;
        assert_ne!(m["status"]["state"], "failed", "{m}");
        m["status"]["state"] == "available"
    })
    .await;
    let (_, m) = get(&h2, &format!("/v1/models/{}", crate::enc(&target))).await;
    assert_eq!(m["verified"], true, "{m}");
    assert_eq!(fs_err::read(m["path"].as_str().unwrap()).unwrap(), data);
    let (_, jobs) = get(&h2, "/v1/jobs").await;
    let ev = crate::events(&h2, jobs[0]["job_id"].as_str().unwrap()).await;
    let resumed = ev
        .iter()
        .filter(|(k, _)| k == "narration")
        .filter_map(|(_, d)| d["message"].as_str())
        .find(|m| m.starts_with("resuming:"))
        .unwrap_or_else(|| panic!("no resume: {ev:?}"))
        .to_owned();
    // "resuming: 9.6 MiB of 24.0 MiB already on disk": what the resume state last
    // held (written every 50 ms), not nothing
    let mut words = resumed.trim_start_matches("resuming: ").split(' ');
    let kept: f64 = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("MiB"), "{resumed}");
    assert!(kept >= 24.0 / 8.0, "{resumed}");
}

/// A push whose upload was cut goes on from the bytes the registry holds: an
/// upload session left open with one chunk in it is taken up, not begun again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_push_goes_on_from_the_registrys_upload_session() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive_for(home.path(), &registry);
    let file = home.path().join("big.gguf");
    let data = crate::big_gguf(20 << 20);
    fs_err::write(&file, &data).unwrap();
    let id = import(&h, &file).await;
    let sha = sha256_of(&file);
    // as a push killed after its first chunk leaves it: an open session holding
    // the first 16 MiB, and its record in the hive's uploads folder
    let client = reqwest::Client::new();
    let host = &registry.host;
    let opened = client
        .post(format!("http://{host}/v2/models/big/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 202);
    let location = opened.headers()["location"].to_str().unwrap().to_owned();
    let first = 16usize << 20;
    let patched = client
        .patch(
            reqwest::Url::parse(&format!("http://{host}"))
                .unwrap()
                .join(&location)
                .unwrap(),
        )
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", first - 1))
        .body(data[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    let location = patched.headers()["location"].to_str().unwrap().to_owned();
    let uploads = home.path().join("downloads/uploads");
    fs_err::create_dir_all(&uploads).unwrap();
    fs_err::write(
        uploads.join(format!("{sha}.upload.json")),
        json!({"location": location, "offset": first}).to_string(),
    )
    .unwrap();

    let (state, out) = push(&h, &id, &format!("oci://{host}/models/big:v1")).await;
    assert_eq!(state, "completed", "{out}");
    assert_eq!(
        out["bytes_uploaded"].as_u64().unwrap(),
        (data.len() - first) as u64,
        "only the rest was sent: {out}"
    );
    assert_eq!(
        sha256_of(&registry.blob_path(&format!("sha256:{sha}"))),
        sha
    );
    assert!(!uploads.join(format!("{sha}.upload.json")).exists());
}

fn narrations(ev: &[(String, Value)]) -> Vec<String> {
    ev.iter()
        .filter(|(k, _)| k == "narration")
        .filter_map(|(_, d)| d["message"].as_str().map(str::to_owned))
        .collect()
}

/// Three hives share one mirror: the first takes the file from the hub and copies
/// it to the mirror, the other two take it from the mirror; the hub sends the file
/// once. A mirror that is down sends the pull to the hub, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hives_share_one_mirror_and_the_hub_sends_the_file_once() {
    use hf_test_server::{HfServer, Repo, RepoFile};
    let Some(registry) = Registry::start() else {
        return;
    };
    let data = crate::big_gguf(6 << 20);
    let hf = HfServer::start(
        vec![Repo::new(
            "TheOrg/Tiny-GGUF",
            vec![RepoFile::lfs("Tiny.Q4_0.gguf", data.clone())],
        )],
        None,
        false,
    )
    .await;
    let host = registry.host.clone();
    let mirror = format!("oci://{host}/mirror/hf");
    let flags = ["--oci-insecure", &host, "--model-mirror", &mirror];
    let homes: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    let h1 = crate::start(homes[0].path(), &hf.url(), &flags);
    let (s, job) = post(
        &h1,
        "/v1/models/download",
        json!({"model_ref": "hf:TheOrg/Tiny-GGUF"}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let (state, m, ev) = finish(&h1, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    let said = narrations(&ev);
    assert!(
        said.iter().any(|n| n.starts_with("not in the mirror yet")),
        "{said:?}"
    );
    // (the hub counts bytes queued for a part another connection took over too)
    let from_hub = hf.bytes_sent();
    assert!(from_hub >= data.len() as u64);
    // the copy lands in the mirror in the background
    let tags = format!("http://{host}/v2/mirror/hf/theorg/tiny-gguf/tags/list");
    crate::wait_for("the copy in the mirror", async || {
        let r = reqwest::get(&tags).await.unwrap();
        r.status().is_success()
            && r.json::<Value>().await.unwrap()["tags"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
    })
    .await;

    for home in &homes[1..] {
        let h = crate::start(home.path(), &hf.url(), &flags);
        let (_, job) = post(
            &h,
            "/v1/models/download",
            json!({"model_ref": "hf:TheOrg/Tiny-GGUF"}),
        )
        .await;
        let (state, m2, ev) = finish(&h, &job).await;
        assert_eq!(state, "completed", "{ev:?}");
        let said = narrations(&ev);
        assert!(
            said.iter().any(|n| n.starts_with("from the mirror")),
            "{said:?}"
        );
        // the same model, the hub's identity
        assert_eq!(m2["id"], m["id"]);
        assert_eq!(m2["sha256"], m["sha256"]);
        assert_eq!(m2["verified"], true);
        assert_eq!(fs_err::read(m2["path"].as_str().unwrap()).unwrap(), data);
    }
    assert_eq!(
        hf.bytes_sent(),
        from_hub,
        "the hub sent the file once, to the first"
    );

    // the mirror down: from the hub, said so
    let home = tempfile::tempdir().unwrap();
    let h = crate::start(
        home.path(),
        &hf.url(),
        &[
            "--oci-insecure",
            "127.0.0.1:9",
            "--model-mirror",
            "oci://127.0.0.1:9/mirror",
        ],
    );
    let (_, job) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": "hf:TheOrg/Tiny-GGUF"}),
    )
    .await;
    let (state, _, ev) = finish(&h, &job).await;
    assert_eq!(state, "completed", "{ev:?}");
    let said = narrations(&ev);
    assert!(
        said.iter().any(|n| n.starts_with("the mirror failed")),
        "{said:?}"
    );
    assert!(hf.bytes_sent() >= from_hub + data.len() as u64);
}

/// A registry behind a password: refused without one, with a clear error; let in
/// with `RBEE_OCI_USERNAME` / `RBEE_OCI_PASSWORD`, and with docker's config file as
/// `docker login` writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_behind_a_password_takes_our_credentials_and_dockers() {
    let Some(registry) = Registry::start_with_password("lab", "s3cret") else {
        return;
    };
    let host = registry.host.clone();
    let target = format!("oci://{host}/models/m:v1");
    let start = |home: &Path, env: &[(&str, String)]| {
        let mut c = crate::hive_cmd(
            home,
            "http://127.0.0.1:9",
            &["--oci-insecure", &host, "--worker-build-profile", "dev"],
        );
        c.env_remove("RBEE_OCI_USERNAME")
            .env_remove("RBEE_OCI_PASSWORD")
            .env_remove("RBEE_OCI_REGISTRIES")
            .env("DOCKER_CONFIG", home.join("no-docker"));
        for (k, v) in env {
            c.env(k, v);
        }
        crate::spawn_hive(c)
    };

    // no credentials: the push is refused, and says what to do
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &[]);
    let file = home.path().join("m.gguf");
    fs_err::write(&file, crate::fixture("llama-q4_0.gguf")).unwrap();
    let id = import(&h, &file).await;
    let (state, e) = push(&h, &id, &target).await;
    assert_eq!(state, "failed", "{e}");
    assert!(e["message"].as_str().unwrap().contains("401"), "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("RBEE_OCI_USERNAME"),
        "{e}"
    );
    drop(h);

    // ours
    let h = start(
        home.path(),
        &[
            ("RBEE_OCI_USERNAME", "lab".into()),
            ("RBEE_OCI_PASSWORD", "s3cret".into()),
            ("RBEE_OCI_REGISTRIES", host.clone()),
        ],
    );
    let (state, out) = push(&h, &id, &target).await;
    assert_eq!(state, "completed", "{out}");
    // a wrong password is refused
    let home2 = tempfile::tempdir().unwrap();
    let h2 = start(
        home2.path(),
        &[
            ("RBEE_OCI_USERNAME", "lab".into()),
            ("RBEE_OCI_PASSWORD", "wrong".into()),
            ("RBEE_OCI_REGISTRIES", host.clone()),
        ],
    );
    let (s, _, e) = pull(&h2, &target).await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("check the credentials"),
        "{e}"
    );
    drop(h2);

    // docker's config.json, as docker login writes it
    let home3 = tempfile::tempdir().unwrap();
    let docker = home3.path().join("docker");
    fs_err::create_dir_all(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("lab:s3cret");
    fs_err::write(
        docker.join("config.json"),
        json!({"auths": {host.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let h3 = start(
        home3.path(),
        &[("DOCKER_CONFIG", docker.display().to_string())],
    );
    let (s, state, m) = pull(&h3, &target).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    assert_eq!(m["verified"], true, "{m}");
}

/// Uploads a blob (a session, then one `PUT` with the bytes); its digest.
async fn put_blob(host: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let client = reqwest::Client::new();
    let opened = client
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 202);
    let location = opened.headers()["location"].to_str().unwrap();
    let mut url = reqwest::Url::parse(&format!("http://{host}"))
        .unwrap()
        .join(location)
        .unwrap();
    url.query_pairs_mut().append_pair("digest", &digest);
    let r = client
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    digest
}

async fn put_manifest(host: &str, repo: &str, tag: &str, media_type: &str, body: &Value) -> String {
    let text = body.to_string();
    let r = reqwest::Client::new()
        .put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .header("content-type", media_type)
        .body(text.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    )
}

/// A model as Ollama's registry lays it out (a Docker v2 manifest, the GGUF as an
/// `application/vnd.ollama.image.model` layer beside its template and parameters),
/// and a ModelPack manifest named through an OCI index, pulled by tag and by digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_layouts_and_indexes_are_pulled() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let host = registry.host.clone();
    let gguf = crate::fixture("llama-q4_0.gguf");
    let sha = hex::encode(sha2::Sha256::digest(&gguf));
    let model = put_blob(&host, "library/tiny", &gguf).await;
    let template = b"{{ .Prompt }}";
    let template_digest = put_blob(&host, "library/tiny", template).await;
    let config = br#"{"model_format":"gguf","model_family":"llama"}"#;
    let config_digest = put_blob(&host, "library/tiny", config).await;
    let docker_v2 = "application/vnd.docker.distribution.manifest.v2+json";
    put_manifest(
        &host,
        "library/tiny",
        "latest",
        docker_v2,
        &json!({
            "schemaVersion": 2,
            "mediaType": docker_v2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [
                {"mediaType": "application/vnd.ollama.image.model", "digest": model, "size": gguf.len()},
                {"mediaType": "application/vnd.ollama.image.template", "digest": template_digest, "size": template.len()},
            ],
        }),
    )
    .await;
    // the same GGUF as a ModelPack artifact behind an index
    let empty = put_blob(&host, "lab/indexed", b"{}").await;
    let layer = put_blob(&host, "lab/indexed", &gguf).await;
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    let inner = put_manifest(
        &host,
        "lab/indexed",
        "inner",
        oci_manifest,
        &json!({
            "schemaVersion": 2,
            "mediaType": oci_manifest,
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": layer, "size": gguf.len(),
                        "annotations": {"org.opencontainers.image.title": "tiny.Q4_0.gguf"}}],
        }),
    )
    .await;
    let index_type = "application/vnd.oci.image.index.v1+json";
    put_manifest(
        &host,
        "lab/indexed",
        "v1",
        index_type,
        &json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": [{"mediaType": oci_manifest, "digest": inner, "size": 0,
                           "artifactType": "application/vnd.cncf.model.manifest.v1+json"}],
        }),
    )
    .await;

    let home = tempfile::tempdir().unwrap();
    let h = hive_for(home.path(), &registry);
    let (s, state, m) = pull(&h, &format!("oci://{host}/library/tiny")).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    assert_eq!(m["id"], format!("oci://{host}/library/tiny:latest"), "{m}");
    assert_eq!(m["sha256"], sha.as_str(), "{m}");
    assert!(m["path"].as_str().unwrap().ends_with("/model.gguf"), "{m}");
    assert_eq!(m["size"], gguf.len(), "only the model layer: {m}");
    for reference in [
        format!("oci://{host}/lab/indexed:v1"),
        format!("oci://{host}/lab/indexed@{inner}"),
    ] {
        let (s, state, m) = pull(&h, &reference).await;
        assert_eq!((s, state.as_str()), (202, "completed"), "{reference}: {m}");
        assert_eq!(m["sha256"], sha.as_str(), "{m}");
        assert_eq!(m["revision"], inner.as_str(), "{m}");
        assert!(
            m["path"].as_str().unwrap().ends_with("/tiny.Q4_0.gguf"),
            "{m}"
        );
    }
}

/// The Bearer token flow, as registries that use a token service speak it (Docker
/// Hub, GHCR, Harbor): a `401` names the realm, service and scope; the token comes
/// from the realm with the user's basic credentials; the manifest and the blob are
/// fetched with it. The server here speaks only that part of the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_flow_gets_a_token_for_the_manifest_and_the_blob() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let gguf = crate::fixture("llama-q4_0.gguf");
    let (sha, manifest) = modelpack_manifest(&gguf);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let tokens = Arc::new(AtomicUsize::new(0));
    let blob_reads = Arc::new(AtomicUsize::new(0));
    let (realm, t, b) = (
        format!("http://{host}/token"),
        Arc::clone(&tokens),
        Arc::clone(&blob_reads),
    );
    tokio::spawn(async move {
        let challenge = move || {
            (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    format!(
                        r#"Bearer realm="{realm}",service="stub",scope="repository:lab/m:pull""#
                    ),
                )],
            )
                .into_response()
        };
        let authorized = |h: &HeaderMap| {
            h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some("Bearer T-123")
        };
        let c1 = challenge.clone();
        let c2 = challenge.clone();
        let app = axum::Router::new()
            .route(
                "/token",
                axum::routing::get(
                    move |q: axum::extract::Query<std::collections::HashMap<String, String>>,
                          h: HeaderMap| {
                        let t = Arc::clone(&t);
                        async move {
                            // "lab:pw"
                            let basic = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                            let ok = basic == Some("Basic bGFiOnB3")
                                && q.get("service").map(String::as_str) == Some("stub")
                                && q.get("scope").map(String::as_str)
                                    == Some("repository:lab/m:pull");
                            if !ok {
                                return StatusCode::UNAUTHORIZED.into_response();
                            }
                            t.fetch_add(1, Ordering::SeqCst);
                            axum::Json(json!({"token": "T-123"})).into_response()
                        }
                    },
                ),
            )
            .route(
                "/v2/lab/m/manifests/{tag}",
                axum::routing::get(move |h: HeaderMap| {
                    let (body, c) = (manifest.clone(), c1.clone());
                    async move {
                        if !authorized(&h) {
                            return c();
                        }
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/vnd.oci.image.manifest.v1+json",
                            )],
                            body,
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                "/v2/lab/m/blobs/{digest}",
                axum::routing::get(move |h: HeaderMap| {
                    let (bytes, c, b) = (gguf.clone(), c2.clone(), Arc::clone(&b));
                    async move {
                        if !authorized(&h) {
                            return c();
                        }
                        b.fetch_add(1, Ordering::SeqCst);
                        bytes.into_response()
                    }
                }),
            )
            .fallback(move || {
                let c = challenge.clone();
                async move { c() }
            });
        axum::serve(listener, app).await.unwrap();
    });
    let target = format!("oci://{host}/lab/m:v1");
    let start = |home: &Path, password: &str| {
        let mut c = crate::hive_cmd(home, "http://127.0.0.1:9", &["--oci-insecure", &host]);
        c.env("RBEE_OCI_USERNAME", "lab")
            .env("RBEE_OCI_PASSWORD", password)
            .env("RBEE_OCI_REGISTRIES", &host)
            .env("DOCKER_CONFIG", home.join("no-docker"));
        crate::spawn_hive(c)
    };
    // a wrong password: the token service refuses, and we say so
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), "nope");
    let (s, _, e) = pull(&h, &target).await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token server"),
        "{e}"
    );
    drop(h);
    let h = start(home.path(), "pw");
    let (s, state, m) = pull(&h, &target).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    assert_eq!(m["sha256"], sha.as_str(), "{m}");
    assert!(tokens.load(Ordering::SeqCst) >= 1);
    assert!(
        blob_reads.load(Ordering::SeqCst) >= 1,
        "the blob came with the token"
    );
}

/// Credentials go only where they belong: to the registries named in
/// `RBEE_OCI_REGISTRIES`, and over plain HTTP only to a host named insecure. A
/// registry (here a stub that speaks the Bearer challenge and records every
/// `Authorization` it is sent) gets none when the credentials are another host's, or
/// when its token realm is a plain-HTTP host not named insecure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_a_registry_or_realm_they_are_not_for() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    // the realm names this same server as `localhost`, a host not named insecure
    let realm = format!("http://localhost:{port}/token");
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(move |h: HeaderMap| {
            let (record, realm) = (Arc::clone(&record), realm.clone());
            async move {
                if let Some(a) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
                    record.lock().unwrap().push(a.to_owned());
                }
                (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        format!(r#"Bearer realm="{realm}",service="stub""#),
                    )],
                )
                    .into_response()
            }
        });
        axum::serve(listener, app).await.unwrap();
    });
    let host = format!("127.0.0.1:{port}");
    let target = format!("oci://{host}/lab/m:v1");
    for scoped_to in ["registry.other.example:5000", host.as_str()] {
        let home = tempfile::tempdir().unwrap();
        let mut c = crate::hive_cmd(
            home.path(),
            "http://127.0.0.1:9",
            &["--oci-insecure", &host],
        );
        c.env("RBEE_OCI_USERNAME", "lab")
            .env("RBEE_OCI_PASSWORD", "never-sent-7f")
            .env("RBEE_OCI_REGISTRIES", scoped_to)
            .env("DOCKER_CONFIG", home.path().join("no-docker"));
        let h = crate::spawn_hive(c);
        let (s, _, e) = pull(&h, &target).await;
        assert_eq!(s, 403, "{e}");
        assert_eq!(model_list(&h).await, json!([]));
    }
    let seen = seen.lock().unwrap().clone();
    assert!(seen.is_empty(), "the stub was sent credentials: {seen:?}");
}

/// A token that expires in the middle of a blob (Docker Hub's last 300 s): the
/// registry's 401 is answered with a new token from the realm, and the download
/// resumes from what it already has. The stub cuts the first blob answer half-way and
/// refuses the token it was sent with from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_blob_is_renewed_and_the_pull_resumes() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let gguf = crate::big_gguf(6 << 20);
    let (sha, manifest) = modelpack_manifest(&gguf);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let issued = Arc::new(AtomicUsize::new(0));
    let expired = Arc::new(Mutex::new(Vec::<String>::new()));
    let blob_bytes = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let realm = format!("http://{host}/token");
    let (i2, e2, b2) = (
        Arc::clone(&issued),
        Arc::clone(&expired),
        Arc::clone(&blob_bytes),
    );
    tokio::spawn(async move {
        let challenge = move || {
            (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    format!(r#"Bearer realm="{realm}",service="stub""#),
                )],
            )
                .into_response()
        };
        let valid = {
            let (issued, expired) = (Arc::clone(&i2), Arc::clone(&e2));
            move |h: &HeaderMap| -> Option<String> {
                let t = h
                    .get(header::AUTHORIZATION)?
                    .to_str()
                    .ok()?
                    .strip_prefix("Bearer ")?
                    .to_owned();
                let latest = format!("T-{}", issued.load(Ordering::SeqCst));
                (t == latest && !expired.lock().unwrap().contains(&t)).then_some(t)
            }
        };
        let (v1, v2, c1, c2) = (valid.clone(), valid, challenge.clone(), challenge.clone());
        let app = axum::Router::new()
            .route(
                "/token",
                axum::routing::get(move || {
                    let n = i2.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { axum::Json(json!({"token": format!("T-{n}")})).into_response() }
                }),
            )
            .route(
                "/v2/lab/m/manifests/{tag}",
                axum::routing::any(move |h: HeaderMap| {
                    let (body, ok, c) = (manifest.clone(), v1(&h).is_some(), c1.clone());
                    async move {
                        if !ok {
                            return c();
                        }
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/vnd.oci.image.manifest.v1+json",
                            )],
                            body,
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                "/v2/lab/m/blobs/{digest}",
                axum::routing::any(move |h: HeaderMap| {
                    let (data, token, c) = (gguf.clone(), v2(&h), c2.clone());
                    let (expired, sent, cut) = (Arc::clone(&e2), Arc::clone(&b2), Arc::clone(&cut));
                    async move {
                        let Some(token) = token else { return c() };
                        let len = data.len();
                        let (start, end) = h
                            .get(header::RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("bytes="))
                            .and_then(|v| v.split_once('-'))
                            .map_or((0, len - 1), |(a, b)| {
                                (
                                    a.parse().unwrap_or(0),
                                    b.parse().unwrap_or(len - 1).min(len - 1),
                                )
                            });
                        let body = data[start..=end].to_vec();
                        // the first answer of substance: this token dies now
                        if body.len() >= (1 << 19) && !cut.swap(true, Ordering::SeqCst) {
                            // this token dies now: half of what was asked, then the cut
                            expired.lock().unwrap().push(token);
                            let half = body[..body.len() / 2].to_vec();
                            sent.fetch_add(half.len(), Ordering::SeqCst);
                            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                                vec![Ok(half), Err(std::io::Error::other("cut"))];
                            return (
                                StatusCode::PARTIAL_CONTENT,
                                [
                                    (header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")),
                                    (header::CONTENT_LENGTH, body.len().to_string()),
                                ],
                                axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                            )
                                .into_response();
                        }
                        sent.fetch_add(body.len(), Ordering::SeqCst);
                        (
                            StatusCode::PARTIAL_CONTENT,
                            [
                                (header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")),
                                (header::ACCEPT_RANGES, "bytes".to_owned()),
                            ],
                            body,
                        )
                            .into_response()
                    }
                }),
            )
            .fallback(move || {
                let c = challenge.clone();
                async move { c() }
            });
        axum::serve(listener, app).await.unwrap();
    });
    let home = tempfile::tempdir().unwrap();
    let mut c = crate::hive_cmd(
        home.path(),
        "http://127.0.0.1:9",
        &["--oci-insecure", &host],
    );
    c.env("DOCKER_CONFIG", home.path().join("no-docker"));
    let h = crate::spawn_hive(c);
    let (s, state, m) = pull(&h, &format!("oci://{host}/lab/m:v1")).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    assert_eq!(m["sha256"], sha.as_str(), "{m}");
    assert!(
        issued.load(Ordering::SeqCst) >= 2,
        "a second token was asked for"
    );
    let sent = blob_bytes.load(Ordering::SeqCst);
    assert!(
        sent < (6 << 20) + (6 << 20) / 2 + (1 << 20),
        "the pull resumed, not restarted: {sent} bytes sent"
    );
}

/// Two Debian `docker-registry`s: one behind a password, one open, each reached
/// through a loopback proxy that records the `Authorization` headers it passes on.
/// With the credentials scoped to the first (`RBEE_OCI_REGISTRIES`), a push there
/// and a pull from the second both work, and the second never sees a credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_credentials_reach_their_registry_and_never_the_other() {
    use std::sync::{Arc, Mutex};
    let (Some(locked), Some(open)) = (
        Registry::start_with_password("lab", "s3cret"),
        Registry::start(),
    ) else {
        return;
    };
    /// A proxy to `upstream` that records each request's Authorization.
    async fn recording_proxy(upstream: String) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let record = Arc::clone(&seen);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let me = host.clone();
        tokio::spawn(async move {
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let (client, upstream, record, me) = (
                    client.clone(),
                    upstream.clone(),
                    Arc::clone(&record),
                    me.clone(),
                );
                async move {
                    let (parts, body) = req.into_parts();
                    let auth = parts
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    record.lock().unwrap().push(auth);
                    let url = format!("http://{upstream}{}", parts.uri);
                    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                    let mut rb = client.request(parts.method.clone(), url).body(body);
                    for (k, v) in &parts.headers {
                        if k != "host" {
                            rb = rb.header(k, v);
                        }
                    }
                    let r = rb.send().await.unwrap();
                    let mut out = axum::http::Response::builder().status(r.status().as_u16());
                    for (k, v) in r.headers() {
                        // locations name the upstream; the client must come back here
                        let v = v.to_str().unwrap_or_default().replace(&upstream, &me);
                        out = out.header(k.as_str(), v);
                    }
                    out.body(axum::body::Body::from(r.bytes().await.unwrap()))
                        .unwrap()
                }
            });
            axum::serve(listener, app).await.unwrap();
        });
        (host, seen)
    }
    let (locked_host, locked_seen) = recording_proxy(locked.host.clone()).await;
    let (open_host, open_seen) = recording_proxy(open.host.clone()).await;
    let home = tempfile::tempdir().unwrap();
    let insecure = format!("{locked_host},{open_host}");
    let mut c = crate::hive_cmd(
        home.path(),
        "http://127.0.0.1:9",
        &["--oci-insecure", &insecure],
    );
    c.env("RBEE_OCI_USERNAME", "lab")
        .env("RBEE_OCI_PASSWORD", "s3cret")
        .env("RBEE_OCI_REGISTRIES", &locked_host)
        .env("DOCKER_CONFIG", home.path().join("no-docker"));
    let h = crate::spawn_hive(c);
    let file = home.path().join("m.gguf");
    fs_err::write(&file, crate::fixture("llama-q4_0.gguf")).unwrap();
    let id = import(&h, &file).await;
    // the same model onto both: the password one with the credentials, the open one
    // without
    for host in [&locked_host, &open_host] {
        let (state, out) = push(&h, &id, &format!("oci://{host}/models/m:v1")).await;
        assert_eq!(state, "completed", "{host}: {out}");
    }
    let (s, state, m) = pull(&h, &format!("oci://{open_host}/models/m:v1")).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    let locked_seen = locked_seen.lock().unwrap().clone();
    assert!(
        locked_seen
            .iter()
            .flatten()
            .any(|a| a.starts_with("Basic ")),
        "the password registry got its credentials: {locked_seen:?}"
    );
    let open_seen = open_seen.lock().unwrap().clone();
    assert!(!open_seen.is_empty());
    assert!(
        open_seen.iter().all(Option::is_none),
        "the open registry was sent an Authorization: {open_seen:?}"
    );
}

/// An `identitytoken` in docker's config (as `az acr login` writes it) is used as an
/// OAuth2 refresh token at the realm, and only for its own registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_token_from_dockers_config_gets_the_registry_token() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    let gguf = crate::fixture("llama-q4_0.gguf");
    let (sha, manifest) = modelpack_manifest(&gguf);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{host}/oauth2/token");
    tokio::spawn(async move {
        let app = axum::Router::new()
            .route(
                "/oauth2/token",
                axum::routing::post(|form: axum::extract::Form<std::collections::HashMap<String, String>>| async move {
                    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
                        && form.get("refresh_token").map(String::as_str) == Some("ID-TOKEN-42")
                        && form.get("service").map(String::as_str) == Some("stub");
                    if ok {
                        axum::Json(json!({"access_token": "ACCESS-9"})).into_response()
                    } else {
                        StatusCode::UNAUTHORIZED.into_response()
                    }
                }),
            )
            .fallback(move |req: axum::extract::Request| {
                let (realm, manifest, gguf) = (realm.clone(), manifest.clone(), gguf.clone());
                async move {
                    let h: &HeaderMap = req.headers();
                    if h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some("Bearer ACCESS-9") {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, format!(r#"Bearer realm="{realm}",service="stub",scope="repository:lab/m:pull""#))],
                        )
                            .into_response();
                    }
                    if req.uri().path().contains("/manifests/") {
                        return ([(header::CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json")], manifest).into_response();
                    }
                    gguf.into_response()
                }
            });
        axum::serve(listener, app).await.unwrap();
    });
    let home = tempfile::tempdir().unwrap();
    let docker = home.path().join("docker");
    fs_err::create_dir_all(&docker).unwrap();
    fs_err::write(
        docker.join("config.json"),
        json!({"auths": {host.clone(): {"auth": "", "identitytoken": "ID-TOKEN-42"}}}).to_string(),
    )
    .unwrap();
    let mut c = crate::hive_cmd(
        home.path(),
        "http://127.0.0.1:9",
        &["--oci-insecure", &host],
    );
    c.env_remove("RBEE_OCI_USERNAME")
        .env("DOCKER_CONFIG", &docker);
    let h = crate::spawn_hive(c);
    let (s, state, m) = pull(&h, &format!("oci://{host}/lab/m:v1")).await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    assert_eq!(m["sha256"], sha.as_str(), "{m}");
}

/// A ModelPack manifest of one GGUF layer, as a stub registry serves it: the layer's
/// sha256, and the manifest's text.
fn modelpack_manifest(gguf: &[u8]) -> (String, String) {
    let sha = hex::encode(sha2::Sha256::digest(gguf));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": format!("sha256:{sha}"), "size": gguf.len()}],
    })
    .to_string();
    (sha, manifest)
}

/// Puts a model in Ollama's layout at `repo:tag`: a Docker v2 manifest, the GGUF as
/// Ollama's model layer, and the small layers given (media type, bytes).
async fn put_ollama_model(host: &str, repo: &str, tag: &str, gguf: &[u8], small: &[(&str, &[u8])]) {
    let model = put_blob(host, repo, gguf).await;
    let config = br#"{"model_format":"gguf","model_family":"llama"}"#;
    let config_digest = put_blob(host, repo, config).await;
    let mut layers = vec![
        json!({"mediaType": "application/vnd.ollama.image.model", "digest": model, "size": gguf.len()}),
    ];
    for (kind, bytes) in small {
        let digest = put_blob(host, repo, bytes).await;
        layers.push(json!({"mediaType": kind, "digest": digest, "size": bytes.len()}));
    }
    let docker_v2 = "application/vnd.docker.distribution.manifest.v2+json";
    put_manifest(
        host,
        repo,
        tag,
        docker_v2,
        &json!({
            "schemaVersion": 2,
            "mediaType": docker_v2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers,
        }),
    )
    .await;
}

/// `ollama:NAME[:TAG]`, and the bare names Ollama's clients send, from a registry in
/// Ollama's layout (Debian's `docker-registry` standing for `registry.ollama.ai`):
/// the official `ollama` client's pull, the template, system prompt and parameters
/// kept in the preset and shown by `/api/show`, a namespace, a name the one endpoint
/// is asked for and pulls, a second pull that fetches nothing; a name the library
/// lacks is a 404, and bad names and bad layers record nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_names_are_pulled_from_the_library_with_their_template_and_parameters() {
    let (Some(registry), Some(python)) = (Registry::start(), crate::python_with("ollama")) else {
        return;
    };
    let host = registry.host.clone();
    let gguf = crate::fixture("llama-q4_0.gguf");
    let sha = hex::encode(sha2::Sha256::digest(&gguf));
    let template = b"{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}";
    let system = b"You are terse.";
    let params = br#"{"temperature": 0.3, "stop": ["<|user|>"], "num_ctx": 4096}"#;
    let small: Vec<(&str, &[u8])> = vec![
        ("application/vnd.ollama.image.template", template),
        ("application/vnd.ollama.image.system", system),
        ("application/vnd.ollama.image.params", params),
        ("application/vnd.ollama.image.license", b"MIT"),
    ];
    put_ollama_model(&host, "library/tiny", "latest", &gguf, &small).await;
    put_ollama_model(&host, "library/tiny", "v2", &gguf, &[]).await;
    put_ollama_model(&host, "someone/tiny", "q4", &gguf, &[]).await;
    put_ollama_model(
        &host,
        "library/badparams",
        "latest",
        &gguf,
        &[("application/vnd.ollama.image.params", b"[1, 2]")],
    )
    .await;
    let huge = vec![b'x'; 70 << 10];
    put_ollama_model(
        &host,
        "library/hugetemplate",
        "latest",
        &gguf,
        &[("application/vnd.ollama.image.template", &huge)],
    )
    .await;

    let home = tempfile::tempdir().unwrap();
    let h = hive(
        home.path(),
        &["--oci-insecure", &host, "--ollama-registry", &host],
    );
    let pulled = crate::python_script(&python, "ollama_pull.py", &[&h.url, "tiny"]).await;
    assert_eq!(pulled["status"], "success", "{pulled}");
    let (s, m) = get(
        &h,
        &format!("/v1/models/{}", crate::enc("ollama:tiny:latest")),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        (m["provider"].as_str(), m["alias"].as_str()),
        (Some("ollama"), Some("tiny:latest")),
        "{m}"
    );
    assert_eq!(m["sha256"], sha.as_str(), "{m}");
    assert_eq!(m["size"], gguf.len(), "only the model layer is a file: {m}");
    assert_eq!(m["preset"]["system"], "You are terse.", "{m}");
    assert_eq!(
        m["preset"]["template"],
        std::str::from_utf8(template).unwrap(),
        "{m}"
    );
    assert_eq!(m["preset"]["parameters"]["temperature"], 0.3, "{m}");
    let (s, shown) = post(&h, "/api/show", json!({"model": "tiny"})).await;
    assert_eq!(s, 200, "{shown}");
    assert_eq!(shown["template"], std::str::from_utf8(template).unwrap());
    assert!(
        shown["parameters"]
            .as_str()
            .unwrap()
            .contains("temperature"),
        "{shown}"
    );
    assert!(
        shown["modelfile"]
            .as_str()
            .unwrap()
            .contains("SYSTEM \"\"\"You are terse.\"\"\""),
        "{shown}"
    );
    // pulled again: it is here, nothing is fetched
    let (s, again) = post(&h, "/api/pull", json!({"model": "tiny", "stream": false})).await;
    assert_eq!(
        (s, again["status"].as_str()),
        (200, Some("success")),
        "{again}"
    );
    let (_, jobs) = get(&h, "/v1/jobs").await;
    let downloads = jobs.as_array().map_or(0, |j| {
        j.iter()
            .filter(|j| j["operation"] == "model_download")
            .count()
    });
    assert_eq!(downloads, 1, "{jobs}");
    // a namespace, by its whole reference
    let (s, state, m) = pull(&h, "ollama:someone/tiny:q4").await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    assert_eq!(m["id"], "ollama:someone/tiny:q4", "{m}");
    // the one endpoint asked for a NAME:TAG nobody here has: pulled from the library
    let (s, shown) = post(&h, "/api/show", json!({"model": "tiny:v2"})).await;
    assert_eq!(s, 200, "{shown}");
    let (s, _) = get(&h, &format!("/v1/models/{}", crate::enc("ollama:tiny:v2"))).await;
    assert_eq!(s, 200);
    let before = model_list(&h).await;
    // what the library lacks, and what cannot be taken
    let (s, e) = post(&h, "/api/show", json!({"model": "nope:1"})).await;
    assert_eq!(s, 404, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("Ollama's library"),
        "{e}"
    );
    let (s, e) = post(&h, "/api/pull", json!({"model": "nope", "stream": false})).await;
    assert_eq!(s, 404, "{e}");
    for (reference, words) in [
        ("ollama:a/b/c", "NAMESPACE/NAME"),
        ("ollama:Bad Name", "not a name"),
        ("ollama:badparams", "not a JSON object"),
        ("ollama:hugetemplate", "more than such a layer may be"),
    ] {
        let (s, _, e) = pull(&h, reference).await;
        assert!((400..500).contains(&s), "{reference}: {s} {e}");
        assert!(e.to_string().contains(words), "{reference}: {e}");
    }
    assert_eq!(model_list(&h).await, before);

    // a vision model's projector layer comes with it (when the model takes it)
    let projector = crate::fixture("mmproj-tiny-mlp.gguf");
    put_ollama_model(
        &host,
        "library/tinyeyes",
        "latest",
        &gguf,
        &[("application/vnd.ollama.image.projector", &projector)],
    )
    .await;
    let (s, state, m) = pull(&h, "ollama:tinyeyes").await;
    assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
    // 576 wide, for a model 64 wide: left out
    assert!(m.get("projector").is_none(), "{m}");
    if let Some(smol) = hf_test_server::test_model() {
        let smol = fs_err::read(smol).unwrap();
        put_ollama_model(
            &host,
            "library/smolvision",
            "latest",
            &smol,
            &[("application/vnd.ollama.image.projector", &projector)],
        )
        .await;
        let (s, state, m) = pull(&h, "ollama:smolvision").await;
        assert_eq!((s, state.as_str()), (202, "completed"), "{m}");
        assert_eq!(m["projector"]["summary"]["vision"], true, "{m}");
        assert_eq!(
            m["projector"]["sha256"],
            hex::encode(sha2::Sha256::digest(&projector)).as_str()
        );
        assert!(std::path::Path::new(m["projector"]["path"].as_str().unwrap()).exists());
    }
}
