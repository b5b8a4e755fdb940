//! Warm swaps, against a real llama-server: a conversation's KV cache is saved when
//! its worker is unloaded and restored when the model loads again, so the next turn
//! does not process the prompt again (llama-server's own timings say so); a saved
//! cache that does not restore is deleted and the turn is answered anyway; a preset
//! change drops the model's saved caches.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::engines::{llama_server, smollm2_on_llama};
use crate::workers::hive;
use crate::{get, patch, post};

use hf_test_server::test_model as smollm2;

/// The saved slot files under the hive's home, and their sizes.
fn saved(home: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let root = home.join("kv-cache");
    for model in fs_err::read_dir(&root).into_iter().flatten().flatten() {
        for settings in fs_err::read_dir(model.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in fs_err::read_dir(settings.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push((f.path(), f.metadata().map_or(0, |m| m.len())));
            }
        }
    }
    out
}

/// The narrations of the last spawn (the gateway's load of the model).
async fn last_spawn_said(h: &crate::Hive) -> Vec<String> {
    let (_, jobs) = get(h, "/v1/jobs").await;
    let Some(job) = jobs.as_array().and_then(|j| {
        j.iter()
            .filter(|j| j["operation"] == "worker_spawn")
            .max_by_key(|j| j["created_at"].as_str().unwrap_or_default().to_owned())
            .and_then(|j| j["job_id"].as_str().map(str::to_owned))
    }) else {
        return Vec::new();
    };
    crate::events(h, &job)
        .await
        .into_iter()
        .filter_map(|(_, v)| v["message"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_conversation_comes_back_without_its_prompt_processed_again() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &[]);
    let id = smollm2_on_llama(&h, home.path(), &server, &model).await;
    let long: Vec<String> = (0..200)
        .map(|i| format!("Item {i} is a fact about the ocean."))
        .collect();
    let mut messages =
        vec![json!({"role": "user", "content": format!("{} Summarize them.", long.join(" "))})];
    let ask = async |messages: &Vec<Value>| {
        let (s, v) = post(
            &h,
            "/v1/chat/completions",
            json!({"model": id, "messages": messages, "max_tokens": 8, "temperature": 0}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v
    };
    let first = ask(&messages).await;
    assert!(
        first["timings"]["prompt_n"].as_u64().unwrap() >= 2000,
        "{first}"
    );
    messages.push(first["choices"][0]["message"].clone());
    messages.push(json!({"role": "user", "content": "And item 7?"}));

    // unloaded: the conversation's slot is saved
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": id})).await;
    assert_eq!(s, 200);
    let files = saved(home.path());
    assert!(files.iter().any(|(_, len)| *len > 1 << 20), "{files:?}");

    // the next turn loads the model again, its slot restored first
    let next = ask(&messages).await;
    let (prompt_n, cache_n) = (
        next["timings"]["prompt_n"].as_u64().unwrap(),
        next["timings"]["cache_n"].as_u64().unwrap(),
    );
    assert!(cache_n >= 2000 && prompt_n < 100, "{next}");
    let said = last_spawn_said(&h).await;
    assert!(
        said.iter().any(|m| m.contains("restored 1 slot(s)")),
        "{said:?}"
    );

    // a saved cache that does not restore: deleted, and the turn answered anyway
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": id})).await;
    assert_eq!(s, 200);
    let (biggest, _) = saved(home.path())
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .unwrap();
    fs_err::write(&biggest, b"not a KV cache at all").unwrap();
    let again = ask(&messages).await;
    assert!(
        again["timings"]["prompt_n"].as_u64().unwrap() >= 2000,
        "{again}"
    );
    assert_eq!(
        again["choices"][0]["message"],
        next["choices"][0]["message"]
    );
    assert!(!biggest.exists(), "the bad file is deleted");
    let said = last_spawn_said(&h).await;
    assert!(
        said.iter().any(|m| m.contains("did not restore")),
        "{said:?}"
    );

    // a preset change: the model's saved caches go
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": id})).await;
    assert_eq!(s, 200);
    assert!(!saved(home.path()).is_empty());
    let (s, v) = patch(
        &h,
        &format!("/v1/models/{}", crate::enc(&id)),
        json!({"context": 2048}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(saved(home.path()).is_empty(), "{:?}", saved(home.path()));
}

/// `--kv-cache-max-bytes 0`: nothing is saved, and the next turn processes the prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_room_for_caches_nothing_is_kept() {
    let (Some(server), Some(model)) = (llama_server(), smollm2()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let h = hive(home.path(), &["--kv-cache-max-bytes", "0"]);
    let id = smollm2_on_llama(&h, home.path(), &server, &model).await;
    let (s, v) = post(
        &h,
        "/v1/chat/completions",
        json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = post(&h, "/v1/models/unload", json!({"id": id})).await;
    assert_eq!(s, 200);
    assert!(saved(home.path()).is_empty());
    let (_, workers) = get(&h, "/v1/workers").await;
    assert_eq!(workers["workers"], json!([]));
}
