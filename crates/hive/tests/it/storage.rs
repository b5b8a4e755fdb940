//! The disk: a quota that evicts the least recently used models (never a pinned,
//! in-use or external one), cleanup that never touches a resumable partial, where
//! the bytes are, and the fit check that reads only a remote header.

use std::time::{Duration, SystemTime};

use hf_test_server::{HfServer, Repo, RepoFile, test_bytes};
use serde_json::{Value, json};

use crate::engines::{add, gemma, llama_server};
use crate::workers::{finish, import};
use crate::{enc, fixture, get, model_list, post, pull, start, wait_for};

/// A small real GGUF, padded to `len` with bytes of `seed`.
fn padded_gguf(len: usize, seed: u64) -> Vec<u8> {
    let mut d = fixture("llama-q4_0.gguf");
    d.extend_from_slice(&test_bytes(len, seed));
    d
}

/// A hub with `org/M1` .. `org/Mn`, one padded GGUF each.
async fn hub(n: u64, len: usize) -> (HfServer, u64) {
    let repos: Vec<Repo> = (1..=n)
        .map(|i| {
            Repo::new(
                &format!("org/M{i}"),
                vec![RepoFile::lfs("m-Q4_0.gguf", padded_gguf(len, i))],
            )
        })
        .collect();
    let size = padded_gguf(len, 1).len() as u64;
    (HfServer::start(repos, None, false).await, size)
}

fn id(i: u64) -> String {
    format!("hf:org/M{i}/m-Q4_0.gguf")
}

async fn patch(h: &crate::Hive, id: &str, body: Value) -> u16 {
    crate::client()
        .patch(format!("{}/v1/models/{}", h.url, enc(id)))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn ids(h: &crate::Hive) -> Vec<String> {
    let models = model_list(h).await;
    let mut ids: Vec<String> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Four models in a quota with room for one more: a pinned one, one in use by a
/// worker, one used (a worker ran and stopped) after the fourth was added, and
/// the fourth, used never; an external one beside them. A fifth pull evicts the
/// fourth alone (the least recently used that may go), says so, and a dry run said
/// so first; a pull that cannot fit even then is refused with the numbers, and
/// nothing is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_past_the_quota_evicts_the_least_recently_used_that_may_go() {
    let (Some(server), Some(model)) = (llama_server(), hf_test_server::test_model()) else {
        return;
    };
    let small = 2 << 20;
    let (hf, s) = hub(4, small).await;
    let home = tempfile::tempdir().unwrap();
    let smol = fs_err::metadata(&model).unwrap().len();
    // two imports of the real model (one to run and stop, one left running) and two
    // small models, with half a small one to spare: a third needs an eviction
    let quota = 2 * smol + 2 * s + s / 2;
    let quota_arg = quota.to_string();
    let h = start(
        home.path(),
        &hf.url(),
        &[
            "--models-max-bytes",
            &quota_arg,
            "--health-interval-secs",
            "1",
        ],
    );
    add(&h, &server, "cpu").await;
    let external = tempfile::tempdir().unwrap();
    fs_err::write(external.path().join("theirs.gguf"), padded_gguf(small, 9)).unwrap();
    let (st, job) = post(
        &h,
        "/v1/models/scan",
        json!({"dirs": [external.path().display().to_string()]}),
    )
    .await;
    assert_eq!(st, 202, "{job}");
    assert_eq!(finish(&h, &job).await.0, "completed");

    // added in this order: M1 (pinned), M2 (never used), used (run, then stopped),
    // running (in use)
    assert_eq!(pull(&h, "hf:org/M1").await.1, "completed");
    assert_eq!(patch(&h, &id(1), json!({"pinned": true})).await, 200);
    assert_eq!(pull(&h, "hf:org/M2").await.1, "completed");
    let used_path = home.path().join("used.gguf");
    let running_path = home.path().join("running.gguf");
    fs_err::copy(&model, &used_path).unwrap();
    fs_err::copy(&model, &running_path).unwrap();
    let used = import(&h, &used_path).await;
    let running = import(&h, &running_path).await;
    for m in [&used, &running] {
        let (st, job) = post(
            &h,
            "/v1/workers/spawn",
            json!({"model": m, "engine": "llama.cpp"}),
        )
        .await;
        assert_eq!(st, 202, "{job}");
        let (state, _, ev) = finish(&h, &job).await;
        assert_eq!(state, "completed", "{ev:?}");
    }
    let (st, _) = post(&h, "/v1/models/unload", json!({"id": used})).await;
    assert_eq!(st, 200);
    wait_for("the stop to be recorded as a use", async || {
        let (_, m) = get(&h, &format!("/v1/models/{}", enc(&used))).await;
        !m["last_accessed"].is_null()
    })
    .await;
    let before = ids(&h).await;

    // the dry run names M2 alone, and removes nothing
    let (st, plan) = post(&h, "/v1/models/plan", json!({"model_ref": "hf:org/M3"})).await;
    assert_eq!(st, 200, "{plan}");
    let evict: Vec<&str> = plan["disk"]["evict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(evict, [id(2).as_str()], "{plan}");
    assert_eq!(plan["disk"]["fits"], true);
    assert_eq!(ids(&h).await, before);

    let (_, state, ev) = pull(&h, "hf:org/M3").await;
    assert_eq!(state, "completed", "{ev:?}");
    assert!(
        ev.iter().any(|(k, d)| k == "narration"
            && d["message"].as_str().unwrap().contains(&id(2))
            && d["message"].as_str().unwrap().contains("to make room")),
        "{ev:?}"
    );
    let after = ids(&h).await;
    let mut expected: Vec<String> = before.iter().filter(|i| **i != id(2)).cloned().collect();
    expected.push(id(3));
    expected.sort();
    assert_eq!(after, expected);
    assert!(
        external.path().join("theirs.gguf").is_file(),
        "the external file stays"
    );
    let metrics = crate::get_text(&h, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "rbee_disk_evictions_total{{model=\"{}\"}} 1",
            id(2)
        )),
        "{metrics}"
    );

    // M4 would need M3 and the used model gone too, and more than they hold: the
    // quota with the pinned and running models is too small; refused before any
    // byte, with the numbers, and nothing removed
    hf.add_repo(Repo::new(
        "org/Big",
        vec![RepoFile::lfs(
            "big-Q4_0.gguf",
            padded_gguf(usize::try_from(quota).unwrap(), 5),
        )],
    ));
    let sent = hf.bytes_sent();
    let (st, body, _) = pull(&h, "hf:org/Big").await;
    assert_eq!(st, 507, "{body}");
    assert!(
        body.contains("insufficient_storage") && body.contains("--models-max-bytes"),
        "{body}"
    );
    assert_eq!(hf.bytes_sent(), sent, "not a byte fetched");
    assert_eq!(ids(&h).await, after, "nothing removed");
}

