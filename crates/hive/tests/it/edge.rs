//! The edge, as an attacker meets it: a foreign Host (DNS rebinding), a foreign
//! Origin (any web page), a body that is not JSON (a form), with and without a
//! token; and what a user's own web UI needs (its origin allowed, its preflight
//! answered).

use hf_test_server::{HfServer, Repo, RepoFile};
use serde_json::{Value, json};

use crate::{big_gguf, client, get, model_list, start};

const REPO: &str = "org/Evil-GGUF";

async fn hub() -> HfServer {
    HfServer::start(
        vec![Repo::new(
            REPO,
            vec![RepoFile::lfs("Evil-Q4_0.gguf", big_gguf(1 << 20))],
        )],
        None,
        false,
    )
    .await
}

/// Every route family, with a method and a body a page would send.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/"),
    ("GET", "/ui/app.js"),
    ("GET", "/v1/models"),
    ("GET", "/v1/workers"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/api/tags"),
    ("GET", "/openai/v1/models"),
    ("POST", "/v1/models/download"),
    ("POST", "/v1/worker-binaries/install"),
    ("POST", "/api/pull"),
    ("POST", "/api/generate"),
    ("POST", "/openai/v1/chat/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/api/create"),
    ("POST", "/api/copy"),
    ("POST", "/v1/models/mmproj"),
    ("PATCH", "/v1/models/x"),
    ("DELETE", "/v1/models/x"),
    ("GET", "/no/such/route"),
];

