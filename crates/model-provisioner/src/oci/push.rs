//! A model out to a registry as a CNCF ModelPack artifact: each GGUF file one raw
//! weight layer, a config with the GGUF summary, the source and the license, and a
//! manifest with the standard annotations. A blob the registry has already is not
//! sent again; one that is sent goes in chunks read from disk, its upload session
//! saved after each so that a push killed half-way goes on where it stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use artifact_catalog::ArtifactStatus;
use model_catalog::ModelEntry;
use reqwest::{Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use super::{
    FILEPATH, MODEL_ARTIFACT, MODEL_CONFIG, OciConfig, OciReference, Repository, WEIGHT_RAW,
};
use crate::{ProvisionError, ProvisionReporter};

/// Bytes sent per `PATCH`.
const CHUNK: usize = 16 << 20;

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    /// The target, pinned: `oci://HOST/REPO:TAG@sha256:...`.
    pub reference: String,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// Blobs sent.
    pub blobs_uploaded: usize,
    /// Blobs the registry had already.
    pub blobs_skipped: usize,
    /// Bytes sent.
    pub bytes_uploaded: u64,
}

/// An upload session, saved between chunks.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    location: String,
    offset: u64,
}

fn push_error(r: &OciReference, message: String) -> ProvisionError {
    ProvisionError::failed("push_failed", format!("push to {r}: {message}"))
}

/// One file to send.
struct Blob {
    path: PathBuf,
    size: u64,
    digest: String,
    title: String,
}

/// `general.license` from a GGUF header, when it has one.
fn license_of(path: &Path) -> Option<String> {
    let file = fs_err::File::open(path).ok()?;
    let g = gguf::read(file, &gguf::ReadOptions::default()).ok()?;
    g.get("general.license")
        .and_then(gguf::Value::as_str)
        .map(str::to_owned)
}

/// The upload URL a registry's `Location` names, absolute.
fn absolute(repo: &Repository, location: &str) -> Result<url::Url, String> {
    let base = url::Url::parse(&repo.url("")).map_err(|e| e.to_string())?;
    base.join(location)
        .map_err(|e| format!("bad upload location {location:?}: {e}"))
}

