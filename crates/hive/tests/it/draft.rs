//! Draft models (speculative decoding) on a real llama-server: a preset names a
//! catalog model, checked for the same vocabulary before anything runs; the spawn
//! passes it; the worker's acceptance rate is in `workers ls` and `/metrics`.

use serde_json::{Value, json};

use crate::engines::{gemma, llama_server, smollm2_on_llama};
use crate::workers::{hive, import};
use crate::{enc, get, patch, post, wait_for};

use hf_test_server::test_model as smollm2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_with_the_same_vocabulary_runs_beside_its_model_and_others_are_refused() {
    let (Some(server), Some(model), Some(other)) = (llama_server(), smollm2(), gemma()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let target = smollm2_on_llama(&h, home.path(), &server, &model).await;
    // the same weights under another file: a draft that agrees with its model
    let copy = home.path().join("SmolLM2-draft.gguf");
    fs_err::copy(&model, &copy).unwrap();
    let draft = import(&h, &copy).await;
    let gemma = home.path().join("gemma.gguf");
    fs_err::copy(&other, &gemma).unwrap();
    let gemma = import(&h, &gemma).await;
    let path = format!("/v1/models/{}", enc(&target));

    for (body, status, says) in [
        (json!({"draft": gemma}), 400, "vocabulary"),
        (json!({"draft": target}), 400, "its own draft"),
        (json!({"draft": "/etc/passwd"}), 404, "never a path"),
        (json!({"draft": "nothing-like-it"}), 404, "not a model"),
        (json!({"draft": 7}), 400, "catalog model"),
        (json!({"draft_max": 0}), 400, "draft_max"),
        (json!({"draft_min": 5, "draft_max": 2}), 400, "draft_min"),
        (json!({"draft": draft, "engine": "rbee"}), 400, "llama.cpp"),
    ] {
        let (s, v) = patch(&h, &path, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {v}"
        );
    }
    // nothing was stored
    let (_, m) = get(&h, &path).await;
    assert!(m["preset"].get("draft").is_none(), "{m}");

    let (s, m) = patch(
        &h,
        &path,
        json!({"draft": draft, "draft_max": 8, "draft_min": 1}),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["preset"]["draft"], draft.as_str(), "{m}");
    let draft_bytes = m["preset"]["draft_bytes"].as_u64().unwrap();
    assert!(draft_bytes >= fs_err::metadata(&copy).unwrap().len(), "{m}");
    // the draft's cache follows the model's context
    let (s, m) = patch(&h, &path, json!({"context": 1024})).await;
    assert_eq!(s, 200, "{m}");
    let smaller = m["preset"]["draft_bytes"].as_u64().unwrap();
    assert!(smaller < draft_bytes, "{smaller} vs {draft_bytes}");

    // the first request loads the model with its draft
    let (s, v) = post(
        &h,
        "/v1/chat/completions",
        json!({"model": target, "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from one to ten."}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    let (_, list) = get(&h, "/v1/workers").await;
    let worker = &list["workers"][0];
    let pid = worker["pid"].as_u64().unwrap();
    let cmdline = fs_err::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == "-md").expect("-md");
    let (_, d) = get(&h, &format!("/v1/models/{}", enc(&draft))).await;
    assert_eq!(args[at + 1], d["path"].as_str().unwrap(), "{args:?}");
    assert!(
        args.windows(2)
            .any(|w| w[1] == "8" && w[0].ends_with("draft-n-max") || w == ["--draft-max", "8"]),
        "{args:?}"
    );
    // the worker's acceptance, as llama-server reports it, once scraped
    let mut share = Value::Null;
    wait_for("the draft's acceptance in workers ls", async || {
        share = get(&h, "/v1/workers").await.1["workers"][0]["draft_acceptance"].clone();
        share.as_f64().is_some()
    })
    .await;
    let share = share.as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share) && share > 0.5, "{share}");
    let metrics = crate::get_text(&h, "/metrics").await;
    assert!(
        metrics.contains("rbee_worker_draft_acceptance{"),
        "{metrics}"
    );

    // the draft gone, the next load says so and starts nothing
    let (s, v) = post(&h, "/v1/models/unload", json!({"id": target})).await;
    assert_eq!(s, 200, "{v}");
    let r = crate::client()
        .delete(format!("{}/v1/models/{}", h.url, enc(&draft)))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (s, v) = post(
        &h,
        "/v1/chat/completions",
        json!({"model": target, "max_tokens": 2,
            "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("draft"),
        "{v}"
    );
}
