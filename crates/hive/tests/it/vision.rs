//! Vision: a model paired with its multimodal projector (`rbee models import MODEL
//! --mmproj FILE`), against a real llama-server. The projector is a tiny random-
//! weight LLaVA-style one written by llama.cpp's `gguf` package
//! (`crates/gguf/tests/fixtures/make_fixtures.py`), 576 wide for SmolLM2-135M. The
//! same image through the hive as OpenAI's `image_url`, Ollama's `images` and an
//! Anthropic image block gives exactly the greedy text of the same llama-server
//! started by hand with the worker's own command line; what is not an image, an
//! image URL to fetch, and an image for a model that cannot see are 400s in each
//! family's shape; a file that is not a projector, or another model's, is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::engines::{add, llama_server};
use crate::workers::{hive, import};
use crate::{get, post};

use hf_test_server::test_model as smollm2;

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gguf/tests/fixtures")
        .join(name)
}

/// A 32x32 24-bit BMP of a gradient: an image with no compression to write.
fn bmp() -> Vec<u8> {
    let (w, h) = (32u32, 32u32);
    let row = w * 3;
    let size = 54 + row * h;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&(row * h).to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    for y in 0..h {
        for x in 0..w {
            #[allow(clippy::cast_possible_truncation)]
            b.extend_from_slice(&[(x * 8) as u8, (y * 8) as u8, ((x + y) * 4) as u8]);
        }
    }
    b
}

/// llama-server started by hand with the hive's worker's own command line, on
/// another port and with no key; killed when dropped.
struct ByHand(std::process::Child, String);

