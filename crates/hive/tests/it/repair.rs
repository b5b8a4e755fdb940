//! A damaged catalog, as a user meets it after a crash or a bad disk: truncated to
//! nothing, overwritten with garbage, one row that no longer reads. Each is said (in
//! `hive status`), and the models come back from their folders.

use std::path::Path;

use serde_json::{Value, json};

use crate::workers::import;
use crate::{fixture, get, model_list, post, start, wait_for};

fn hive(home: &Path) -> crate::Hive {
    start(home, "http://127.0.0.1:9", &[])
}

/// A home with one imported model; the hive stopped. The model's id.
async fn home_with_a_model(home: &Path) -> String {
    let h = hive(home);
    let file = home.join("in.gguf");
    fs_err::write(&file, fixture("llama-q4_0.gguf")).unwrap();
    let id = import(&h, &file).await;
    fs_err::remove_file(&file).unwrap();
    id
}

fn remove_wal(home: &Path) {
    for tail in ["-wal", "-shm"] {
        let _ = fs_err::remove_file(home.join(format!("catalog.db{tail}")));
    }
}

async fn catalog_health(h: &crate::Hive) -> Value {
    get(h, "/v1/capabilities").await.1["catalog"].clone()
}

/// The model is back, available, and its sha256 is hashed again.
async fn back(h: &crate::Hive, id: &str, sha: &Value) {
    let models = model_list(h).await;
    let m = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not back: {models}"))
        .clone();
    assert_eq!(m["status"]["state"], "available", "{m}");
    assert_eq!(m["gguf"]["architecture"], "llama", "{m}");
    wait_for("the re-adopted model's sha256", async || {
        let models = model_list(h).await;
        models
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id && &m["sha256"] == sha)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_catalog_is_said_and_its_models_come_back() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let id = home_with_a_model(home).await;
    let sha = {
        let h = hive(home);
        model_list(&h).await[0]["sha256"].clone()
    };
    assert!(sha.is_string());

    // truncated to nothing
    fs_err::write(home.join("catalog.db"), b"").unwrap();
    remove_wal(home);
    let h = hive(home);
    let health = catalog_health(&h).await;
    assert_eq!(health["ok"], false, "{health}");
    assert_eq!(health["health"]["readopted"], json!([id]), "{health}");
    back(&h, &id, &sha).await;
    drop(h);
    // once back, the next start has nothing to say
    let h = hive(home);
    assert_eq!(catalog_health(&h).await["ok"], true);
    drop(h);

    // garbage: moved aside, a new one made, the model back
    fs_err::write(home.join("catalog.db"), vec![0x5a_u8; 8192]).unwrap();
    remove_wal(home);
    let h = hive(home);
    let health = catalog_health(&h).await;
    let aside = health["health"]["damaged_moved_to"]
        .as_str()
        .unwrap_or_else(|| panic!("{health}"));
    assert!(
        Path::new(aside).is_file(),
        "the damaged file is kept: {aside}"
    );
    assert!(aside.contains("catalog.db.damaged-"), "{aside}");
    back(&h, &id, &sha).await;
    drop(h);

    // one row that no longer reads: set aside, named, the model back from its folder
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE artifacts SET data = '{not json' WHERE kind = 'model'\"); c.commit()",
        ])
        .arg(home.join("catalog.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = hive(home);
    let health = catalog_health(&h).await;
    let q = &health["health"]["quarantined"];
    assert_eq!(q[0]["id"], id.as_str(), "{health}");
    assert!(q[0]["reason"].as_str().unwrap().contains(&id), "{health}");
    back(&h, &id, &sha).await;

    // on request: nothing left to do
    let (s, v) = post(&h, "/v1/hive/repair", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["readopted"], json!([]), "{v}");
}
