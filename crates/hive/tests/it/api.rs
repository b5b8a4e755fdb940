//! The API end to end: pulls with their SSE events, import, delete, auth, bad input.

use hf_test_server::{HfServer, Repo, RepoFile};
use serde_json::json;

use crate::{enc, events, fixture, get, model_list, post, start};

fn tiny_repo() -> Repo {
    Repo::new(
        "org/Tiny-GGUF",
        vec![
            RepoFile::lfs("Tiny-Q4_K_M.gguf", fixture("qwen2-q4_k_m.gguf")),
            RepoFile::lfs("Tiny-Q8_0.gguf", fixture("gemma-q8_0-align64.gguf")),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_streams_events_in_order_and_lands_in_the_catalog() {
    let hf = HfServer::start(vec![tiny_repo()], None, true).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let (s, started) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": "hf:org/Tiny-GGUF"}),
    )
    .await;
    assert_eq!(s, 202, "{started}");
    let job = started["job_id"].as_str().unwrap();
    assert_eq!(started["stream_url"], format!("/v1/jobs/{job}/stream"));
    let ev = events(&h, job).await;
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"narration"), "{kinds:?}");
    assert_eq!(&kinds[kinds.len() - 2..], ["result", "done"], "{kinds:?}");
    assert!(kinds.contains(&"progress"), "{kinds:?}");
    let (_, done) = ev.last().unwrap();
    assert_eq!(done, &json!({"state": "completed"}));
    let result = &ev[ev.len() - 2].1;
    assert_eq!(result["id"], "hf:org/Tiny-GGUF/Tiny-Q4_K_M.gguf");
    assert_eq!(result["status"]["state"], "available");
    let p = ev.iter().rev().find(|(k, _)| k == "progress").unwrap();
    for key in ["bytes_done", "bytes_total", "bytes_per_sec", "eta_secs"] {
        assert!(p.1.get(key).is_some(), "progress lacks {key}: {}", p.1);
    }
    // a late subscriber gets the same events, progress reduced to the newest of each run
    let late = events(&h, job).await;
    let without_progress = |v: &[(String, serde_json::Value)]| {
        v.iter()
            .filter(|(k, _)| k != "progress")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(without_progress(&late), without_progress(&ev));
    let last_progress =
        |v: &[(String, serde_json::Value)]| v.iter().rev().find(|(k, _)| k == "progress").cloned();
    assert_eq!(last_progress(&late), last_progress(&ev));
    let (s, job_info) = get(&h, &format!("/v1/jobs/{job}")).await;
    assert_eq!((s, job_info["state"].as_str()), (200, Some("completed")));
    // the catalog, by encoded id
    let (s, m) = get(
        &h,
        &format!("/v1/models/{}", enc("hf:org/Tiny-GGUF/Tiny-Q4_K_M.gguf")),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(m["gguf"]["quantization"], "Q4_K_M");
    assert!(m["verified"].as_bool().unwrap());
    let all = model_list(&h).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    // pulling again is a no-op that succeeds
    let (_, again) = post(
        &h,
        "/v1/models/download",
        json!({"model_ref": "hf:org/Tiny-GGUF:Q4_K_M"}),
    )
    .await;
    let ev = events(&h, again["job_id"].as_str().unwrap()).await;
    assert_eq!(ev.last().unwrap().1, json!({"state": "completed"}));
    // delete: entry and files
    let path = m["path"].as_str().unwrap().to_owned();
    let r = crate::client()
        .delete(format!(
            "{}/v1/models/{}",
            h.url,
            enc("hf:org/Tiny-GGUF/Tiny-Q4_K_M.gguf")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!std::path::Path::new(&path).exists());
    let (s, _) = get(
        &h,
        &format!("/v1/models/{}", enc("hf:org/Tiny-GGUF/Tiny-Q4_K_M.gguf")),
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_route_takes_any_operation() {
    let hf = HfServer::start(vec![tiny_repo()], None, false).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let path = home.path().join("local.gguf");
    fs_err::write(&path, fixture("llama-q4_0.gguf")).unwrap();
    let (s, started) = post(
        &h,
        "/v1/jobs",
        json!({"operation": "model_import", "path": path}),
    )
    .await;
    assert_eq!(s, 202, "{started}");
    let ev = events(&h, started["job_id"].as_str().unwrap()).await;
    assert_eq!(ev.last().unwrap().1["state"], "completed", "{ev:?}");
    let (_, listed) = post(&h, "/v1/jobs", json!({"operation": "model_list"})).await;
    let ev = events(&h, listed["job_id"].as_str().unwrap()).await;
    let result = &ev.iter().find(|(k, _)| k == "result").unwrap().1;
    assert_eq!(result.as_array().unwrap().len(), 1);
    assert_eq!(result[0]["provider"], "local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    let hf = HfServer::start(vec![tiny_repo()], None, false).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let not_gguf = home.path().join("notes.txt");
    fs_err::write(&not_gguf, "hello").unwrap();
    let raw = |body: &'static str| {
        let url = format!("{}/v1/models/download", h.url);
        async move {
            let r = crate::client()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let cases = vec![
        (raw("{not json").await, 400, ""),
        (raw(r#"{"model_ref": 5}"#).await, 422, ""),
        (
            raw(r#"{"model_ref": "hf:org/Tiny-GGUF", "extra": 1}"#).await,
            422,
            "extra",
        ),
        (
            post(
                &h,
                "/v1/models/download",
                json!({"model_ref": "hf:nobody/nothing"}),
            )
            .await,
            404,
            "nobody/nothing",
        ),
        (
            post(
                &h,
                "/v1/models/download",
                json!({"model_ref": "hf:org/Tiny-GGUF:Q2_K"}),
            )
            .await,
            404,
            "Q2_K",
        ),
        (
            post(&h, "/v1/models/download", json!({"model_ref": "hf:bad"})).await,
            400,
            "hf:ORG/REPO",
        ),
        (
            post(
                &h,
                "/v1/models/download",
                json!({"model_ref": "gopher://x"}),
            )
            .await,
            400,
            "hf:ORG/REPO",
        ),
        (
            post(
                &h,
                "/v1/models/download",
                json!({"model_ref": "hf:org/Tiny-GGUF", "sha256": "xyz"}),
            )
            .await,
            400,
            "64 hex",
        ),
        (
            post(&h, "/v1/models/import", json!({"path": "relative/x.gguf"})).await,
            400,
            "absolute",
        ),
        (
            post(
                &h,
                "/v1/models/import",
                json!({"path": "/no/such/file.gguf"}),
            )
            .await,
            404,
            "no such file",
        ),
        (
            post(&h, "/v1/models/import", json!({"path": home.path()})).await,
            400,
            "not a regular file",
        ),
        (
            post(&h, "/v1/models/import", json!({"path": not_gguf})).await,
            400,
            "not a GGUF",
        ),
        (
            post(&h, "/v1/jobs", json!({"operation": "model_explode"})).await,
            422,
            "model_explode",
        ),
        (get(&h, "/v1/models/nope").await, 404, "nope"),
        (get(&h, "/v1/jobs/job-nope").await, 404, "job-nope"),
        (get(&h, "/v1/nothing-here").await, 404, "no such route"),
        // what the framework refuses by itself answers in JSON too
        (get(&h, "/v1/models/%FF").await, 400, ""),
    ];
    for ((status, body), expected, words) in cases {
        assert_eq!(status, expected, "{body}");
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {body}"));
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(message.contains(words), "{message:?} lacks {words:?}");
    }
    let all = model_list(&h).await;
    assert_eq!(all, json!([]), "nothing was added");
    // a body over the limit: 413, answered before it is read (the client may see
    // the connection close while it still writes)
    let r = crate::client()
        .post(format!("{}/v1/models/download", h.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await;
    match r {
        Ok(r) => {
            assert_eq!(r.status(), 413);
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "body_too_large", "{body}");
        }
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    // and the one endpoint's, in Ollama's shape
    let r = crate::client()
        .post(format!("{}/api/chat", h.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 17 << 20])
        .send()
        .await;
    match r {
        Ok(r) => {
            assert_eq!(r.status(), 413);
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(body["error"].is_string(), "{body}");
        }
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    // a method a route does not take: 405, its Allow header kept
    let r = crate::client()
        .put(format!("{}/v1/capabilities", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().get("allow").is_some(), "{:?}", r.headers());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_health() {
    let home = tempfile::tempdir().unwrap();
    let h = start(
        home.path(),
        "http://127.0.0.1:9",
        &["--api-token", "s3cret"],
    );
    let c = crate::client();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(c.get(format!("{}/health", h.url)).send().await.unwrap()),
        200
    );
    assert_eq!(
        status(c.get(format!("{}/v1/models", h.url)).send().await.unwrap()),
        401
    );
    assert_eq!(
        status(
            c.get(format!("{}/v1/models", h.url))
                .bearer_auth("wrong")
                .send()
                .await
                .unwrap()
        ),
        401
    );
    assert_eq!(
        status(
            c.get(format!("{}/v1/models", h.url))
                .bearer_auth("s3cret")
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            c.post(format!("{}/v1/models/download", h.url))
                .json(&json!({"model_ref": "hf:a/b"}))
                .send()
                .await
                .unwrap()
        ),
        401
    );
}

#[test]
fn refuses_to_start_unsafely() {
    let home = tempfile::tempdir().unwrap();
    // not loopback, no token
    let out = crate::hive_cmd(home.path(), "http://127.0.0.1:9", &["--host", "0.0.0.0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without an API token"));
    // a second daemon on one home
    let _first = start(home.path(), "http://127.0.0.1:9", &[]);
    let out = crate::hive_cmd(home.path(), "http://127.0.0.1:9", &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another rbee-hive is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_list_pages() {
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), "http://127.0.0.1:9", &[]);
    for name in ["llama-q4_0.gguf", "qwen2-q4_k_m.gguf", "unicode.gguf"] {
        let path = home.path().join(name);
        fs_err::write(&path, fixture(name)).unwrap();
        let (s, started) = post(&h, "/v1/models/import", json!({"path": path})).await;
        assert_eq!(s, 202, "{started}");
        let ev = events(&h, started["job_id"].as_str().unwrap()).await;
        assert_eq!(ev.last().unwrap().1["state"], "completed");
    }
    let page = |q: &'static str| {
        let url = format!("{}/v1/models{q}", h.url);
        async move { crate::client().get(url).send().await.unwrap() }
    };
    let r = page("?limit=2").await;
    assert_eq!(r.headers()["x-total-count"], "3");
    assert!(
        r.headers()["link"]
            .to_str()
            .unwrap()
            .contains("offset=2&limit=2")
    );
    let first: serde_json::Value = r.json().await.unwrap();
    assert_eq!(first["object"], "list", "OpenAI's list shape: {first}");
    let first = first["data"].clone();
    assert_eq!(first.as_array().unwrap().len(), 2);
    assert_eq!(first[0]["object"], "model", "{first}");
    assert!(first[0]["created"].as_i64().unwrap() > 0, "{first}");
    let r = page("?offset=2&limit=2").await;
    assert!(r.headers().get("link").is_none());
    let rest = r.json::<serde_json::Value>().await.unwrap()["data"].clone();
    assert_eq!(rest.as_array().unwrap().len(), 1);
    // in id order, no entry twice
    let ids: Vec<String> = first
        .as_array()
        .unwrap()
        .iter()
        .chain(rest.as_array().unwrap())
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted);
    for bad in ["?limit=0", "?limit=5000", "?offset=-1", "?limit=x"] {
        assert_eq!(page(bad).await.status(), 400, "{bad}");
    }
    // a deletion shows at once
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, enc(&ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(page("").await.headers()["x-total-count"], "2");
}
