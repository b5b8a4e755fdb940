//! Plain HTTP(S) URLs as a vendor of models.

use std::sync::Arc;

use async_trait::async_trait;
use model_catalog::{ArtifactStatus, ModelEntry};

use crate::{
    Dirs, ProgressAdapter, ProvisionContext, ProvisionError, ProvisionRequest, Resolved,
    VendorInfo, VendorSource, download_error, summary_of,
};

/// Models at `http://` and `https://` URLs.
#[derive(Debug, Clone)]
pub struct HttpVendor {
    dirs: Dirs,
    downloader: download::Downloader,
}

impl HttpVendor {
    /// A vendor placing models in `dirs`.
    pub fn new(dirs: Dirs, downloader: download::Downloader) -> Self {
        Self { dirs, downloader }
    }
}

/// A safe file name from a URL's last path segment.
fn file_name(url: &url::Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    let decoded = percent_decode(last);
    let clean: String = decoded
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.').to_owned();
    if clean.is_empty() {
        "model.gguf".to_owned()
    } else {
        clean.chars().take(200).collect()
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The http vendor.
pub(crate) const HTTP: VendorInfo = VendorInfo {
    name: "http",
    forms: "https://host/path/model.gguf",
    prefixes: &["https://", "http://"],
};

#[async_trait]
impl VendorSource<ModelEntry> for HttpVendor {
    fn info(&self) -> &'static VendorInfo {
        &HTTP
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<ModelEntry>, ProvisionError> {
        let reference = request.reference.trim();
        let mut url = url::Url::parse(reference).map_err(|e| ProvisionError::InvalidReference {
            reference: reference.to_owned(),
            reason: e.to_string(),
        })?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ProvisionError::InvalidReference {
                reference: reference.to_owned(),
                reason: "no host".into(),
            });
        }
        url.set_fragment(None);
        let id = url.to_string();
        let path = self.dirs.model_dir(&id)?.join(file_name(&url));
        let mut entry = ModelEntry::new(&id, "http", &id, &path);
        entry.source_url = Some(id.clone());
        entry.sha256 = request.sha256.as_ref().map(|s| s.to_ascii_lowercase());
        Ok(HTTP.resolved(id, entry))
    }

    async fn read_range(
        &self,
        resolved: &Resolved<ModelEntry>,
        file: usize,
        start: u64,
        len: u64,
    ) -> Result<crate::RangeRead, ProvisionError> {
        crate::read_remote(&self.downloader, &resolved.plan, None, file, start, len, "").await
    }

    async fn fetch(
        &self,
        resolved: Resolved<ModelEntry>,
        ctx: &ProvisionContext,
    ) -> Result<ModelEntry, ProvisionError> {
        let mut entry = resolved.plan;
        let url: url::Url = resolved
            .id
            .parse()
            .map_err(|e| ProvisionError::Invalid(format!("bad URL: {e}")))?;
        let request = download::DownloadRequest {
            url,
            dest: entry.path.clone(),
            work_dir: self.dirs.downloads.clone(),
            sha256: entry.sha256.clone(),
            size: None,
            credential: None,
        };
        let reporter = Arc::new(ProgressAdapter {
            reporter: Arc::clone(&ctx.reporter),
            offset: 0,
            total: None,
        });
        let out = self
            .downloader
            .download(request, reporter, ctx.cancel.clone())
            .await
            .map_err(|e| download_error(e, ""))?;
        let summary = match summary_of(&[&out.path]).await {
            Ok(s) => s,
            Err(e) => {
                // what is not a model does not stay
                let _ = fs_err::remove_file(&out.path);
                return Err(e);
            }
        };
        entry = entry.with_summary(summary);
        entry.size = out.size;
        entry.sha256 = out.sha256;
        entry.verified = out.verified;
        entry.revision = out.etag;
        entry.status = ArtifactStatus::Available;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names() {
        let check = |u: &str, n: &str| assert_eq!(super::file_name(&u.parse().unwrap()), n, "{u}");
        check("https://h/a/b/model.Q4_K_M.gguf?x=1", "model.Q4_K_M.gguf");
        check("https://h/", "model.gguf");
        check("https://h/%2E%2E%2Fetc", "_etc");
        check("https://h/my%20model.gguf", "my_model.gguf");
    }
}
