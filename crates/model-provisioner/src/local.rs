//! Local files as a vendor of models.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use model_catalog::{ArtifactStatus, ModelEntry, Shard};

use crate::reference::shard_of;
use crate::{
    Dirs, ProvisionContext, ProvisionError, ProvisionRequest, Resolved, VendorInfo, VendorSource,
    summary_of,
};

/// Models imported from `file:` paths: hard-linked into the models folder when it is
/// on the same filesystem, else copied.
#[derive(Debug, Clone)]
pub struct LocalFileVendor {
    dirs: Dirs,
}

impl LocalFileVendor {
    /// A vendor placing models in `dirs`.
    pub fn new(dirs: Dirs) -> Self {
        Self { dirs }
    }
}

/// The path of a `file:` reference: `file:/abs`, `file:///abs` or `file://localhost/abs`.
fn local_path(reference: &str) -> Result<PathBuf, ProvisionError> {
    let rest = reference.trim().strip_prefix("file:").unwrap_or(reference);
    let rest = rest
        .strip_prefix("//localhost")
        .or_else(|| rest.strip_prefix("//"))
        .unwrap_or(rest);
    let path = PathBuf::from(rest);
    if !path.is_absolute() {
        return Err(ProvisionError::InvalidReference {
            reference: reference.to_owned(),
            reason: "a local path must be absolute: file:/abs/path/model.gguf".into(),
        });
    }
    Ok(path)
}

/// Copies `from` to `to` through a temporary file, hashing on the way.
fn copy_hashing(from: &Path, to: &Path, progress: &dyn Fn(u64)) -> std::io::Result<String> {
    let tmp = to.with_extension("importing");
    let mut src = fs_err::File::open(from)?;
    let mut dst = fs_err::File::create(&tmp)?;
    let result = (|| {
        let (_, sha) = artifact_catalog::copy_hashing(&mut src, &mut dst, &mut |n| progress(n))?;
        dst.sync_all()?;
        fs_err::rename(&tmp, to)?;
        Ok(sha)
    })();
    if result.is_err() {
        let _ = fs_err::remove_file(&tmp);
    }
    result
}

/// Puts `source` at `dest`: a hard link when the filesystem allows, else a copy;
/// its sha256.
fn place(
    source: &Path,
    dest: &Path,
    reporter: &dyn crate::ProvisionReporter,
    progress: &dyn Fn(u64),
) -> std::io::Result<String> {
    if let Some(parent) = dest.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let _ = fs_err::remove_file(dest);
    if std::fs::hard_link(source, dest).is_ok() {
        reporter.narrate(
            "import",
            &format!("hard-linked {} into the catalog", source.display()),
        );
        return model_catalog::sha256_file(dest);
    }
    reporter.narrate(
        "import",
        &format!("copying {} into the catalog", source.display()),
    );
    copy_hashing(source, dest, progress)
}

/// The files of the model at `path` (of `len` bytes), with their sizes: when its name
/// is a shard's (`NAME-0000K-of-0000N.gguf`, any K), the N shards beside it, in order;
/// else it alone.
fn model_files(path: &Path, len: u64) -> Result<Vec<(PathBuf, u64)>, ProvisionError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (Some((prefix, _, total)), Some(dir)) = (shard_of(&name), path.parent()) else {
        return Ok(vec![(path.to_path_buf(), len)]);
    };
    let suffix = &name[name.len() - ".gguf".len()..];
    (1..=total)
        .map(|i| {
            let shard = dir.join(format!("{prefix}-{i:05}-of-{total:05}{suffix}"));
            match fs_err::metadata(&shard) {
                Ok(m) if m.is_file() => Ok((shard, m.len())),
                _ => Err(ProvisionError::NotFound(format!(
                    "{name} is split into {total} files, but {} is not beside it",
                    shard.display()
                ))),
            }
        })
        .collect()
}

/// Each file of a resolved entry: where it is read from, where it goes, its size.
fn sources(entry: &ModelEntry) -> Result<Vec<(PathBuf, PathBuf, u64)>, ProvisionError> {
    if entry.shards.is_empty() {
        return Ok(vec![(
            local_path(&entry.id)?,
            entry.path.clone(),
            entry.size,
        )]);
    }
    entry
        .shards
        .iter()
        .map(|s| {
            let from = s.source_url.as_deref().unwrap_or_default();
            Ok((local_path(from)?, s.path.clone(), s.size))
        })
        .collect()
}

/// The local vendor.
pub(crate) const LOCAL: VendorInfo = VendorInfo {
    name: "local",
    forms: "file:/abs/path/model.gguf",
    prefixes: &["file:"],
};