/// Cleanup at start and on request: a partial no model can resume, the staging
/// folder of an install that died and the oldest logs of stopped workers go; the
/// partial of a paused pull stays and resumes; a dry run removes nothing. And
/// `GET /v1/storage` counts where the bytes are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_never_touches_a_resumable_partial() {
    let (hf, size) = hub(1, 16 << 20).await;
    let home = tempfile::tempdir().unwrap();
    let args = [
        "--gc-grace-secs",
        "0",
        "--worker-logs-max-bytes",
        "1000",
        "--bandwidth-limit",
        "4194304",
    ];
    let h = start(home.path(), &hf.url(), &args);
    // a pull cancelled half-way: paused, its partial kept
    let (st, job) = post(&h, "/v1/models/download", json!({"model_ref": "hf:org/M1"})).await;
    assert_eq!(st, 202, "{job}");
    wait_for("some bytes", async || hf.bytes_sent() > 4 << 20).await;
    let job_id = job["job_id"].as_str().unwrap();
    crate::client()
        .delete(format!("{}/v1/jobs/{job_id}", h.url))
        .send()
        .await
        .unwrap();
    let (state, _, _) = finish(&h, &job).await;
    assert_eq!(state, "cancelled");
    let (_, m) = get(&h, &format!("/v1/models/{}", enc(&id(1)))).await;
    assert_eq!(m["status"]["state"], "paused", "{m}");
    let downloads = home.path().join("downloads");
    let kept: Vec<_> = fs_err::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        kept.iter()
            .any(|p| p.extension().is_some_and(|e| e == "part"))
    );

    // what a crash leaves: an orphan partial, an install's staging folder, logs
    let orphan = downloads.join("0123456789abcdef-gone.gguf.part");
    fs_err::write(&orphan, vec![0u8; 3000]).unwrap();
    fs_err::write(orphan.with_extension("state"), b"{}").unwrap();
    let staging = home.path().join("workers/llama-cpp-cpu-x/.installing");
    fs_err::create_dir_all(&staging).unwrap();
    fs_err::write(staging.join("llama-server"), vec![0u8; 500]).unwrap();
    let logs = home.path().join("logs/workers");
    fs_err::create_dir_all(&logs).unwrap();
    let (old_log, new_log) = (logs.join("w-old.log"), logs.join("w-new.log"));
    fs_err::write(&old_log, vec![b'a'; 2000]).unwrap();
    fs_err::write(&new_log, vec![b'b'; 500]).unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    fs_err::File::options()
        .write(true)
        .open(&old_log)
        .unwrap()
        .file()
        .set_modified(an_hour_ago)
        .unwrap();

    let (st, usage) = get(&h, "/v1/storage").await;
    assert_eq!(st, 200, "{usage}");
    assert_eq!(usage["totals"]["worker_log_bytes"], 2500);
    assert!(
        usage["totals"]["orphan_partial_bytes"].as_u64().unwrap() >= 3002,
        "{usage}"
    );
    let m1 = &usage["models"][0];
    assert_eq!(m1["status"], "paused");
    assert!(m1["partial_bytes"].as_u64().unwrap() > 0, "{usage}");

    let (st, dry) = post(&h, "/v1/hive/gc", json!({"dry_run": true})).await;
    assert_eq!(st, 200, "{dry}");
    let listed: Vec<String> = dry["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = [
        orphan.clone(),
        orphan.with_extension("state"),
        staging.clone(),
        old_log.clone(),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect();
    expected.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "{dry}");
    assert_eq!(dry["bytes_freed"], 3000 + 2 + 500 + 2000);
    assert!(orphan.is_file() && staging.is_dir() && old_log.is_file());

    let (st, done) = post(&h, "/v1/hive/gc", json!({})).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["bytes_freed"], 3000 + 2 + 500 + 2000);
    assert!(!orphan.exists() && !staging.exists() && !old_log.exists());
    assert!(new_log.is_file(), "within the limit");
    for p in &kept {
        assert!(p.exists(), "the paused pull's {} stays", p.display());
    }
    let (st, bad) = post(&h, "/v1/hive/gc", json!({"dry_run": "yes"})).await;
    assert_eq!(st, 422, "{bad}");

    // a restart cleans up at start too, and the paused pull still resumes
    drop(h);
    fs_err::write(&orphan, b"again").unwrap();
    let h = start(home.path(), &hf.url(), &args[..4]);
    assert!(!orphan.exists(), "cleaned at start");
    let (_, state, ev) = pull(&h, "hf:org/M1").await;
    assert_eq!(state, "completed", "{ev:?}");
    assert!(
        ev.iter().any(
            |(k, d)| k == "narration" && d["message"].as_str().unwrap().starts_with("resuming")
        ),
        "{ev:?}"
    );
    let (_, usage) = get(&h, "/v1/storage").await;
    assert_eq!(usage["totals"]["own_bytes"], size);
}

