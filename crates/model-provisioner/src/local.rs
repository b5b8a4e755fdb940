//! Local files as a vendor of models.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use model_catalog::{ArtifactStatus, ModelEntry};
use sha2::{Digest, Sha256};

use crate::{
    Dirs, ProvisionContext, ProvisionError, ProvisionRequest, Resolved, VendorSource, summary_of,
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
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut done = 0u64;
    let result = (|| {
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            dst.write_all(&buf[..n])?;
            done += n as u64;
            progress(done);
        }
        dst.sync_all()?;
        fs_err::rename(&tmp, to)
    })();
    if result.is_err() {
        let _ = fs_err::remove_file(&tmp);
    }
    result.map(|()| hex::encode(sha.finalize()))
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    model_catalog::sha256_file(path)
}

#[async_trait]
impl VendorSource<ModelEntry> for LocalFileVendor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn forms(&self) -> &'static str {
        "file:/abs/path/model.gguf"
    }

    fn supports(&self, reference: &str) -> bool {
        reference.trim().starts_with("file:")
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
        let path = fs_err::canonicalize(&path).map_err(|e| ProvisionError::Io(e.to_string()))?;
        // refuse what is not GGUF before anything is written
        summary_of(&[&path]).await?;
        let id = format!("file:{}", path.display());
        let name = path
            .file_name()
            .map_or_else(|| "model.gguf".into(), |n| n.to_string_lossy().into_owned());
        let dest = self.dirs.model_dir(&id)?.join(name);
        let mut entry = ModelEntry::new(&id, "local", &id, &dest);
        entry.size = meta.len();
        entry.source_url = Some(id.clone());
        entry.sha256 = request.sha256.as_ref().map(|s| s.to_ascii_lowercase());
        Ok(Resolved { id, plan: entry })
    }

    async fn read_range(
        &self,
        resolved: &Resolved<ModelEntry>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<crate::RangeRead, ProvisionError> {
        use std::io::Seek as _;
        if file > 0 {
            return Err(ProvisionError::Invalid(format!(
                "{} is one file: it has no file {}",
                resolved.id,
                file + 1
            )));
        }
        let source = local_path(&resolved.id)?;
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
        .map_err(|e| ProvisionError::Io(e.to_string()))?
        .map_err(|e| ProvisionError::Io(e.to_string()))
    }

    async fn fetch(
        &self,
        resolved: Resolved<ModelEntry>,
        ctx: &ProvisionContext,
    ) -> Result<ModelEntry, ProvisionError> {
        let mut entry = resolved.plan;
        let source = local_path(&resolved.id)?;
        let dest = entry.path.clone();
        let expected = entry.sha256.clone();
        let size = entry.size;
        let reporter = ctx.reporter.clone();
        let cancel = ctx.cancel.clone();
        let placed = tokio::task::spawn_blocking(move || -> std::io::Result<(String, bool)> {
            if let Some(parent) = dest.parent() {
                fs_err::create_dir_all(parent)?;
            }
            let _ = fs_err::remove_file(&dest);
            if std::fs::hard_link(&source, &dest).is_ok() {
                reporter.narrate(
                    "import",
                    &format!("hard-linked {} into the catalog", source.display()),
                );
                let sha = hash_file(&dest)?;
                reporter.progress(size, Some(size), 0.0, Some(0.0));
                return Ok((sha, true));
            }
            reporter.narrate(
                "import",
                &format!("copying {} into the catalog", source.display()),
            );
            let sha = copy_hashing(&source, &dest, &|done| {
                if !cancel.is_cancelled() {
                    reporter.progress(done, Some(size), 0.0, None);
                }
            })?;
            Ok((sha, false))
        })
        .await
        .map_err(|e| ProvisionError::Io(e.to_string()))?
        .map_err(|e| ProvisionError::Io(format!("cannot import {}: {e}", resolved.id)))?;
        let (sha, _linked) = placed;
        if let Some(expected) = &expected
            && !expected.eq_ignore_ascii_case(&sha)
        {
            let _ = fs_err::remove_file(&entry.path);
            return Err(ProvisionError::Invalid(format!(
                "bad sha256 for {}: expected {expected}, got {sha}",
                resolved.id
            )));
        }
        let summary = summary_of(&entry.files()).await?;
        entry = entry.with_summary(summary);
        entry.verified = expected.is_some();
        entry.sha256 = Some(sha);
        entry.status = ArtifactStatus::Available;
        Ok(entry)
    }
}