#[async_trait]
impl VendorSource<ModelEntry> for LocalFileVendor {
    fn info(&self) -> &'static VendorInfo {
        &LOCAL
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<ModelEntry>, ProvisionError> {
        let path = local_path(&request.reference)?;
        let meta = fs_err::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ProvisionError::NotFound(format!("no such file: {}", path.display()))
            }
            _ => ProvisionError::Invalid(format!("cannot read {}: {e}", path.display())),
        })?;
        if !meta.is_file() {
            return Err(ProvisionError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        // shards are found, and copies named, by the names as given: a hub cache's
        // snapshot links to blobs named by their sha256
        let given = model_files(&path, meta.len())?;
        let mut sources = Vec::with_capacity(given.len());
        for (shard, size) in given {
            let real = fs_err::canonicalize(&shard).map_err(|e| ProvisionError::io("", e))?;
            let name = shard
                .file_name()
                .map_or_else(|| "model.gguf".into(), |n| n.to_string_lossy().into_owned());
            sources.push((real, name, size));
        }
        // refuse what is not one whole GGUF model before anything is written
        let paths: Vec<&Path> = sources.iter().map(|(p, _, _)| p.as_path()).collect();
        summary_of(&paths).await?;
        let id = format!("file:{}", sources[0].0.display());
        let dir = self.dirs.model_dir(&id)?;
        let mut entry = ModelEntry::new(&id, "local", &id, &dir.join(&sources[0].1));
        entry.size = sources.iter().map(|(_, _, size)| size).sum();
        entry.source_url = Some(id.clone());
        // a sha256 given is the first file's, as the entry's is
        entry.sha256 = request.sha256.as_ref().map(|s| s.to_ascii_lowercase());
        if sources.len() > 1 {
            entry.shards = sources
                .iter()
                .map(|(real, name, size)| Shard {
                    path: dir.join(name),
                    size: *size,
                    sha256: None,
                    source_url: Some(format!("file:{}", real.display())),
                })
                .collect();
        }
        Ok(LOCAL.resolved(id, entry))
    }

    async fn read_range(
        &self,
        resolved: &Resolved<ModelEntry>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<crate::RangeRead, ProvisionError> {
        use std::io::Seek as _;
        let source = sources(&resolved.plan)?
            .into_iter()
            .nth(file)
            .map(|(source, _, _)| source)
            .ok_or_else(|| {
                ProvisionError::Invalid(format!("{} has no file {}", resolved.id, file + 1))
            })?;
        tokio::task::spawn_blocking(move || -> std::io::Result<crate::RangeRead> {
            let mut f = fs_err::File::open(&source)?;
            let total = f.metadata()?.len();
            f.seek(std::io::SeekFrom::Start(start.min(total)))?;
            let mut bytes = Vec::new();
            f.take(len).read_to_end(&mut bytes)?;
            Ok(crate::RangeRead {
                bytes,
                total: Some(total),
            })
        })
        .await
        .map_err(|e| ProvisionError::io("", e))?
        .map_err(|e| ProvisionError::io("", e))
    }

    async fn fetch(
        &self,
        resolved: Resolved<ModelEntry>,
        ctx: &ProvisionContext,
    ) -> Result<ModelEntry, ProvisionError> {
        let mut entry = resolved.plan;
        let files = sources(&entry)?;
        let expected = entry.sha256.clone();
        let total = entry.size;
        let reporter = ctx.reporter.clone();
        let cancel = ctx.cancel.clone();
        let copies = files.clone();
        let hashes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let mut offset = 0;
            let mut hashes = Vec::with_capacity(copies.len());
            for (source, dest, size) in &copies {
                let progress = |done: u64| {
                    if !cancel.is_cancelled() {
                        reporter.progress(offset + done, Some(total), 0.0, None);
                    }
                };
                hashes.push(place(source, dest, &*reporter, &progress)?);
                offset += size;
            }
            reporter.progress(total, Some(total), 0.0, Some(0.0));
            Ok(hashes)
        })
        .await
        .map_err(|e| ProvisionError::io("", e))?
        .map_err(|e| ProvisionError::io(format!("cannot import {}", resolved.id), e));
        let remove_all = || {
            for (_, dest, _) in &files {
                let _ = fs_err::remove_file(dest);
            }
        };
        let hashes = hashes.inspect_err(|_| remove_all())?;
        let sha = hashes.first().cloned().unwrap_or_default();
        if let Some(expected) = &expected
            && !expected.eq_ignore_ascii_case(&sha)
        {
            remove_all();
            return Err(ProvisionError::Invalid(format!(
                "bad sha256 for {}: expected {expected}, got {sha}",
                resolved.id
            )));
        }
        for (shard, hash) in entry.shards.iter_mut().zip(&hashes) {
            shard.sha256 = Some(hash.clone());
        }
        let summary = summary_of(&entry.files()).await?;
        entry = entry.with_summary(summary);
        entry.verified = expected.is_some();
        entry.sha256 = Some(sha);
        entry.status = ArtifactStatus::Available;
        Ok(entry)
    }
}
