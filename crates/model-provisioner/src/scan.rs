//! Finding the GGUF models other tools already keep, to adopt them where they lie:
//!
//! - the Hugging Face hub cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//!   `~/.cache/huggingface/hub`), and llama.cpp's cache (`LLAMA_CACHE`, else
//!   `~/.cache/llama.cpp`), which uses the same layout: `models--ORG--REPO/snapshots/
//!   <commit>/<path>` symlinks into `blobs/<sha256>`;
//! - Ollama's store (`OLLAMA_MODELS`, else `~/.ollama/models`): manifests under
//!   `manifests/<registry>/<namespace>/<name>/<tag>` naming `blobs/sha256-<hex>`
//!   layers, the model's of type `application/vnd.ollama.image.model`;
//! - LM Studio's folder (`~/.lmstudio/models`, `~/.cache/lm-studio/models`):
//!   `publisher/repo/file.gguf`;
//! - any folder: every `*.gguf` under it.
//!
//! Nothing is written, moved or opened for writing: a scan reads directory entries,
//! manifests and GGUF headers. What it cannot read is reported, not fatal.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use model_catalog::{ArtifactStatus, ModelEntry, ModelProjector, Shard};
use serde::Serialize;

use crate::reference::shard_of;

/// Where a scan looks, and as what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Store {
    /// `huggingface`, `ollama`, `lmstudio` or `folder`.
    pub kind: &'static str,
    /// The folder.
    pub path: PathBuf,
}

/// What a scan found: models to record, and what it could not read.
#[derive(Debug, Default, Serialize)]
pub struct Found {
    /// Each model, `external`, with its GGUF summary; its sha256 when the store's
    /// names give it.
    #[serde(skip)]
    pub models: Vec<ModelEntry>,
    /// `{"path", "reason"}` for each thing skipped.
    pub problems: Vec<Problem>,
    /// The stores looked at.
    pub stores: Vec<Store>,
}

/// A thing a scan skipped, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What it is.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// The stores that exist on this machine, from the environment as each tool reads it.
pub fn default_stores() -> Vec<Store> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let mut out = Vec::new();
    let hf = crate::hf_cache::hub_cache_dir();
    let llama = env("LLAMA_CACHE").or_else(|| home().map(|h| h.join(".cache/llama.cpp")));
    let ollama = env("OLLAMA_MODELS").or_else(|| home().map(|h| h.join(".ollama/models")));
    for (kind, p) in [
        ("huggingface", hf),
        ("huggingface", llama),
        ("ollama", ollama),
    ] {
        if let Some(p) = p.filter(|p| p.is_dir()) {
            out.push(Store { kind, path: p });
        }
    }
    for p in [".lmstudio/models", ".cache/lm-studio/models"] {
        if let Some(p) = home().map(|h| h.join(p)).filter(|p| p.is_dir()) {
            out.push(Store {
                kind: "lmstudio",
                path: p,
            });
        }
    }
    out
}

/// What kind of store a folder the user named is, from what is in it.
pub fn store_of(path: &Path) -> Store {
    let kind = if path.join("manifests").is_dir() && path.join("blobs").is_dir() {
        "ollama"
    } else if fs_err::read_dir(path).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("models--")))
    }) {
        "huggingface"
    } else {
        "folder"
    };
    Store {
        kind,
        path: path.to_path_buf(),
    }
}

/// Scans `stores`.
pub fn scan(stores: &[Store]) -> Found {
    let mut found = Found {
        stores: stores.to_vec(),
        ..Found::default()
    };
    for s in stores {
        match s.kind {
            "huggingface" => scan_hf(&s.path, &mut found),
            "ollama" => scan_ollama(&s.path, &mut found),
            _ => scan_folder(&s.path, s.kind, &mut found),
        }
    }
    // a file seen through two stores (an LM Studio folder that is also named) once
    let mut seen = HashSet::new();
    found.models.retain(|m| seen.insert(m.id.clone()));
    found
}