/// Pushes `entry` (Available) to `target` (`oci://HOST/REPO:TAG`). Upload sessions
/// are saved under `state_dir`.
pub async fn push(
    http: reqwest::Client,
    config: &OciConfig,
    entry: &ModelEntry,
    target: &str,
    state_dir: &Path,
    reporter: Arc<dyn ProvisionReporter>,
    cancel: CancellationToken,
) -> Result<PushOutcome, ProvisionError> {
    let r = OciReference::parse(target)?;
    let Some(tag) = r.tag.clone().filter(|_| r.digest.is_none()) else {
        return Err(ProvisionError::InvalidReference {
            reference: target.to_owned(),
            reason: "a push names a tag (oci://HOST/REPO:TAG), not a digest".into(),
        });
    };
    if entry.status != ArtifactStatus::Available {
        return Err(ProvisionError::Invalid(format!(
            "{} is {}, not available: only a whole, verified model is pushed",
            entry.id,
            entry.status.name()
        )));
    }
    let mut files: Vec<(PathBuf, u64, Option<String>)> = entry
        .parts()
        .into_iter()
        .map(|s| (s.path, s.size, s.sha256))
        .collect();
    // its projector goes as a layer of its own, titled mmproj*.gguf as a pull finds it
    files.extend(entry.projector.as_ref().map(|p| {
        (
            p.path.clone(),
            p.size,
            Some(p.sha256.clone()).filter(|s| !s.is_empty()),
        )
    }));
    let projector = entry.projector.as_ref().map(|p| p.path.clone());
    let mut blobs = Vec::with_capacity(files.len());
    for (path, size, sha) in files {
        let meta = fs_err::metadata(&path).map_err(|e| ProvisionError::io("", e))?;
        if meta.len() != size {
            return Err(ProvisionError::Invalid(format!(
                "{} is {} bytes, the catalog says {size}: run rbee models verify",
                path.display(),
                meta.len()
            )));
        }
        let sha = match sha {
            Some(s) => s,
            None => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || model_catalog::sha256_file(&p))
                    .await
                    .map_err(|e| ProvisionError::io("", e))?
                    .map_err(|e| ProvisionError::io("", e))?
            }
        };
        let mut title = path.file_name().map_or_else(
            || "model.gguf".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        if projector.as_ref() == Some(&path) && !crate::reference::is_projector_name(&title) {
            title = format!("mmproj-{title}");
        }
        blobs.push(Blob {
            path,
            size,
            digest: format!("sha256:{sha}"),
            title,
        });
    }
    let repo = Repository::new(http, config, &r, true);
    fs_err::create_dir_all(state_dir).map_err(|e| ProvisionError::io("", e))?;
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let mut outcome = PushOutcome {
        reference: String::new(),
        manifest_digest: String::new(),
        blobs_uploaded: 0,
        blobs_skipped: 0,
        bytes_uploaded: 0,
    };
    let started = Instant::now();
    let mut done_before = 0;
    for b in &blobs {
        if cancel.is_cancelled() {
            return Err(ProvisionError::Cancelled);
        }
        if blob_exists(&repo, &r, &b.digest).await? {
            reporter.narrate(
                "push",
                &format!("{} is on the registry already ({})", b.title, b.digest),
            );
            outcome.blobs_skipped += 1;
        } else {
            reporter.narrate("push", &format!("sending {} ({})", b.title, b.digest));
            let sent = upload(&repo, &r, b, state_dir, &cancel, &|at| {
                let done = done_before + at;
                #[allow(clippy::cast_precision_loss)]
                let speed = outcome_speed(done, started);
                #[allow(clippy::cast_precision_loss)]
                let eta = (speed > 0.0).then(|| total.saturating_sub(done) as f64 / speed);
                reporter.progress(done, Some(total), speed, eta);
            })
            .await?;
            outcome.blobs_uploaded += 1;
            outcome.bytes_uploaded += sent;
        }
        done_before += b.size;
    }
    // the config: ModelPack's fields, and the GGUF summary as the hive read it
    let summary = entry.gguf.as_ref();
    let license = {
        let p = entry.path.clone();
        tokio::task::spawn_blocking(move || license_of(&p))
            .await
            .ok()
            .flatten()
    };
    let model_config = json!({
        "descriptor": {
            "name": entry.name,
            "licenses": license.clone().map(|l| vec![l]),
            "sourceURL": entry.source_url.clone().unwrap_or_else(|| entry.reference.clone()),
            "revision": entry.revision,
        },
        "config": {
            "format": "gguf",
            "architecture": summary.and_then(|g| g.architecture.clone()),
            "quantization": summary.and_then(|g| g.quantization.clone()),
            "paramSize": summary.map(|g| g.parameter_count.to_string()),
        },
        "modelfs": {
            "type": "layers",
            "diffIds": blobs.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(),
        },
        "gguf": summary,
    });
    let config_bytes = serde_json::to_vec(&model_config).map_err(|e| ProvisionError::io("", e))?;
    let config_digest = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&config_bytes))
    );
    if !blob_exists(&repo, &r, &config_digest).await? {
        put_small_blob(&repo, &r, &config_digest, config_bytes.clone()).await?;
    }
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut annotations = serde_json::Map::new();
    annotations.insert("org.opencontainers.image.title".into(), json!(entry.name));
    annotations.insert("org.opencontainers.image.created".into(), json!(created));
    annotations.insert(
        "org.opencontainers.image.source".into(),
        json!(
            entry
                .source_url
                .clone()
                .unwrap_or_else(|| entry.reference.clone())
        ),
    );
    if let Some(rev) = &entry.revision {
        annotations.insert("org.opencontainers.image.revision".into(), json!(rev));
    }
    if let Some(l) = license {
        annotations.insert("org.opencontainers.image.licenses".into(), json!(l));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": MODEL_ARTIFACT,
        "config": {"mediaType": MODEL_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": blobs.iter().map(|b| json!({
            "mediaType": WEIGHT_RAW,
            "digest": b.digest,
            "size": b.size,
            "annotations": {
                "org.opencontainers.image.title": b.title,
                FILEPATH: b.title,
            },
        })).collect::<Vec<_>>(),
        "annotations": annotations,
    });
    let body = serde_json::to_vec(&manifest).map_err(|e| ProvisionError::io("", e))?;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
    let url = repo.url(&format!("manifests/{tag}"));
    let resp = repo
        .send(|c| {
            c.put(&url)
                .header(
                    header::CONTENT_TYPE,
                    "application/vnd.oci.image.manifest.v1+json",
                )
                .body(body.clone())
        })
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(push_error(
            &r,
            format!(
                "the registry refused the manifest ({status}): {}",
                text.chars().take(300).collect::<String>()
            ),
        ));
    }
    reporter.narrate("push", &format!("{r} is {digest}"));
    outcome.reference = format!("{r}@{digest}");
    outcome.manifest_digest = digest;
    Ok(outcome)
}

#[allow(clippy::cast_precision_loss)]
fn outcome_speed(done: u64, started: Instant) -> f64 {
    let secs = started.elapsed().as_secs_f64();
    if secs > 0.0 { done as f64 / secs } else { 0.0 }
}

async fn blob_exists(
    repo: &Repository,
    r: &OciReference,
    digest: &str,
) -> Result<bool, ProvisionError> {
    let resp = repo.call(Method::HEAD, &format!("blobs/{digest}")).await?;
    match resp.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        s => Err(push_error(
            r,
            format!("the registry answered {s} for blob {digest}"),
        )),
    }
}

