//! The Hugging Face hub cache's layout, for pulls asked to land there
//! (`--hf-cache-layout`), so that `huggingface_hub` and llama.cpp find them:
//!
//! ```text
//! CACHE/models--ORG--REPO/blobs/<sha256>                        the bytes
//! CACHE/models--ORG--REPO/snapshots/<commit>/<path in repo>     a relative symlink to the blob
//! CACHE/models--ORG--REPO/refs/<revision>                       the commit, for a branch or tag
//! ```
//!
//! A file is downloaded, resumed and verified in the hive's own folders as any other,
//! then placed: renamed into `blobs/` (copied through a temporary file and fsynced
//! when the cache is on another filesystem), linked from its snapshot. Removing it
//! removes the link, and the blob when no other snapshot links to it.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

/// The hub cache `huggingface_hub` uses: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    env("HF_HUB_CACHE")
        .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// The folder of a repo in the cache: `models--ORG--REPO`.
pub fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// A relative path of plain names only (no `..`, no root).
fn is_plain(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_))) && p.components().next().is_some()
}

/// One file to place: where it was downloaded, its path in the repo, its sha256.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    /// The verified file, in the hive's folder; `None`: the cache holds its blob.
    pub downloaded: Option<&'a Path>,
    /// Its path in the repo (`sub/dir/model.gguf`).
    pub repo_path: &'a str,
    /// Its sha256, lowercase hex (the LFS oid, the blob's name).
    pub sha256: &'a str,
}

/// Places verified files in the cache: each becomes `blobs/<sha256>`, linked from
/// `snapshots/<commit>/<repo path>`; `refs/<revision>` records the commit when the
/// revision was a name. Returns the links, in order. Blocking.
pub fn place(
    cache: &Path,
    repo: &str,
    revision: &str,
    commit: &str,
    files: &[Placement<'_>],
) -> std::io::Result<Vec<PathBuf>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    if !is_plain(Path::new(repo)) || !is_plain(Path::new(commit)) {
        return Err(invalid(format!(
            "cannot place {repo}@{commit} in the hub cache"
        )));
    }
    let root = repo_dir(cache, repo);
    let blobs = root.join("blobs");
    fs_err::create_dir_all(&blobs)?;
    let mut links = Vec::with_capacity(files.len());
    for f in files {
        let rel = Path::new(f.repo_path);
        let sha_ok = f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_plain(rel) || !sha_ok {
            return Err(invalid(format!(
                "cannot place {} ({}) in the hub cache",
                f.repo_path, f.sha256
            )));
        }
        let blob = blobs.join(f.sha256);
        match f.downloaded {
            Some(ours) => {
                let len = fs_err::metadata(ours)?.len();
                if fs_err::metadata(&blob).is_ok_and(|m| m.len() == len) {
                    // the cache has these bytes already (same sha256)
                    fs_err::remove_file(ours)?;
                } else {
                    move_file(ours, &blob)?;
                }
            }
            None if blob.is_file() => {}
            None => {
                return Err(invalid(format!("the hub cache has no blob {}", f.sha256)));
            }
        }
        let link = root.join("snapshots").join(commit).join(rel);
        if let Some(parent) = link.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let depth = rel.components().count() + 1;
        let target: PathBuf = std::iter::repeat_n(Path::new(".."), depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(f.sha256);
        if fs_err::symlink_metadata(&link).is_ok() {
            fs_err::remove_file(&link)?;
        }
        fs_err::os::unix::fs::symlink(&target, &link)?;
        links.push(link);
    }
    if revision != commit && is_plain(Path::new(revision)) {
        let refs = root.join("refs").join(revision);
        if let Some(parent) = refs.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let tmp = refs.with_extension("tmp-rbee");
        fs_err::write(&tmp, commit)?;
        fs_err::rename(&tmp, &refs)?;
    }
    Ok(links)
}

/// Moves a file: a rename, else (another filesystem) a copy through a temporary
/// file beside the destination, fsynced, renamed into place, then the source removed.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs_err::rename(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() != Some(18) => return Err(e), // EXDEV
        Err(_) => {}
    }
    let tmp = to.with_extension("incomplete");
    {
        let mut src = fs_err::File::open(from)?;
        let mut dst = fs_err::File::create(&tmp)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.flush()?;
        dst.sync_all()?;
    }
    fs_err::rename(&tmp, to)?;
    fs_err::remove_file(from)
}