fn problem(found: &mut Found, path: &Path, reason: impl Into<String>) {
    found.problems.push(Problem {
        path: path.to_path_buf(),
        reason: reason.into(),
    });
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn entries(dir: &Path, found: &mut Found) -> Vec<PathBuf> {
    match fs_err::read_dir(dir) {
        Ok(d) => {
            let mut v: Vec<PathBuf> = d.filter_map(Result::ok).map(|e| e.path()).collect();
            v.sort();
            v
        }
        Err(e) => {
            problem(found, dir, format!("cannot read the folder: {e}"));
            Vec::new()
        }
    }
}

/// The multimodal projector beside a model, as the hub's repos, LM Studio and
/// llama.cpp's cache keep them: an `mmproj*.gguf` in the same folder (chosen as
/// [`crate::reference::pick_projector`] does) whose header is a projector as wide as
/// the model. It stays where it lies; its sha256 is not taken.
fn projector_beside(model: &Path, width: Option<u64>) -> Option<ModelProjector> {
    let dir = model.parent()?;
    let names: Vec<String> = fs_err::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let model_name = model.file_name()?.to_string_lossy();
    let name = crate::reference::pick_projector(&model_name, &names)?;
    let path = dir.join(name);
    let file = fs_err::File::open(&path).ok()?;
    let size = file.metadata().ok()?.len();
    let summary = gguf::read(file, &gguf::ReadOptions::default())
        .ok()?
        .summary()
        .projector?;
    summary.fits(width).then(|| ModelProjector {
        path,
        size,
        sha256: String::new(),
        summary,
        source_url: None,
    })
}

/// An external entry for a GGUF file (a split model's first shard, with `shards`
/// beside it), with its summary; None (and a problem) when it is not a readable,
/// whole GGUF model.
fn adopt(
    found: &mut Found,
    id: String,
    provider: &str,
    reference: String,
    path: &Path,
    shards: Vec<Shard>,
    sha256: Option<String>,
) -> Option<ModelEntry> {
    let mut entry = ModelEntry::new(&id, provider, &reference, path);
    entry.shards = shards;
    // a projector beside its model is no model of its own (one named otherwise is
    // said by its header, below)
    if crate::reference::is_projector_name(&path.to_string_lossy()) {
        return None;
    }
    let summary = match crate::gguf_summary(&entry.files()) {
        Ok(s) => s,
        Err(e) => {
            problem(found, path, format!("not a GGUF model: {e}"));
            return None;
        }
    };
    let size = if entry.shards.is_empty() {
        match fs_err::metadata(path) {
            Ok(m) => m.len(),
            Err(e) => {
                problem(found, path, e.to_string());
                return None;
            }
        }
    } else {
        entry.shards.iter().map(|s| s.size).sum()
    };
    let width = summary.embedding_length;
    let mut entry = entry.with_summary(summary);
    entry.projector = projector_beside(path, width);
    entry.size = size;
    entry.sha256 = sha256;
    entry.status = ArtifactStatus::Available;
    entry.external = true;
    Some(entry)
}

/// `models--ORG--REPO/snapshots/<commit>/<path>.gguf`, each a symlink into
/// `blobs/<sha256>`.
fn scan_hf(root: &Path, found: &mut Found) {
    for repo_dir in entries(root, found) {
        let name = repo_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some(repo) = name.strip_prefix("models--") else {
            continue;
        };
        let Some((org, repo)) = repo.split_once("--") else {
            continue;
        };
        let repo = format!("{org}/{repo}");
        let snapshots = repo_dir.join("snapshots");
        if !snapshots.is_dir() {
            continue;
        }
        // the newest snapshot that has the file wins: later commits first
        let mut commits = entries(&snapshots, found);
        commits.sort_by_key(|c| {
            std::cmp::Reverse(fs_err::metadata(c).and_then(|m| m.modified()).ok())
        });
        let mut taken = HashSet::new();
        for commit_dir in commits {
            let commit = commit_dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let mut files = Vec::new();
            walk(&commit_dir, &mut files, found, 0, &mut HashSet::new());
            let relative: Vec<(String, PathBuf)> = files
                .into_iter()
                .filter_map(|f| {
                    let rel = f
                        .strip_prefix(&commit_dir)
                        .ok()?
                        .to_string_lossy()
                        .replace('\\', "/");
                    Some((rel, f))
                })
                .collect();
            for (rel, file) in &relative {
                if !taken.insert(rel.clone()) {
                    continue;
                }
                if shard_of(rel).is_some_and(|(_, i, _)| i > 1) {
                    continue;
                }
                let blob = fs_err::canonicalize(file).ok();
                let sha = blob
                    .as_ref()
                    .and_then(|b| b.file_name())
                    .map(|n| n.to_string_lossy().to_ascii_lowercase())
                    .filter(|n| is_hex64(n));
                let id = format!("hf:{repo}/{rel}");
                let reference = format!("hf:{repo}@{commit}/{rel}");
                let shards = shards_beside(rel, &relative);
                if let Some(mut e) = adopt(found, id, "huggingface", reference, file, shards, sha) {
                    e.revision = Some(commit.clone());
                    found.models.push(e);
                }
            }
        }
    }
}

/// The shards of a split model (first included), from the files beside it.
fn shards_beside(first: &str, files: &[(String, PathBuf)]) -> Vec<Shard> {
    let Some((prefix, 1, total)) = shard_of(first) else {
        return Vec::new();
    };
    let mut shards: Vec<(u32, &PathBuf)> = files
        .iter()
        .filter_map(|(rel, p)| match shard_of(rel) {
            Some((pre, i, t)) if pre == prefix && t == total => Some((i, p)),
            _ => None,
        })
        .collect();
    shards.sort_by_key(|(i, _)| *i);
    shards
        .into_iter()
        .map(|(_, p)| Shard {
            path: p.clone(),
            size: fs_err::metadata(p).map_or(0, |m| m.len()),
            sha256: fs_err::canonicalize(p)
                .ok()
                .and_then(|b| {
                    b.file_name()
                        .map(|n| n.to_string_lossy().to_ascii_lowercase())
                })
                .filter(|n| is_hex64(n)),
            source_url: None,
        })
        .collect()
}

/// Every `*.gguf` under `dir` (symlinks followed, loops and depth beyond 8 skipped).
fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    found: &mut Found,
    depth: u32,
    visited: &mut HashSet<PathBuf>,
) {
    if depth > 8 {
        problem(
            found,
            dir,
            "nested more than 8 folders deep: not looked into",
        );
        return;
    }
    let Ok(real) = fs_err::canonicalize(dir) else {
        problem(
            found,
            dir,
            "cannot resolve the folder (a broken or looping link)",
        );
        return;
    };
    if !visited.insert(real) {
        problem(
            found,
            dir,
            "a link back to a folder already scanned (a loop): skipped",
        );
        return;
    }
    for p in entries(dir, found) {
        match fs_err::metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, out, found, depth + 1, visited),
            Ok(m) if m.is_file() => {
                if p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                {
                    out.push(p);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                {
                    problem(found, &p, format!("cannot read it: {e}"));
                }
            }
        }
    }
}