/// A blob small enough to send in one `POST` and `PUT` (the config).
async fn put_small_blob(
    repo: &Repository,
    r: &OciReference,
    digest: &str,
    bytes: Vec<u8>,
) -> Result<(), ProvisionError> {
    let location = start_session(repo, r).await?;
    let mut url = absolute(repo, &location).map_err(|e| push_error(r, e))?;
    url.query_pairs_mut().append_pair("digest", digest);
    let resp = repo
        .send(|c| {
            c.put(url.clone())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone())
        })
        .await?;
    if !resp.status().is_success() {
        return Err(push_error(
            r,
            format!("the registry refused blob {digest} ({})", resp.status()),
        ));
    }
    Ok(())
}

async fn start_session(repo: &Repository, r: &OciReference) -> Result<String, ProvisionError> {
    let url = repo.url("blobs/uploads/");
    let resp = repo
        .send(|c| c.post(&url).header(header::CONTENT_LENGTH, "0"))
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(push_error(
            r,
            format!("the registry did not open an upload ({})", resp.status()),
        ));
    }
    location_of(&resp)
        .ok_or_else(|| push_error(r, "the registry opened an upload with no Location".into()))
}

fn location_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The end of the bytes a session holds, from its `Range: 0-N` (N+1), if any.
fn range_end(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(header::RANGE)?.to_str().ok()?;
    let (_, end) = v.trim().trim_start_matches("bytes=").split_once('-')?;
    end.parse::<u64>().ok().map(|e| e + 1)
}

/// Where a session saved for `digest` stands on the registry now, if it is still
/// open there.
async fn resume(repo: &Repository, saved: &Path) -> Option<Session> {
    let s: Session = serde_json::from_slice(&fs_err::read(saved).ok()?).ok()?;
    let url = absolute(repo, &s.location).ok()?;
    let resp = repo.send(|c| c.get(url.clone())).await.ok()?;
    if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
        return None;
    }
    let offset = range_end(&resp).unwrap_or(0);
    Some(Session {
        location: location_of(&resp).unwrap_or(s.location),
        offset,
    })
}

/// Sends one blob in chunks, from where a saved session stopped; the bytes sent.
async fn upload(
    repo: &Repository,
    r: &OciReference,
    b: &Blob,
    state_dir: &Path,
    cancel: &CancellationToken,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, ProvisionError> {
    let saved = state_dir.join(format!(
        "{}.upload.json",
        b.digest.trim_start_matches("sha256:")
    ));
    let mut session = match resume(repo, &saved).await {
        Some(s) if s.offset <= b.size => s,
        _ => Session {
            location: start_session(repo, r).await?,
            offset: 0,
        },
    };
    let resumed_at = session.offset;
    // read with tokio's file, which does its blocking reads off the async threads
    let mut file = tokio::fs::File::open(&b.path)
        .await
        .map_err(|e| ProvisionError::io(b.path.display().to_string(), e))?;
    let mut buf = vec![0u8; CHUNK];
    while session.offset < b.size {
        if cancel.is_cancelled() {
            return Err(ProvisionError::Cancelled);
        }
        let len = usize::try_from((b.size - session.offset).min(CHUNK as u64)).unwrap_or(CHUNK);
        {
            use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
            file.seek(std::io::SeekFrom::Start(session.offset))
                .await
                .map_err(|e| ProvisionError::io(b.path.display().to_string(), e))?;
            file.read_exact(&mut buf[..len])
                .await
                .map_err(|e| ProvisionError::io(b.path.display().to_string(), e))?;
        }
        let chunk = bytes::Bytes::copy_from_slice(&buf[..len]);
        let url = absolute(repo, &session.location).map_err(|e| push_error(r, e))?;
        let range = format!("{}-{}", session.offset, session.offset + len as u64 - 1);
        let resp = repo
            .send(|c| {
                c.patch(url.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_RANGE, range.clone())
                    .header(header::CONTENT_LENGTH, len)
                    .body(chunk.clone())
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let status = resp.status();
            let _ = fs_err::remove_file(&saved);
            return Err(push_error(
                r,
                format!("the registry refused a chunk of {} ({status})", b.title),
            ));
        }
        session.location = location_of(&resp).unwrap_or(session.location);
        session.offset = range_end(&resp).unwrap_or(session.offset + len as u64);
        let _ = serde_json::to_vec(&session).map(|j| fs_err::write(&saved, j));
        progress(session.offset);
    }
    let mut url = absolute(repo, &session.location).map_err(|e| push_error(r, e))?;
    url.query_pairs_mut().append_pair("digest", &b.digest);
    let resp = repo
        .send(|c| c.put(url.clone()).header(header::CONTENT_LENGTH, "0"))
        .await?;
    let _ = fs_err::remove_file(&saved);
    if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(push_error(
            r,
            format!(
                "the registry refused {} ({status}): {}",
                b.title,
                text.chars().take(300).collect::<String>()
            ),
        ));
    }
    Ok(b.size - resumed_at)
}