impl Drop for ByHand {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn by_hand(worker: &Value) -> ByHand {
    let pid = worker["pid"].as_u64().unwrap();
    let cmdline = fs_err::read(format!("/proc/{pid}/cmdline")).unwrap();
    let mut args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = args.remove(0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    if let Some(i) = args.iter().position(|a| a == "--port") {
        args[i + 1] = port.to_string();
    }
    let child = Command::new(program)
        .args(&args)
        .env_remove("LLAMA_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    crate::wait_for("llama-server by hand", async || {
        reqwest::get(format!("{url}/health"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    ByHand(child, url)
}

async fn post_to(url: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = crate::client()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_reaches_the_model_through_every_family_as_llama_server_sees_it() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    add(&h, &server, "cpu").await;
    let local = home.path().join("SmolLM2.gguf");
    fs_err::copy(&model, &local).unwrap();
    // paired at import, by the command line
    let rbee = PathBuf::from(env!("CARGO_BIN_EXE_rbee-hive")).with_file_name("rbee");
    let out = Command::new(&rbee)
        .args(["models", "import"])
        .arg(&local)
        .arg("--mmproj")
        .arg(fixture_path("mmproj-tiny-mlp.gguf"))
        .env("RBEE_HIVE_URL", &h.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("paired with its projector"));
    let (_, list) = get(&h, "/v1/models").await;
    let m = list["data"][0].clone();
    let (id, alias) = (
        m["id"].as_str().unwrap().to_owned(),
        m["alias"].as_str().unwrap().to_owned(),
    );
    assert_eq!(m["capabilities"], json!(["completion", "vision"]), "{m}");
    assert_eq!(m["projector"]["summary"]["projection_dim"], 576, "{m}");
    let (_, shown) = post(&h, "/api/show", json!({"model": alias})).await;
    assert_eq!(
        shown["capabilities"],
        json!(["completion", "vision"]),
        "{shown}"
    );

    let image = base64::engine::general_purpose::STANDARD.encode(bmp());
    let data_url = format!("data:image/bmp;base64,{image}");
    let openai = json!({"model": alias, "max_tokens": 12, "temperature": 0, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                     {"type": "image_url", "image_url": {"url": data_url}}]}]});
    let (s, via_hive) = post(&h, "/v1/chat/completions", openai.clone()).await;
    assert_eq!(s, 200, "{via_hive}");
    let text = via_hive["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!text.is_empty());
    // the worker got the projector, and the same server by hand says the same
    let (_, workers) = get(&h, "/v1/workers").await;
    let worker = workers["workers"][0].clone();
    let cmdline =
        String::from_utf8_lossy(&fs_err::read(format!("/proc/{}/cmdline", worker["pid"])).unwrap())
            .replace('\0', " ");
    assert!(
        cmdline.contains("--mmproj") && cmdline.contains("mmproj-tiny-mlp.gguf"),
        "{cmdline}"
    );
    let hand = by_hand(&worker).await;
    let (s, by) = post_to(&hand.1, "/v1/chat/completions", &openai).await;
    assert_eq!(s, 200, "{by}");
    assert_eq!(by["choices"][0]["message"]["content"], text.as_str());
    // Ollama's images, and an Anthropic image block: the same prompt, the same text
    let (s, ollama) = post(
        &h,
        "/api/chat",
        json!({"model": alias, "stream": false,
        "options": {"temperature": 0, "num_predict": 12},
        "messages": [{"role": "user", "content": "What is in this image?", "images": [image]}]}),
    )
    .await;
    assert_eq!(s, 200, "{ollama}");
    assert_eq!(ollama["message"]["content"], text.as_str());
    // `rbee run` takes an image file named in the prompt, as `ollama run` does
    let picture = home.path().join("square.bmp");
    fs_err::write(&picture, bmp()).unwrap();
    let out = Command::new(&rbee)
        .args(["run", &alias])
        .arg(format!("What is in this image? {}", picture.display()))
        .args([
            "--parameter",
            "temperature=0",
            "--parameter",
            "num_predict=12",
        ])
        .env("RBEE_HIVE_URL", &h.url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Added image"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        text.trim_end()
    );
    let anthropic = json!({"model": alias, "max_tokens": 12, "temperature": 0, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": image}}]}]});
    let (s, via) = post(&h, "/v1/messages", anthropic.clone()).await;
    assert_eq!(s, 200, "{via}");
    let (_, by) = post_to(&hand.1, "/v1/messages", &anthropic).await;
    assert_eq!(
        via["content"][0]["text"], by["content"][0]["text"],
        "{via} / {by}"
    );

    // what is refused, in each family's shape
    let not_an_image = base64::engine::general_purpose::STANDARD.encode(b"plain text, not pixels");
    for (path, body, words) in [
        (
            "/v1/chat/completions",
            json!({"model": alias, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{not_an_image}")}}]}]}),
            "not an image",
        ),
        (
            "/v1/chat/completions",
            json!({"model": alias, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}]}),
            "fetches no image",
        ),
        (
            "/api/chat",
            json!({"model": alias, "messages": [{"role": "user", "content": "x", "images": [not_an_image]}]}),
            "not an image",
        ),
        (
            "/api/generate",
            json!({"model": alias, "prompt": "x", "raw": true, "images": [image]}),
            "raw prompt",
        ),
        (
            "/v1/messages",
            json!({"model": alias, "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://127.0.0.1:9/x.png"}}]}]}),
            "fetches no image",
        ),
    ] {
        let (s, e) = post(&h, path, body).await;
        assert_eq!(s, 400, "{path}: {e}");
        assert!(e.to_string().contains(words), "{path}: {e}");
    }