/// The plan of Gemma 3 (a 262k-token vocabulary: several MiB of header) reads a
/// few MiB of a 250 MiB file, in windows that grow, and says what a full pull
/// then records; bad references and files that are not GGUF are clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_reads_only_the_header_and_matches_the_pull() {
    let Some(model) = gemma() else {
        return;
    };
    let data = fs_err::read(&model).unwrap();
    let len = data.len() as u64;
    let hf = HfServer::start(
        vec![
            Repo::new(
                "google/gemma-3-270m-GGUF",
                vec![RepoFile::lfs("gemma-3-270m-Q4_K_M.gguf", data)],
            ),
            Repo::new(
                "org/NotGguf",
                vec![RepoFile::lfs("model-Q4_0.gguf", test_bytes(4 << 20, 3))],
            ),
        ],
        None,
        false,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let h = start(home.path(), &hf.url(), &[]);
    let (st, plan) = post(
        &h,
        "/v1/models/plan",
        json!({"model_ref": "hf:google/gemma-3-270m-GGUF"}),
    )
    .await;
    assert_eq!(st, 200, "{plan}");
    let read = hf.bytes_sent();
    assert!(read <= 16 << 20, "{read} bytes read of {len}");
    assert!(
        plan["header"]["requests"].as_u64().unwrap() > 1,
        "the first window is too small for this vocabulary: {plan}"
    );
    assert_eq!(plan["header"]["bytes_read"], read);
    assert_eq!(plan["size_bytes"], len);
    assert_eq!(plan["architecture"], "gemma3");
    assert_eq!(plan["disk"]["needed_bytes"], len);
    assert_eq!(plan["disk"]["fits"], true);
    assert!(!plan["memory"]["by_context"].as_array().unwrap().is_empty());
    let models = model_list(&h).await;
    assert_eq!(models, json!([]), "a plan records nothing");

    let (_, state, ev) = pull(&h, "hf:google/gemma-3-270m-GGUF").await;
    assert_eq!(state, "completed", "{ev:?}");
    let (_, m) = get(
        &h,
        &format!(
            "/v1/models/{}",
            enc("hf:google/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf")
        ),
    )
    .await;
    assert_eq!(
        plan["gguf"], m["gguf"],
        "the same summary as the whole file's"
    );

    // memory at the contexts asked for; a bad one is a 400
    let (st, p) = post(
        &h,
        "/v1/models/plan",
        json!({"model_ref": "hf:google/gemma-3-270m-GGUF", "contexts": [1024, 4096]}),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    let by_context = p["memory"]["by_context"].as_array().unwrap();
    assert_eq!(by_context.len(), 2);
    assert_eq!(by_context[1]["context"], 4096);
    assert!(
        by_context[1]["kv_cache_bytes"].as_u64().unwrap()
            == 4 * by_context[0]["kv_cache_bytes"].as_u64().unwrap(),
        "{p}"
    );
    let (st, _) = post(
        &h,
        "/v1/models/plan",
        json!({"model_ref": "hf:google/gemma-3-270m-GGUF", "contexts": [0]}),
    )
    .await;
    assert_eq!(st, 400);

    // an imported file is planned from where it lies
    let (st, p) = post(
        &h,
        "/v1/models/plan",
        json!({"model_ref": format!("file:{}", model.display())}),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["gguf"], m["gguf"]);

    for (reference, status, says) in [
        ("hf:org/NoSuchRepo", 404, "not found"),
        ("hf:org/NotGguf", 400, "not a GGUF"),
        ("hf:", 400, ""),
        ("ftp://x/y.gguf", 400, ""),
    ] {
        let (st, v) = post(&h, "/v1/models/plan", json!({"model_ref": reference})).await;
        assert_eq!(st, status, "{reference}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{reference}: {v}"
        );
    }
    let models = model_list(&h).await;
    assert_eq!(
        models.as_array().unwrap().len(),
        1,
        "bad plans record nothing"
    );
}

/// A pull that cannot fit on the disk (`--min-free-disk` larger than what is
/// free) is refused before its first byte, with the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_past_the_free_disk_is_refused_before_its_first_byte() {
    let (hf, _) = hub(1, 1 << 20).await;
    let home = tempfile::tempdir().unwrap();
    let free = download::available_space(home.path()).unwrap();
    let keep = (free + (1 << 30)).to_string();
    let h = start(home.path(), &hf.url(), &["--min-free-disk", &keep]);
    let (st, plan) = post(&h, "/v1/models/plan", json!({"model_ref": "hf:org/M1"})).await;
    assert_eq!(st, 200, "{plan}");
    assert_eq!(plan["disk"]["fits"], false, "{plan}");
    let sent = hf.bytes_sent();
    let (st, body, _) = pull(&h, "hf:org/M1").await;
    assert_eq!(st, 507, "{body}");
    assert!(body.contains("--min-free-disk"), "{body}");
    assert_eq!(hf.bytes_sent(), sent);
    let models = model_list(&h).await;
    assert_eq!(models, json!([]));
    let left = fs_err::read_dir(home.path().join("models")).map_or(0, Iterator::count);
    assert_eq!(left, 0, "no folder made");
}
