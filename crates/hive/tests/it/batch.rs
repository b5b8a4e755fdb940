//! Batch operations: one parent job, a child each, one failure stops nothing.

use hf_test_server::{HfServer, Repo, RepoFile};
use serde_json::json;

use crate::{events, fixture, get, model_list, post, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_download_lists_each_outcome() {
    let repo = Repo::new(
        "org/Tiny-GGUF",
        vec![
            RepoFile::lfs("Tiny-Q4_K_M.gguf", fixture("qwen2-q4_k_m.gguf")),
            RepoFile::lfs("Tiny-Q8_0.gguf", fixture("gemma-q8_0-align64.gguf")),
        ],
    );
    let hf = HfServer::start(vec![repo], None, true).await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let refs = json!([
        "hf:org/Tiny-GGUF:Q4_K_M",
        "hf:org/Missing-GGUF",
        "hf:org/Tiny-GGUF:Q8_0"
    ]);
    let (status, job) = post(&h, "/v1/models/download-batch", json!({"model_refs": refs})).await;
    assert_eq!(status, 202, "{job}");
    let ev = events(&h, job["job_id"].as_str().unwrap()).await;
    assert_eq!(ev.last().unwrap().1["state"], "completed", "{ev:?}");
    let result = &ev.iter().find(|(k, _)| k == "result").unwrap().1;
    assert_eq!(result["failed"], 1, "{result}");
    let items = result["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["state"], "completed");
    assert_eq!(items[1]["state"], "refused");
    assert_eq!(items[1]["error"]["code"], "not_found", "{result}");
    assert_eq!(items[2]["state"], "completed");
    // The parent's narration names each child's job, which stands on its own.
    let child = items[0]["job_id"].as_str().unwrap();
    assert!(
        ev.iter()
            .any(|(_, v)| v["message"].as_str().is_some_and(|m| m.contains(child)))
    );
    let (_, info) = get(&h, &format!("/v1/jobs/{child}")).await;
    assert_eq!(info["state"], "completed");
    let models = model_list(&h).await;
    assert_eq!(models.as_array().unwrap().len(), 2);

    for bad in [
        json!({"model_refs": []}),
        json!({"model_refs": vec!["hf:a/b"; 101]}),
    ] {
        let (status, v) = post(&h, "/v1/models/download-batch", bad).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["code"], "invalid_batch");
    }
    // Spawning several: each refused item is listed, none stops the others.
    let (status, job) = post(
        &h,
        "/v1/workers/spawn-batch",
        json!({"workers": [{"model": "nope-1", "pull": false}, {"model": "nope-2", "worker": "cuda"}]}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let ev = events(&h, job["job_id"].as_str().unwrap()).await;
    let result = &ev.iter().find(|(k, _)| k == "result").unwrap().1;
    assert_eq!(result["failed"], 2, "{result}");
    assert_eq!(result["items"][0]["error"]["code"], "not_found");
}
