//! Pulls as a user meets them: a mirror that sends no length and ignores ranges, a
//! URL that does not exist, a cancelled pull that can or cannot resume.

use std::sync::atomic::Ordering;

use hf_test_server::{HfServer, Repo, RepoFile};
use serde_json::{Value, json};

use crate::{big_gguf, enc, events, get, model_list, post, pull, start, wait_for};

const REPO: &str = "org/Mirror-GGUF";
const FILE: &str = "Mirror-Q4_0.gguf";

async fn mirror(len: usize) -> (HfServer, RepoFile) {
    let file = RepoFile::lfs(FILE, big_gguf(len));
    let hf = HfServer::start(vec![Repo::new(REPO, vec![file.clone()])], None, false).await;
    hf.faults().mirror.store(true, Ordering::SeqCst);
    (hf, file)
}

/// What a user sees of the home: the catalog and the folders under `models/` and
/// `downloads/`.
async fn home_state(h: &crate::Hive, home: &std::path::Path) -> (Value, Vec<String>) {
    let models = model_list(h).await;
    let mut files = Vec::new();
    for dir in ["models", "downloads"] {
        if let Ok(rd) = fs_err::read_dir(home.join(dir)) {
            files.extend(rd.map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy())));
        }
    }
    files.sort();
    (models, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_without_length_or_ranges_pulls_and_the_lfs_sha256_judges() {
    let (hf, file) = mirror(3 << 20).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let (s, started) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": format!("hf:{REPO}")}),
    )
    .await;
    assert_eq!(s, 202, "{started}");
    let ev = events(&h, started["job_id"].as_str().unwrap()).await;
    assert_eq!(
        ev.last().unwrap().1,
        json!({"state": "completed"}),
        "{ev:?}"
    );
    let m = &ev[ev.len() - 2].1;
    assert_eq!(m["status"]["state"], "available");
    assert_eq!(m["sha256"], file.sha256());
    assert_eq!(
        m["verified"], true,
        "the tree's LFS oid is the published sha256"
    );
    assert_eq!(m["size"], file.data.len());
    assert_eq!(
        fs_err::read(m["path"].as_str().unwrap()).unwrap(),
        file.data.to_vec()
    );
    // once, whole: the probe's answer is the stream
    assert_eq!(hf.bytes_sent(), file.data.len() as u64);
    assert!(
        ev.iter().any(|(k, d)| k == "narration"
            && d["message"]
                .as_str()
                .unwrap()
                .contains("does not support ranges")),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pull_from_a_server_without_ranges_promises_no_resume() {
    let (hf, _) = mirror(16 << 20).await;
    hf.faults()
        .throttle_bytes_per_sec
        .store(2 << 20, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let (_, started) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": format!("hf:{REPO}")}),
    )
    .await;
    let job = started["job_id"].as_str().unwrap();
    wait_for("bytes", async || hf.bytes_sent() > 1 << 20).await;
    crate::client()
        .delete(format!("{}/v1/jobs/{job}", h.url))
        .send()
        .await
        .unwrap();
    let ev = events(&h, job).await;
    assert_eq!(ev.last().unwrap().1, json!({"state": "cancelled"}));
    let message = ev[ev.len() - 2].1["message"].as_str().unwrap().to_owned();
    assert!(message.contains("nothing was kept"), "{message}");
    assert!(!message.contains("pull again"), "{message}");
    // the pull left nothing: no entry, no partial, no empty folder
    let (models, files) = home_state(&h, home.path()).await;
    assert_eq!(models, json!([]));
    assert_eq!(files, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_a_missing_url_changes_nothing() {
    let (hf, _) = mirror(1 << 10).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    // something there before, to see that it stays as it was
    let (_, ok) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": format!("hf:{REPO}")}),
    )
    .await;
    events(&h, ok["job_id"].as_str().unwrap()).await;
    let before = home_state(&h, home.path()).await;
    assert_eq!(before.0.as_array().unwrap().len(), 1);

    let url = format!("{}/nope.gguf", hf.url());
    let (s, started) = post(&h, "/v1/models/download", json!({"model_ref": url})).await;
    if s == 202 {
        let ev = events(&h, started["job_id"].as_str().unwrap()).await;
        assert_eq!(ev.last().unwrap().1, json!({"state": "failed"}), "{ev:?}");
        let error = &ev[ev.len() - 2].1;
        assert!(
            error["message"].as_str().unwrap().contains("404"),
            "{error}"
        );
    } else {
        assert_eq!(s, 404, "{started}");
    }
    assert_eq!(home_state(&h, home.path()).await, before);
    let (s, _) = get(&h, &format!("/v1/models/{}", enc(&url))).await;
    assert_eq!(s, 404);
}

/// `--hf-cache-layout`: a pull lands in the hub cache as `huggingface_hub` lays it
/// out (a blob named by its sha256, a relative link from the commit's snapshot,
/// `refs/main`), so the real `huggingface_hub` finds it offline; a scan of that cache
/// adopts nothing twice, and removing the model removes its link and blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_in_the_hub_cache_layout_is_found_by_huggingface_hub() {
    let Some(python) = crate::python_with("huggingface_hub") else {
        return;
    };
    let file = RepoFile::lfs("sub/Cache-Q4_0.gguf", big_gguf(2 << 20));
    let mut theirs = crate::fixture("llama-q4_0.gguf");
    theirs.extend_from_slice(&hf_test_server::test_bytes(1 << 20, 4));
    let theirs = RepoFile::lfs("Theirs-Q8_0.gguf", theirs);
    let hf = HfServer::start(
        vec![Repo::new(
            "org/Cache-GGUF",
            vec![file.clone(), theirs.clone()],
        )],
        None,
        false,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hf-hub");
    let mut c = crate::hive_cmd(home.path(), &hf.url(), &["--hf-cache-layout"]);
    c.env("HF_HUB_CACHE", &cache)
        .env("HOME", home.path())
        .env("OLLAMA_MODELS", home.path().join("none"))
        .env("LLAMA_CACHE", home.path().join("none"));
    let h = crate::spawn_hive(c);
    let (_, state, ev) = crate::pull(&h, "hf:org/Cache-GGUF/sub/Cache-Q4_0.gguf").await;
    assert_eq!(state, "completed", "{ev:?}");
    let m = &ev[ev.len() - 2].1;
    let commit = m["revision"].as_str().unwrap();
    let repo = cache.join("models--org--Cache-GGUF");
    let link = repo
        .join("snapshots")
        .join(commit)
        .join("sub/Cache-Q4_0.gguf");
    assert_eq!(m["path"], link.display().to_string(), "{m}");
    let blob = repo.join("blobs").join(file.sha256());
    assert_eq!(
        fs_err::read_link(&link).unwrap(),
        std::path::Path::new("../../../blobs").join(file.sha256())
    );
    assert_eq!(fs_err::read(&blob).unwrap(), file.data.to_vec());
    assert_eq!(
        fs_err::read_to_string(repo.join("refs/main")).unwrap(),
        commit
    );

    // huggingface_hub, offline, finds the file by name (through refs/main) and by commit
    let find = |revision: &str| {
        std::process::Command::new(&python)
            .args([
                "-c",
                "import sys; from huggingface_hub import hf_hub_download; \
                 print(hf_hub_download('org/Cache-GGUF', 'sub/Cache-Q4_0.gguf', revision=sys.argv[1], local_files_only=True))",
                revision,
            ])
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    for revision in ["main", commit] {
        let out = find(revision);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            link.display().to_string()
        );
    }

    // a file huggingface_hub fetched itself is adopted by a pull, not fetched again
    let theirs_path = crate::hf_hub_download(
        &python,
        &hf.url(),
        &cache,
        "org/Cache-GGUF",
        "Theirs-Q8_0.gguf",
    );
    let sent = hf.bytes_sent();
    let (_, state, ev) = crate::pull(&h, "hf:org/Cache-GGUF:Q8_0").await;
    assert_eq!(state, "completed", "{ev:?}");
    assert_eq!(hf.bytes_sent(), sent, "not a byte fetched again");
    let adopted = &ev[ev.len() - 2].1;
    assert_eq!(
        adopted["path"],
        theirs_path.display().to_string(),
        "{adopted}"
    );
    assert_eq!(adopted["sha256"], theirs.sha256());
    assert_eq!(adopted["gguf"]["architecture"], "llama");
    let theirs_id = "hf:org/Cache-GGUF/Theirs-Q8_0.gguf";
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, enc(theirs_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // a scan of the cache finds the hive's own file, and adopts nothing
    let (s, job) = post(&h, "/v1/models/scan", json!({})).await;
    assert_eq!(s, 202, "{job}");
    let ev = events(&h, job["job_id"].as_str().unwrap()).await;
    let r = &ev[ev.len() - 2].1;
    assert_eq!(r["added"], json!([]), "{r}");
    let models = model_list(&h).await;
    assert_eq!(models.as_array().unwrap().len(), 1, "{models}");

    let id = "hf:org/Cache-GGUF/sub/Cache-Q4_0.gguf";
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, enc(id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["bytes_freed"], file.data.len(), "{v}");
    assert!(fs_err::symlink_metadata(&link).is_err() && !blob.exists());
    assert!(
        !find("main").status.success(),
        "gone for huggingface_hub too"
    );
}

/// A lab's own HTTPS server, signed by a CA that only this machine's store knows
/// (`SSL_CERT_FILE`, as curl and Python read it): the pull trusts what the machine
/// trusts. Without that CA the pull is refused, with the certificate named, and
/// nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_from_a_private_ca_in_the_machines_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=lab test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
    ]);
    fs_err::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "srv.pem",
    ]);
    let www = d.join("www");
    fs_err::create_dir_all(&www).unwrap();
    fs_err::write(www.join("lab.gguf"), crate::fixture("llama-q4_0.gguf")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = "import http.server, ssl, sys, functools\n\
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])\n\
s = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), h)\n\
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[3], sys.argv[4])\n\
s.socket = c.wrap_socket(s.socket, server_side=True)\n\
print('ready', flush=True); s.serve_forever()\n";
    let mut server = std::process::Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .arg(&www)
        .arg(d.join("srv.pem"))
        .arg(d.join("srv.key"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let url = format!("https://127.0.0.1:{port}/lab.gguf");
    for trusted in [false, true] {
        let home = tempfile::tempdir().unwrap();
        let mut c = crate::hive_cmd(home.path(), "http://127.0.0.1:9", &[]);
        // an empty bundle, else the lab's CA: what this machine trusts
        let bundle = if trusted {
            d.join("ca.pem")
        } else {
            d.join("none.pem")
        };
        if !trusted {
            fs_err::write(&bundle, "").unwrap();
        }
        c.env("SSL_CERT_FILE", &bundle).env_remove("SSL_CERT_DIR");
        let h = crate::spawn_hive(c);
        let (s, state, ev) = pull(&h, &url).await;
        if trusted {
            assert_eq!((s, state.as_str()), (202, "completed"), "{ev:?}");
        } else {
            let said = format!("{s} {state} {ev:?}");
            assert!(state != "completed", "{said}");
            assert!(said.to_lowercase().contains("certificate"), "{said}");
            let models = model_list(&h).await;
            assert!(
                models
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["status"]["state"] != "available"),
                "{models}"
            );
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}