/// Removes a placed file: its snapshot link, and the blob it points to when no other
/// link of the repo's snapshots does. Only what lies under `cache/models--*/` is
/// touched. Returns the bytes freed. Blocking.
pub fn remove(cache: &Path, link: &Path) -> std::io::Result<u64> {
    let Some(root) = link
        .ancestors()
        .find(|a| a.parent() == Some(cache))
        .filter(|r| {
            r.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("models--"))
        })
        .map(Path::to_path_buf)
    else {
        return Ok(0);
    };
    let Ok(meta) = fs_err::symlink_metadata(link) else {
        return Ok(0);
    };
    if !meta.file_type().is_symlink() {
        return Ok(0);
    }
    let blob = fs_err::canonicalize(link).ok();
    fs_err::remove_file(link)?;
    let Some(blob) = blob
        .filter(|b| b.starts_with(fs_err::canonicalize(root.join("blobs")).unwrap_or_default()))
    else {
        return Ok(0);
    };
    if links_to(&root.join("snapshots"), &blob) {
        return Ok(0);
    }
    let bytes = fs_err::metadata(&blob).map_or(0, |m| m.len());
    fs_err::remove_file(&blob)?;
    Ok(bytes)
}

/// Whether any link under `dir` resolves to `target`.
fn links_to(dir: &Path, target: &Path) -> bool {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let p = e.path();
        match fs_err::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => links_to(&p, target),
            Ok(m) if m.file_type().is_symlink() => {
                fs_err::canonicalize(&p).is_ok_and(|t| t == target)
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_files_are_blobs_linked_from_their_snapshot_and_removed_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("hub");
        let ours = dir.path().join("ours.gguf");
        fs_err::write(&ours, b"GGUF bytes").unwrap();
        let sha = "a".repeat(64);
        let links = place(
            &cache,
            "org/repo",
            "main",
            &"c".repeat(40),
            &[Placement {
                downloaded: Some(&ours),
                repo_path: "sub/model.gguf",
                sha256: &sha,
            }],
        )
        .unwrap();
        let root = cache.join("models--org--repo");
        assert_eq!(
            links[0],
            root.join("snapshots")
                .join("c".repeat(40))
                .join("sub/model.gguf")
        );
        assert_eq!(
            fs_err::read_link(&links[0]).unwrap(),
            Path::new("../../../blobs").join(&sha)
        );
        assert_eq!(fs_err::read(&links[0]).unwrap(), b"GGUF bytes");
        assert!(!ours.exists());
        assert_eq!(
            fs_err::read_to_string(root.join("refs/main")).unwrap(),
            "c".repeat(40)
        );
        assert_eq!(remove(&cache, &links[0]).unwrap(), 10);
        assert!(!root.join("blobs").join(&sha).exists());
        // nothing outside the cache's repos is touched
        let elsewhere = dir.path().join("x");
        fs_err::write(&elsewhere, b"x").unwrap();
        assert_eq!(remove(&cache, &elsewhere).unwrap(), 0);
        assert!(elsewhere.exists());
    }

    #[test]
    fn names_that_would_leave_the_cache_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.gguf");
        fs_err::write(&ours, b"x").unwrap();
        let sha = "b".repeat(64);
        for (repo, path) in [
            ("org/repo", "../x.gguf"),
            ("../org", "m.gguf"),
            ("org/repo", "/abs.gguf"),
        ] {
            let r = place(
                dir.path(),
                repo,
                "main",
                "c",
                &[Placement {
                    downloaded: Some(&ours),
                    repo_path: path,
                    sha256: &sha,
                }],
            );
            assert!(r.is_err(), "{repo} {path}");
        }
        assert!(ours.exists());
    }
}