    // a model that cannot see: the image is a 400 before any worker starts
    let text_only = home.path().join("tiny.gguf");
    fs_err::write(&text_only, crate::fixture("llama-q4_0.gguf")).unwrap();
    let blind = import(&h, &text_only).await;
    let (_, b) = get(&h, &format!("/v1/models/{}", crate::enc(&blind))).await;
    let blind_alias = b["alias"].as_str().unwrap().to_owned();
    for (path, body, shape) in [
        (
            "/v1/chat/completions",
            json!({"model": blind_alias, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}}]}]}),
            "/error/message",
        ),
        (
            "/api/generate",
            json!({"model": blind_alias, "prompt": "x", "images": [image], "stream": false}),
            "/error",
        ),
        (
            "/v1/messages",
            json!({"model": blind_alias, "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": image}}]}]}),
            "/error/message",
        ),
    ] {
        let (s, e) = post(&h, path, body).await;
        assert_eq!(s, 400, "{path}: {e}");
        let message = e.pointer(shape).and_then(Value::as_str).unwrap_or_default();
        assert!(message.contains("no vision projector"), "{path}: {e}");
    }
    assert_eq!(crate::workers_of(&h).await, 1);

    // a projector that says its image is 65536 pixels a side (the engine would
    // allocate for it): the same file with that one value changed in its header
    let mut huge = fs_err::read(fixture_path("mmproj-tiny-mlp.gguf")).unwrap();
    let key = b"clip.vision.image_size";
    let at = huge.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(huge[at..at + 4], 4u32.to_le_bytes(), "a u32 value");
    huge[at + 4..at + 8].copy_from_slice(&65536u32.to_le_bytes());
    let huge_path = home.path().join("mmproj-huge-image.gguf");
    fs_err::write(&huge_path, &huge).unwrap();

    // pairing what is not a projector, or another model's, changes nothing
    for (model_id, path, status, words) in [
        (
            id.as_str(),
            huge_path.display().to_string(),
            400,
            "over 8192",
        ),
        (
            blind.as_str(),
            fixture_path("mmproj-tiny-mlp.gguf").display().to_string(),
            400,
            "another model's projector",
        ),
        (
            id.as_str(),
            fixture_path("llama-q4_0.gguf").display().to_string(),
            400,
            "not a multimodal projector",
        ),
        (
            id.as_str(),
            "relative/mmproj.gguf".to_owned(),
            400,
            "absolute",
        ),
        (
            id.as_str(),
            "/nonexistent/mmproj.gguf".to_owned(),
            404,
            "cannot open",
        ),
        (
            "no-such-model",
            fixture_path("mmproj-tiny-mlp.gguf").display().to_string(),
            404,
            "not in the catalog",
        ),
    ] {
        let (s, e) = post(
            &h,
            "/v1/models/mmproj",
            json!({"id": model_id, "path": path}),
        )
        .await;
        assert_eq!(s, status, "{path}: {e}");
        assert!(e.to_string().contains(words), "{path}: {e}");
    }
    let (_, b) = get(&h, &format!("/v1/models/{}", crate::enc(&blind))).await;
    assert!(b.get("projector").is_none(), "{b}");
    // a projector is no model of its own
    let before = crate::model_list(&h).await;
    let (s, job) = post(
        &h,
        "/v1/models/import",
        json!({"path": fixture_path("mmproj-tiny-mlp.gguf")}),
    )
    .await;
    let said = if s == 202 {
        let (state, result, events) = crate::workers::finish(&h, &job).await;
        assert_ne!(state, "completed", "{result}");
        format!("{result} {events:?}")
    } else {
        job.to_string()
    };
    assert!(said.contains("multimodal projector"), "{said}");
    assert_eq!(crate::model_list(&h).await, before);
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&id))).await;
    assert_eq!(m["projector"]["summary"]["vision"], true);

    // a preset runs it without its projector: text only, no --mmproj, less memory
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&id))).await;
    let projector_size = m["projector"]["size"].as_u64().unwrap();
    assert_eq!(m["memory"]["worker"]["projector_bytes"], projector_size);
    let total_with = m["memory"]["worker"]["total_bytes"].as_u64().unwrap();
    let preset_path = format!("/v1/models/{}", crate::enc(&id));
    let no_mmproj = async |v: Value| crate::patch(&h, &preset_path, json!({"no_mmproj": v})).await;
    // a model made over it answers as it runs
    let (s, made) = post(
        &h,
        "/api/copy",
        json!({"source": alias, "destination": "seer:1"}),
    )
    .await;
    assert_eq!(s, 200, "{made}");
    assert_eq!(
        capabilities(&h, "seer:1").await,
        json!(["completion", "vision"])
    );
    // how it runs is its base's to say
    let (s, e) = crate::patch(&h, "/v1/models/seer%3A1", json!({"no_mmproj": true})).await;
    assert_eq!(s, 400, "{e}");
    assert!(e.to_string().contains("is set on"), "{e}");
    let (s, m) = no_mmproj(json!(true)).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(capabilities(&h, &id).await, json!(["completion"]));
    assert_eq!(capabilities(&h, "seer:1").await, json!(["completion"]));
    let (_, listed) = get(&h, "/openai/v1/models").await;
    let seer = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "seer:1")
        .cloned();
    assert_eq!(
        seer.map(|m| m["capabilities"].clone()),
        Some(json!(["completion"])),
        "{listed}"
    );
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": id})).await;
    assert_eq!(s, 200);
    let (s, e) = post(&h, "/v1/chat/completions", openai.clone()).await;
    assert_eq!(s, 400, "{e}");
    assert!(e.to_string().contains("no_mmproj"), "{e}");
    let (s, answer) = post(
        &h,
        "/v1/chat/completions",
        json!({"model": alias, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    let (_, workers) = get(&h, "/v1/workers").await;
    let pid = workers["workers"][0]["pid"].clone();
    let cmdline = String::from_utf8_lossy(&fs_err::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(!cmdline.contains("--mmproj"), "{cmdline}");
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&id))).await;
    let total_without = m["memory"]["worker"]["total_bytes"].as_u64().unwrap();
    assert_eq!(total_with - total_without, projector_size, "{m}");
    let (s, e) = no_mmproj(json!("off")).await;
    assert_eq!(s, 400, "{e}");
    let (s, m) = no_mmproj(Value::Null).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(capabilities(&h, &id).await, json!(["completion", "vision"]));
}

