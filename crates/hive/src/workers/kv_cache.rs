//! Warm swaps: a llama.cpp worker's slots (their KV cache) are saved to disk when
//! the hive unloads it (idle TTL, eviction, stop) and restored when the model is
//! loaded again, before the worker counts as ready, so that a conversation that comes
//! back goes on without processing its prompt again.
//!
//! The files live in `home/kv-cache/<model>/<settings>/slot-N.bin`: `<model>` is the
//! model's id, encoded as a folder name; `<settings>` a hash of what makes a cache
//! valid (the model's sha256, the engine's build, the context, the slots and the
//! engine's arguments), so a changed model or preset never restores a stale one, and
//! the folders of other settings are removed when a worker starts. They count
//! against `--kv-cache-max-bytes`, the least recently used file going first. A file
//! that does not restore is deleted and said; the worker serves anyway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The folder of all saved caches in `home`.
pub fn root(home: &Path) -> PathBuf {
    home.join("kv-cache")
}

/// The folder of a model's saved caches.
fn model_root(home: &Path, model_id: &str) -> std::io::Result<PathBuf> {
    let name = artifact_catalog::encode_dir_name(model_id)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(root(home).join(name))
}

/// The folder for a worker of `model_id` with these settings (what makes a saved
/// cache valid), made now; the model's folders of other settings are removed.
pub fn prepare(home: &Path, model_id: &str, settings: &[&str]) -> std::io::Result<PathBuf> {
    let mut hash = Sha256::new();
    for s in settings {
        hash.update(s.as_bytes());
        hash.update([0]);
    }
    let key = hex::encode(&hash.finalize()[..8]);
    let model = model_root(home, model_id)?;
    let dir = model.join(&key);
    fs_err::create_dir_all(&dir)?;
    for other in fs_err::read_dir(&model)?.flatten() {
        if other.file_name().to_string_lossy() != key.as_str() {
            let _ = fs_err::remove_dir_all(other.path());
        }
    }
    Ok(dir)
}

/// Forgets every saved cache of a model (its preset changed, or it is deleted).
pub fn forget(home: &Path, model_id: &str) {
    if let Ok(dir) = model_root(home, model_id)
        && dir.exists()
        && let Err(e) = fs_err::remove_dir_all(&dir)
    {
        tracing::warn!(model = model_id, "cannot remove its saved KV caches: {e}");
    }
}

fn slot_file(slot: u32) -> String {
    format!("slot-{slot}.bin")
}

/// How long one save or restore may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

async fn slot_action(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    slot: u32,
    action: &str,
) -> Result<Value, String> {
    let r = http
        .post(format!("{url}/slots/{slot}?action={action}"))
        .bearer_auth(key)
        .json(&json!({"filename": slot_file(slot)}))
        .timeout(CALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(v)
    } else {
        Err(v["error"]["message"]
            .as_str()
            .map_or_else(|| format!("{status}"), str::to_owned))
    }
}

/// Saves each of a worker's `slots` that holds tokens into `dir`; an empty one's
/// file is removed. The tokens saved, by slot.
pub async fn save(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    dir: &Path,
    slots: u32,
) -> Vec<(u32, u64)> {
    let mut saved = Vec::new();
    for slot in 0..slots {
        match slot_action(http, url, key, slot, "save").await {
            Ok(v) => {
                let tokens = v["n_saved"].as_u64().unwrap_or(0);
                if tokens == 0 {
                    let _ = fs_err::remove_file(dir.join(slot_file(slot)));
                } else {
                    saved.push((slot, tokens));
                }
            }
            Err(why) => tracing::warn!(slot, "cannot save the slot's KV cache: {why}"),
        }
    }
    saved
}

/// Restores the slots saved in `dir` into a worker. What restored (slot, tokens),
/// and what did not (slot, why): those files are deleted.
pub async fn restore(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    dir: &Path,
    slots: u32,
) -> (Vec<(u32, u64)>, Vec<(u32, String)>) {
    let (mut restored, mut failed) = (Vec::new(), Vec::new());
    for slot in 0..slots {
        let file = dir.join(slot_file(slot));
        if !file.is_file() {
            continue;
        }
        match slot_action(http, url, key, slot, "restore").await {
            Ok(v) => {
                restored.push((slot, v["n_restored"].as_u64().unwrap_or(0)));
                // used now: the last to go
                touch(&file);
            }
            Err(why) => {
                let _ = fs_err::remove_file(&file);
                failed.push((slot, why));
            }
        }
    }
    (restored, failed)
}

fn touch(file: &Path) {
    if let Ok(f) = fs_err::File::options().append(true).open(file) {
        let _ = f.file().set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used saved caches under `root` until they hold at
/// most `max` bytes; the files removed.
pub fn trim(root: &Path, max: u64) -> Vec<PathBuf> {
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    for model in fs_err::read_dir(root).into_iter().flatten().flatten() {
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
                if let Ok(m) = f.metadata()
                    && m.is_file()
                {
                    let when = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                    files.push((when, m.len(), f.path()));
                }
            }
        }
    }
    files.sort();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    let mut removed = Vec::new();
    for (_, len, path) in files {
        if total <= max {
            break;
        }
        if fs_err::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_pick_one_folder_and_old_ones_go() {
        let home = tempfile::tempdir().unwrap();
        let a = prepare(home.path(), "hf:org/repo/m.gguf", &["sha", "b1", "4096"]).unwrap();
        fs_err::write(a.join("slot-0.bin"), b"x").unwrap();
        assert_eq!(
            prepare(home.path(), "hf:org/repo/m.gguf", &["sha", "b1", "4096"]).unwrap(),
            a
        );
        assert!(a.join("slot-0.bin").exists());
        // another context: another folder, the old one gone
        let b = prepare(home.path(), "hf:org/repo/m.gguf", &["sha", "b1", "8192"]).unwrap();
        assert_ne!(a, b);
        assert!(!a.exists() && b.exists());
        assert!(b.starts_with(root(home.path())));
        forget(home.path(), "hf:org/repo/m.gguf");
        assert!(!b.exists());
        // an id that is a path stays inside the root
        let c = prepare(home.path(), "../../etc", &["x"]).unwrap();
        assert!(c.starts_with(root(home.path())));
    }

    #[test]
    fn the_least_recently_used_files_go_first_until_they_fit() {
        let home = tempfile::tempdir().unwrap();
        let old = prepare(home.path(), "old", &["1"]).unwrap();
        let new = prepare(home.path(), "new", &["1"]).unwrap();
        fs_err::write(old.join("slot-0.bin"), vec![0u8; 600]).unwrap();
        let f = fs_err::File::options()
            .append(true)
            .open(old.join("slot-0.bin"))
            .unwrap();
        f.file()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        fs_err::write(new.join("slot-1.bin"), vec![0u8; 600]).unwrap();
        let removed = trim(&root(home.path()), 1000);
        assert_eq!(removed, vec![old.join("slot-0.bin")]);
        assert!(new.join("slot-1.bin").exists());
        assert!(trim(&root(home.path()), 1000).is_empty());
        assert_eq!(trim(&root(home.path()), 0).len(), 1);
    }
}