fn body() -> Value {
    json!({"model_ref": format!("hf:{REPO}"), "name": format!("hf:{REPO}"), "model": format!("hf:{REPO}"),
           "worker": "llama.cpp:cpu", "source": "https://127.0.0.1:9/x.zip", "sha256": "0".repeat(64),
           "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]})
}

async fn send(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = client().request(method.parse().unwrap(), format!("{url}{path}"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// The error's message in whichever family's shape it came.
fn message(path: &str, v: &Value) -> String {
    if path.starts_with("/api/") {
        v["error"].as_str().unwrap_or_default().to_owned()
    } else if path.starts_with("/v1/messages") {
        // Anthropic's shape
        assert_eq!(v["type"], "error", "{v}");
        assert!(
            v["error"]["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("_error")),
            "{v}"
        );
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_origins_and_forms_are_refused_everywhere_and_change_nothing() {
    let hf = hub().await;
    let home = tempfile::tempdir().unwrap();
    for token in [None, Some("edge-token-7d1")] {
        let mut extra = vec![
            "--allowed-origins",
            "http://ui.example:3000,https://*.lab.example",
            "--allowed-hosts",
            "gpu.lan",
        ];
        if let Some(t) = token {
            extra.extend(["--api-token", t]);
        }
        let h = start(home.path(), &hf.url(), &extra);
        let auth = format!("Bearer {}", token.unwrap_or("none"));
        let json_body = Some(body().to_string());
        let port = h.url.rsplit(':').next().unwrap().to_owned();
        for (method, path) in ROUTES {
            let b = (*method == "POST").then(|| json_body.clone()).flatten();
            let ct = ("content-type", "application/json");
            // DNS rebinding: the page's own name in Host
            let host = format!("attacker.example:{port}");
            let (s, _, v) = send(
                &h.url,
                method,
                path,
                &[("host", &host), ct, ("authorization", &auth)],
                b.clone(),
            )
            .await;
            assert_eq!(s, 403, "{method} {path} with a foreign Host: {v}");
            assert!(message(path, &v).contains("--allowed-hosts"), "{path}: {v}");
            // a page on another origin, even with the token (a page never has it, but
            // the check does not depend on it)
            for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
                let (s, h2, v) = send(
                    &h.url,
                    method,
                    path,
                    &[("origin", origin), ct, ("authorization", &auth)],
                    b.clone(),
                )
                .await;
                assert_eq!(s, 403, "{method} {path} from {origin}: {v}");
                assert!(
                    message(path, &v).contains("--allowed-origins"),
                    "{path}: {v}"
                );
                assert!(h2.get("access-control-allow-origin").is_none());
            }
            let (s, _, v) = send(
                &h.url,
                method,
                path,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ct,
                    ("authorization", &auth),
                ],
                b.clone(),
            )
            .await;
            assert_eq!(s, 403, "{method} {path} cross-site: {v}");
            if *method == "POST" {
                // a form or a text/plain fetch: no preflight in a browser, refused here
                for kind in [
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                ] {
                    let (s, _, v) = send(
                        &h.url,
                        method,
                        path,
                        &[("content-type", kind), ("authorization", &auth)],
                        b.clone(),
                    )
                    .await;
                    assert_eq!(s, 415, "{path} as {kind}: {v}");
                    assert!(message(path, &v).contains("application/json"), "{v}");
                }
            }
        }
        // the names the hive does answer to, and the one allowed by name
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("gpu.lan:{port}"),
        ] {
            let (s, _, v) = send(&h.url, "GET", "/health", &[("host", &host)], None).await;
            assert_eq!(s, 200, "{host}: {v}");
        }
        // the hive's own page (the dashboard calls the API from its own origin)
        let own = format!("http://localhost:{port}");
        let (s, _, _) = send(
            &h.url,
            "GET",
            "/v1/models",
            &[("origin", &own), ("authorization", &auth)],
            None,
        )
        .await;
        assert_eq!(s, 200, "the hive's own origin");
        // a web UI the user allowed: its preflight is answered, its requests carry
        // Access-Control-Allow-Origin
        for origin in ["http://ui.example:3000", "https://chat.lab.example"] {
            let (s, hd, _) = send(
                &h.url,
                "OPTIONS",
                "/api/pull",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "content-type,authorization",
                    ),
                ],
                None,
            )
            .await;
            assert!(s == 200 || s == 204, "preflight from {origin}: {s}");
            assert_eq!(hd.get("access-control-allow-origin").unwrap(), origin);
            let (s, hd, v) = send(
                &h.url,
                "GET",
                "/api/version",
                &[("origin", origin), ("authorization", &auth)],
                None,
            )
            .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(hd.get("access-control-allow-origin").unwrap(), origin);
        }
        // any other origin's preflight is refused, with no CORS header
        let (s, hd, _) = send(
            &h.url,
            "OPTIONS",
            "/api/pull",
            &[
                ("origin", "http://ui.example:3001"),
                ("access-control-request-method", "POST"),
            ],
            None,
        )
        .await;
        assert_eq!(s, 403);
        assert!(hd.get("access-control-allow-origin").is_none());
        // nothing changed: no byte from the hub, nothing in the catalog, no audit line
        let (_, models) = get_with(&h, "/v1/models", token).await;
        let models = models["data"].clone();
        assert_eq!(models, json!([]), "the catalog is empty");
        assert_eq!(hf.bytes_sent(), 0);
        assert!(
            fs_err::read_to_string(home.path().join("audit.log"))
                .unwrap_or_default()
                .is_empty(),
            "a refused request is never audited"
        );
    }
}

async fn get_with(h: &crate::Hive, path: &str, token: Option<&str>) -> (u16, Value) {
    match token {
        None => get(h, path).await,
        Some(t) => {
            let r = client()
                .get(format!("{}{path}", h.url))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }
    }
}

/// A token in a file: the hive reads it (refusing a file others may read), the
/// `Bearer` scheme is matched in any case, and `x-api-key` is taken too.
#[tokio::test]
async fn the_token_comes_from_a_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("api-token");
    fs_err::write(&file, "file-token-81c\n").unwrap();
    fs_err::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = crate::hive_cmd(
        home.path(),
        "http://127.0.0.1:9",
        &["--api-token-file", file.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs_err::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let h = start(
        home.path(),
        "http://127.0.0.1:9",
        &["--api-token-file", file.to_str().unwrap()],
    );
    for (k, v) in [
        ("authorization", "Bearer file-token-81c"),
        ("authorization", "bearer file-token-81c"),
        ("x-api-key", "file-token-81c"),
    ] {
        let (s, _, _) = send(&h.url, "GET", "/v1/models", &[(k, v)], None).await;
        assert_eq!(s, 200, "{k}: {v}");
    }
    let (s, _, v) = send(
        &h.url,
        "GET",
        "/api/tags",
        &[("authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(s, 401);
    assert!(v["error"].is_string(), "Ollama's shape: {v}");
    // the token is not on the command line
    let cmdline = fs_err::read(format!("/proc/{}/cmdline", h.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("file-token-81c"));
}

/// A hostile page in a real browser: fetches without a preflight, form posts, and a
/// rebound name. The hub's byte counter never moves and the catalog stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_in_chromium_cannot_drive_the_hive() {
    let Some(python) = crate::dashboard::browser() else {
        return;
    };
    let hf = hub().await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attack.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([&h.url, &format!("hf:{REPO}")])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "attack.py: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap();
    eprintln!("the browser saw: {seen}");
    let responses = seen["responses"].as_array().unwrap();
    // the form posts are navigations, their answers visible here: each refused
    let posts: Vec<&Value> = responses.iter().filter(|r| r["method"] == "POST").collect();
    assert!(!posts.is_empty(), "{seen}");
    for r in responses {
        assert!(r["status"] == 403 || r["status"] == 415, "{r}");
    }
    let rebound = responses.iter().find(|r| r["rebound"] == true).unwrap();
    assert_eq!(rebound["status"], 403, "{rebound}");
    assert!(
        seen["rebound_body"]
            .as_str()
            .unwrap()
            .contains("--allowed-hosts")
    );
    assert_eq!(hf.bytes_sent(), 0, "the hub sent nothing");
    let models = model_list(&h).await;
    assert_eq!(models, json!([]), "the catalog is empty");
    let (_, jobs) = get(&h, "/v1/jobs").await;
    assert_eq!(jobs, json!([]), "no job was started");
}