/// What the model list says a model can do.
async fn capabilities(h: &crate::Hive, id: &str) -> Value {
    let (_, list) = get(h, "/v1/models").await;
    list["data"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["id"] == id))
        .map_or(Value::Null, |m| m["capabilities"].clone())
}

/// An `hf:` pull of a repo holding the model, a second quantization and two
/// projectors fetches exactly the model and the F16 projector, as `llama-server -hf`
/// does, and the model then reads an image; a repo whose projector is another
/// model's gets the model alone, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_brings_the_repos_projector_with_the_model() {
    use hf_test_server::{HfServer, Repo, RepoFile};
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let smol = fs_err::read(&model).unwrap();
    let projector = fs_err::read(fixture_path("mmproj-tiny-mlp.gguf")).unwrap();
    let mut other_projector = projector.clone();
    // the same header, other weights: a Q8_0 projector never asked for
    if let Some(last) = other_projector.last_mut() {
        *last ^= 1;
    }
    let hf = HfServer::start(
        vec![
            Repo::new(
                "lab/SmolVision-GGUF",
                vec![
                    RepoFile::lfs("SmolVision-Q4_1.gguf", smol.clone()),
                    RepoFile::lfs("SmolVision-Q8_0.gguf", crate::fixture("llama-q4_0.gguf")),
                    RepoFile::lfs("mmproj-SmolVision-F16.gguf", projector.clone()),
                    RepoFile::lfs("mmproj-SmolVision-Q8_0.gguf", other_projector),
                ],
            ),
            Repo::new(
                "lab/Mismatch-GGUF",
                vec![
                    RepoFile::lfs("Tiny-Q4_0.gguf", crate::fixture("llama-q4_0.gguf")),
                    RepoFile::lfs("mmproj-Tiny-F16.gguf", projector.clone()),
                ],
            ),
        ],
        None,
        false,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let h = crate::start(home.path(), &hf.url(), &[]);
    add(&h, &server, "cpu").await;
    // --no-mmproj: the model alone
    let (s, job) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": "hf:lab/SmolVision-GGUF:Q4_1", "no_mmproj": true}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let (state, alone, _) = crate::workers::finish(&h, &job).await;
    assert_eq!(state, "completed", "{alone}");
    assert!(alone.get("projector").is_none(), "{alone}");
    let id = alone["id"].as_str().unwrap().to_owned();
    delete_model(&h, &id).await;
    let (_, state, events) = crate::pull(&h, "hf:lab/SmolVision-GGUF:Q4_1").await;
    assert_eq!(state, "completed", "{events:?}");
    let (_, list) = get(&h, "/v1/models").await;
    let m = list["data"][0].clone();
    // exactly the two files: the model and the F16 projector (the fit check before
    // the pull reads the model's header with a few ranges besides)
    let folder = std::path::Path::new(m["path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let mut names: Vec<String> = fs_err::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["SmolVision-Q4_1.gguf", "mmproj-SmolVision-F16.gguf"]
    );
    let sent = hf.bytes_sent();
    let files = (2 * smol.len() + projector.len()) as u64;
    assert!(
        sent >= files && sent - files < 32 << 20,
        "{sent} bytes for {files}"
    );
    assert_eq!(
        m["projector"]["sha256"],
        hex::encode(sha2::Sha256::digest(&projector)).as_str()
    );
    assert!(
        m["projector"]["path"]
            .as_str()
            .unwrap()
            .ends_with("mmproj-SmolVision-F16.gguf"),
        "{m}"
    );
    assert_eq!(m["projector"]["summary"]["vision"], true, "{m}");
    assert_eq!(m["capabilities"], json!(["completion", "vision"]), "{m}");
    let image = base64::engine::general_purpose::STANDARD.encode(bmp());
    let (s, v) = post(&h, "/v1/chat/completions", json!({"model": m["alias"], "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/bmp;base64,{image}")}}]}]})).await;
    assert_eq!(s, 200, "{v}");

    let (_, state, events) = crate::pull(&h, "hf:lab/Mismatch-GGUF").await;
    assert_eq!(state, "completed", "{events:?}");
    let said = format!("{events:?}");
    assert!(said.contains("not a projector for this model"), "{said}");
    let (_, m) = get(
        &h,
        &format!(
            "/v1/models/{}",
            crate::enc("hf:lab/Mismatch-GGUF/Tiny-Q4_0.gguf")
        ),
    )
    .await;
    assert!(m.get("projector").is_none(), "{m}");
    assert!(
        !home
            .path()
            .join("models")
            .join(artifact_catalog::encode_dir_name("hf:lab/Mismatch-GGUF/Tiny-Q4_0.gguf").unwrap())
            .join("mmproj-Tiny-F16.gguf")
            .exists()
    );

    // a pull cut short, then a preset that runs it without its projector: the pull
    // again keeps the preset and leaves the projector out
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": id})).await;
    assert_eq!(s, 200);
    delete_model(&h, &id).await;
    hf.faults()
        .throttle_bytes_per_sec
        .store(1 << 20, std::sync::atomic::Ordering::SeqCst);
    let before = hf.bytes_sent();
    let (s, job) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": "hf:lab/SmolVision-GGUF:Q4_1"}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    crate::wait_for("some bytes", async || hf.bytes_sent() > before + (1 << 20)).await;
    crate::client()
        .delete(format!(
            "{}/v1/jobs/{}",
            h.url,
            job["job_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let (state, _, _) = crate::workers::finish(&h, &job).await;
    assert_eq!(state, "cancelled");
    let (s, m) = crate::patch(
        &h,
        &format!("/v1/models/{}", crate::enc(&id)),
        json!({"no_mmproj": true, "alias": "smolvision:text"}),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["status"]["state"], "paused", "{m}");
    hf.faults()
        .throttle_bytes_per_sec
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let (_, state, events) = crate::pull(&h, "hf:lab/SmolVision-GGUF:Q4_1").await;
    assert_eq!(state, "completed", "{events:?}");
    let (_, m) = get(&h, &format!("/v1/models/{}", crate::enc(&id))).await;
    assert!(m.get("projector").is_none(), "{m}");
    assert_eq!(m["alias"], "smolvision:text", "{m}");
    assert_eq!(m["preset"]["no_mmproj"], true, "{m}");
    assert!(!folder.join("mmproj-SmolVision-F16.gguf").exists());
}

/// Deletes a model, which must go.
async fn delete_model(h: &crate::Hive, id: &str) {
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, crate::enc(id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// SmolLM2 imported from a copy in `dir`, paired with the tiny projector: its id.
async fn smollm2_that_sees(h: &crate::Hive, dir: &Path, model: &Path) -> String {
    let local = dir.join("SmolLM2.gguf");
    fs_err::copy(model, &local).unwrap();
    let id = import(h, &local).await;
    let (s, m) = post(
        h,
        "/v1/models/mmproj",
        json!({"id": id, "path": fixture_path("mmproj-tiny-mlp.gguf")}),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    id
}

/// A loopback server of images and of what is not one, counting its requests.
async fn image_server(image: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get as route;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&seen);
    let app = axum::Router::new()
        .route("/square.bmp", route(move || async move { image.clone() }))
        .route(
            "/moved",
            route(|| async { Redirect::temporary("/square.bmp") }),
        )
        .route("/loop", route(|| async { Redirect::temporary("/loop") }))
        // N redirects, then the image
        .route(
            "/hop/{n}",
            route(
                |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                    Redirect::temporary(&if n <= 1 {
                        "/square.bmp".to_owned()
                    } else {
                        format!("/hop/{}", n - 1)
                    })
                },
            ),
        )
        .route("/text", route(|| async { "plain words, not pixels" }))
        .route(
            "/huge",
            route(|| async {
                let mut b = vec![0u8; 11 << 20];
                b[..2].copy_from_slice(b"BM");
                b.into_response()
            }),
        )
        .layer(axum::middleware::from_fn(
            move |r: axum::extract::Request, next: axum::middleware::Next| {
                count.fetch_add(1, Ordering::SeqCst);
                next.run(r)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Image URLs: refused unless the hive is started with `--allow-remote-images`;
/// with `any`, the image is fetched (through a redirect too) and answered exactly
/// as the same image sent inline, and what is no image, too big, missing or a
/// redirect loop is a 400; with `public` (the flag alone), a URL to this machine
/// is refused before any request leaves the hive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_urls_are_fetched_only_when_the_hive_is_told_to() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let (images, seen) = image_server(bmp()).await;
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &["--allow-remote-images", "any"]);
    add(&h, &server, "cpu").await;
    let id = smollm2_that_sees(&h, home.path(), &model).await;
    let chat = |url: String| {
        json!({"model": id, "max_tokens": 12, "temperature": 0, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                                     {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    let inline = format!(
        "data:image/bmp;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bmp())
    );
    let (s, by_data) = post(&h, "/v1/chat/completions", chat(inline)).await;
    assert_eq!(s, 200, "{by_data}");
    let text = by_data["choices"][0]["message"]["content"].clone();
    for path in ["/square.bmp", "/moved", "/hop/3"] {
        let (s, by_url) = post(&h, "/v1/chat/completions", chat(format!("{images}{path}"))).await;
        assert_eq!(s, 200, "{path}: {by_url}");
        assert_eq!(by_url["choices"][0]["message"]["content"], text, "{path}");
    }
    let (s, anthropic) = post(
        &h,
        "/v1/messages",
        json!({"model": id, "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": format!("{images}/square.bmp")}},
            {"type": "text", "text": "What is in this image?"}]}]}),
    )
    .await;
    assert_eq!(s, 200, "{anthropic}");
    for (url, words) in [
        (format!("{images}/text"), "not an image"),
        (format!("{images}/huge"), "over 10 MiB"),
        (format!("{images}/missing"), "404"),
        (format!("{images}/loop"), "redirects"),
        (format!("{images}/hop/4"), "redirects"),
        ("file:///etc/passwd".to_owned(), "data: URL"),
    ] {
        let (s, e) = post(&h, "/v1/chat/completions", chat(url.clone())).await;
        assert_eq!(s, 400, "{url}: {e}");
        assert!(e.to_string().contains(words), "{url}: {e}");
    }
    drop(h);

    // the flag alone: public addresses only, checked before anything is sent
    let other = tempfile::tempdir().unwrap();
    let h = hive(other.path(), &["--allow-remote-images"]);
    let id = smollm2_that_sees(&h, other.path(), &model).await;
    let before = seen.load(std::sync::atomic::Ordering::SeqCst);
    let port = images.rsplit(':').next().unwrap();
    for (url, words) in [
        (format!("{images}/square.bmp"), "not a public address"),
        (
            format!("http://localhost:{port}/square.bmp"),
            "this machine",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/square.bmp"),
            "not a public address",
        ),
        (
            format!("http://localhost.:{port}/square.bmp"),
            "could not be fetched",
        ),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "not a public address",
        ),
    ] {
        let chat = json!({"model": id, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}]});
        let (s, e) = post(&h, "/v1/chat/completions", chat).await;
        assert_eq!(s, 400, "{url}: {e}");
        assert!(e.to_string().contains(words), "{url}: {e}");
    }
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), before);
    assert_eq!(crate::workers_of(&h).await, 0);
}