/// Every GGUF under a folder (LM Studio's is `publisher/repo/file.gguf`), as `file:`.
fn scan_folder(root: &Path, kind: &str, found: &mut Found) {
    let mut files = Vec::new();
    walk(root, &mut files, found, 0, &mut HashSet::new());
    let relative: Vec<(String, PathBuf)> = files
        .iter()
        .map(|f| (f.to_string_lossy().into_owned(), f.clone()))
        .collect();
    for (text, file) in &relative {
        if shard_of(text).is_some_and(|(_, i, _)| i > 1) {
            continue;
        }
        let id = format!("file:{text}");
        let shards = shards_beside(text, &relative);
        if let Some(e) = adopt(found, id.clone(), kind, id, file, shards, None) {
            found.models.push(e);
        }
    }
}

#[derive(serde::Deserialize)]
struct OllamaManifest {
    layers: Vec<OllamaLayer>,
}

#[derive(serde::Deserialize)]
struct OllamaLayer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
}

/// `manifests/<registry>/<namespace>/<name>/<tag>` naming `blobs/sha256-<hex>`.
fn scan_ollama(root: &Path, found: &mut Found) {
    let manifests = root.join("manifests");
    let mut files = Vec::new();
    collect_files(&manifests, &mut files, found, 0);
    for m in files {
        let Ok(rel) = m.strip_prefix(&manifests) else {
            continue;
        };
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts.len() != 4 {
            continue;
        }
        let (registry, namespace, name, tag) = (&parts[0], &parts[1], &parts[2], &parts[3]);
        let short = if registry == "registry.ollama.ai" && namespace == "library" {
            format!("{name}:{tag}")
        } else if registry == "registry.ollama.ai" {
            format!("{namespace}/{name}:{tag}")
        } else {
            format!("{registry}/{namespace}/{name}:{tag}")
        };
        let text = match fs_err::read(&m) {
            Ok(t) => t,
            Err(e) => {
                problem(found, &m, format!("cannot read the manifest: {e}"));
                continue;
            }
        };
        let manifest: OllamaManifest = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                problem(found, &m, format!("not an Ollama manifest: {e}"));
                continue;
            }
        };
        let Some(layer) = manifest
            .layers
            .iter()
            .find(|l| l.media_type == crate::oci::OLLAMA_MODEL)
        else {
            problem(found, &m, "the manifest has no model layer");
            continue;
        };
        let Some(hex) = layer.digest.strip_prefix("sha256:").filter(|h| is_hex64(h)) else {
            problem(found, &m, format!("bad layer digest {:?}", layer.digest));
            continue;
        };
        let blob = root.join("blobs").join(format!("sha256-{hex}"));
        if !blob.is_file() {
            problem(found, &blob, format!("the blob of {short} is missing"));
            continue;
        }
        let id = format!("ollama:{short}");
        if let Some(mut e) = adopt(
            found,
            id.clone(),
            "ollama",
            id,
            &blob,
            Vec::new(),
            Some(hex.to_ascii_lowercase()),
        ) {
            e.name = short.clone();
            found.models.push(e);
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, found: &mut Found, depth: u32) {
    if depth > 6 {
        return;
    }
    for p in entries(dir, found) {
        match fs_err::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => collect_files(&p, out, found, depth + 1),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
}
