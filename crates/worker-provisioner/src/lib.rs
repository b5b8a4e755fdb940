//! Vendors for worker binaries.
//!
//! - [`LocalBuildVendor`] (`local:cpu`, `local:cuda`, `local:metal`) builds
//!   `llm-worker-rbee` from this workspace with cargo, with the worker type's cargo
//!   features, and installs the executable.
//! - [`ReleaseVendor`] (`https://.../llm-worker-rbee-cpu-v0.1.0-linux.tar.gz`) downloads
//!   a release archive through the download engine (a sha256 is mandatory), takes the
//!   executable out of it (nothing else is unpacked, so no entry can land outside its
//!   folder), and installs it.
//!
//! Either way the binary ends up as `workers/<id>/<binary>` with its executable bit
//! set, written through a temporary file and renamed, and the hive records it in the
//! worker catalog.
#![deny(missing_docs)]

mod build_progress;
mod existing;

pub use existing::{ExistingBinaryVendor, parse_devices, parse_version};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use artifact_catalog::provision::{
    ArtifactProvisioner, ProvisionContext, ProvisionError, ProvisionReporter, ProvisionRequest,
    Resolved, VendorSource,
};
use async_trait::async_trait;
use semver::Version;
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;
use worker_catalog::{Platform, WorkerBinary, WorkerType};

/// The name cargo gives the worker's executable.
pub const CARGO_BINARY: &str = "llm-worker-rbee";

/// The cargo features a worker type is built with.
pub fn cargo_features(worker_type: WorkerType) -> &'static [&'static str] {
    match worker_type {
        WorkerType::CpuLlm => &[],
        WorkerType::CudaLlm => &["cuda"],
        WorkerType::MetalLlm => &["metal"],
    }
}

fn io_error(context: &str, e: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::Io(format!("{context}: {e}"))
}

/// Copies `from` into `dir/<file name>` through a temporary file, sets the executable
/// bit, and fills in the binary's path, size, sha256 and modification time.
pub fn install(
    from: &Path,
    binary: WorkerBinary,
    dir: &Path,
) -> Result<WorkerBinary, ProvisionError> {
    let mut src = fs_err::File::open(from).map_err(|e| io_error("reading the built worker", e))?;
    place(&mut src, binary, dir)
}

/// Writes the executable read from `src` as `dir/<file name>`, atomically.
fn place(
    src: &mut dyn Read,
    mut binary: WorkerBinary,
    dir: &Path,
) -> Result<WorkerBinary, ProvisionError> {
    fs_err::create_dir_all(dir).map_err(|e| io_error("creating the worker's folder", e))?;
    let dest = dir.join(binary.file_name());
    let tmp = dir.join(format!(".{}.installing", binary.file_name()));
    let (size, sha) = copy_hashing(src, &tmp)?;
    fs_err::rename(&tmp, &dest).map_err(|e| io_error("installing the worker", e))?;
    binary.modified = fs_err::metadata(&dest).and_then(|m| m.modified()).ok();
    binary.path = dest;
    binary.size = size;
    binary.sha256 = Some(sha);
    binary.status = ArtifactStatus::Available;
    Ok(binary)
}

/// Writes `src` to `tmp` (mode 755, fsynced), returning its size and sha256.
fn copy_hashing(src: &mut dyn Read, tmp: &Path) -> Result<(u64, String), ProvisionError> {
    let result = (|| -> std::io::Result<(u64, String)> {
        let mut out = fs_err::File::create(tmp)?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            size += n as u64;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            out.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        }
        out.sync_all()?;
        Ok((size, hex::encode(sha.finalize())))
    })();
    result.map_err(|e| {
        let _ = fs_err::remove_file(tmp);
        io_error("writing the worker binary", e)
    })
}

/// Builds the worker from a source tree with cargo.
#[derive(Debug, Clone)]
pub struct LocalBuildVendor {
    /// The workspace holding `crates/llm-worker`.
    pub source_dir: PathBuf,
    /// The cargo profile: `release` for users; tests use `dev`.
    pub profile: String,
    /// Where cargo builds. Default: `worker-build` in the source tree's target folder
    /// (`$CARGO_TARGET_DIR` or `source_dir/target`), apart from the workspace's own
    /// builds: `-p llm-worker` resolves dependency features differently from a
    /// workspace build, and two builds sharing one folder would keep replacing each
    /// other's binaries.
    pub target_dir: Option<PathBuf>,
    /// `home/workers`.
    pub workers_dir: PathBuf,
}

impl LocalBuildVendor {
    /// The workspace's version: `[workspace.package] version` of its Cargo.toml.
    fn version(&self) -> Result<Version, ProvisionError> {
        let manifest = self.source_dir.join("Cargo.toml");
        let text = fs_err::read_to_string(&manifest).map_err(|e| {
            ProvisionError::NotFound(format!("no workspace to build the worker from: {e}"))
        })?;
        let mut in_package = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_package = line == "[workspace.package]";
            } else if in_package
                && let Some(v) = line.strip_prefix("version")
                && let Some(v) = v.trim_start().strip_prefix('=')
            {
                let v = v.trim().trim_matches('"');
                return Version::parse(v).map_err(|e| {
                    ProvisionError::Invalid(format!(
                        "{}: bad version {v:?}: {e}",
                        manifest.display()
                    ))
                });
            }
        }
        Err(ProvisionError::Invalid(format!(
            "{} has no [workspace.package] version",
            manifest.display()
        )))
    }

    fn target_dir(&self) -> PathBuf {
        self.target_dir.clone().unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| self.source_dir.join("target"), PathBuf::from)
                .join("worker-build")
        })
    }

    fn built_path(&self) -> PathBuf {
        let target = self.target_dir();
        let dir = if self.profile == "dev" || self.profile == "test" {
            "debug"
        } else {
            &self.profile
        };
        target
            .join(dir)
            .join(format!("{CARGO_BINARY}{}", Platform::current().extension()))
    }
}

/// A hive started by cargo (`cargo run`, `cargo test`) inherits what cargo sets for
/// the process it runs (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, `LD_LIBRARY_PATH`, ...).
/// Passed on to the nested cargo, those change the build's fingerprints, and it
/// rebuilds what a build from a shell would reuse; they are removed.
fn scrub_cargo_env(cmd: &mut tokio::process::Command) {
    if std::env::var_os("CARGO_MANIFEST_DIR").is_none() {
        return;
    }
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let injected = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || key.starts_with("NEXTEST")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
                    | "LD_LIBRARY_PATH"
                    | "DYLD_FALLBACK_LIBRARY_PATH"
            );
        if injected {
            cmd.env_remove(key);
        }
    }
}

fn parse_local(reference: &str) -> Result<WorkerType, ProvisionError> {
    let kind = reference.trim().strip_prefix("local:").unwrap_or("");
    kind.parse()
        .map_err(|reason| ProvisionError::InvalidReference {
            reference: reference.to_owned(),
            reason,
        })
}

#[async_trait]
impl VendorSource<WorkerBinary> for LocalBuildVendor {
    fn name(&self) -> &'static str {
        "local-build"
    }

    fn forms(&self) -> &'static str {
        "local:cpu, local:cuda, local:metal"
    }

    fn supports(&self, reference: &str) -> bool {
        reference.trim().starts_with("local:")
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<WorkerBinary>, ProvisionError> {
        let worker_type = parse_local(&request.reference)?;
        if worker_type == WorkerType::MetalLlm && Platform::current() != Platform::Macos {
            return Err(ProvisionError::Invalid(
                "the metal worker builds on macOS only".into(),
            ));
        }
        if !self
            .source_dir
            .join("crates/llm-worker/Cargo.toml")
            .is_file()
        {
            return Err(ProvisionError::NotFound(format!(
                "{} holds no crates/llm-worker to build: set the hive's --worker-source-dir to a clone of rbee-hive",
                self.source_dir.display()
            )));
        }
        let version = self.version()?;
        let mut plan =
            WorkerBinary::new(worker_type, Platform::current(), version, Path::new(""), 0);
        plan.status = ArtifactStatus::Downloading;
        plan.source = Some(format!("local-build:{}", self.source_dir.display()));
        Ok(Resolved {
            id: plan.id.clone(),
            plan,
        })
    }

    async fn fetch(
        &self,
        resolved: Resolved<WorkerBinary>,
        ctx: &ProvisionContext,
    ) -> Result<WorkerBinary, ProvisionError> {
        let plan = resolved.plan;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let features = cargo_features(plan.worker_type);
        let total = {
            let (cargo, dir) = (cargo.clone(), self.source_dir.clone());
            tokio::task::spawn_blocking(move || {
                build_progress::planned_crates(&cargo, &dir, "llm-worker", features)
            })
            .await
            .ok()
            .flatten()
        };
        let mut cmd = tokio::process::Command::new(&cargo);
        cmd.current_dir(&self.source_dir)
            .args(["build", "--locked", "--profile", &self.profile])
            .args(["-p", "llm-worker", "--bin", CARGO_BINARY])
            .arg("--message-format=json-render-diagnostics")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !features.is_empty() {
            cmd.args(["--features", &features.join(",")]);
        }
        cmd.arg("--target-dir").arg(self.target_dir());
        scrub_cargo_env(&mut cmd);
        ctx.reporter.narrate(
            "build",
            &format!(
                "building {} with cargo ({} profile) in {}{}",
                plan.id,
                self.profile,
                self.source_dir.display(),
                total.map_or_else(String::new, |t| format!(": {t} crates"))
            ),
        );
        let mut child = cmd
            .spawn()
            .map_err(|e| io_error("cannot run cargo (is it installed?)", e))?;
        let mut tail: Vec<String> = Vec::new();
        let mut counter = build_progress::BuildCounter::default();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(io_error(
                "cargo's output",
                std::io::Error::other("not piped"),
            ));
        };
        let mut messages = tokio::io::BufReader::new(stdout).lines();
        let mut text = tokio::io::BufReader::new(stderr).lines();
        let (mut messages_open, mut text_open) = (true, true);
        ctx.reporter.step(0, total, "crates", "");
        while messages_open || text_open {
            tokio::select! {
                line = messages.next_line(), if messages_open => match line {
                    Ok(Some(line)) => {
                        if let Some((done, name)) = counter.line(&line) {
                            let total = total.map(|t| t.max(done));
                            ctx.reporter.step(done, total, "crates", &name);
                        }
                    }
                    _ => messages_open = false,
                },
                line = text.next_line(), if text_open => match line {
                    Ok(Some(line)) => {
                        let line = line.trim().to_owned();
                        if line.starts_with("Finished") {
                            ctx.reporter.narrate("build", &line);
                        }
                        tail.push(line);
                        if tail.len() > 20 {
                            tail.remove(0);
                        }
                    }
                    _ => text_open = false,
                },
                () = ctx.cancel.cancelled() => {
                    let _ = child.kill().await;
                    return Err(ProvisionError::Cancelled);
                }
            }
        }
        let status = tokio::select! {
            s = child.wait() => s.map_err(|e| io_error("waiting for cargo", e))?,
            () = ctx.cancel.cancelled() => {
                let _ = child.kill().await;
                return Err(ProvisionError::Cancelled);
            }
        };
        if !status.success() {
            return Err(ProvisionError::Download {
                code: "build_failed",
                message: format!("cargo build failed ({status}):\n{}", tail.join("\n")),
            });
        }
        let built = self.built_path();
        let dir = self
            .workers_dir
            .join(artifact_catalog::encode_dir_name(&plan.id).map_err(|e| io_error("id", e))?);
        let binary = tokio::task::spawn_blocking(move || install(&built, plan, &dir))
            .await
            .map_err(|e| io_error("installing", e))??;
        ctx.reporter.narrate(
            "install",
            &format!("installed {} at {}", binary.id, binary.path.display()),
        );
        Ok(binary)
    }
}

/// Downloads release archives named `{binary}-v{version}-{platform}.tar.gz`.
#[derive(Debug, Clone)]
pub struct ReleaseVendor {
    /// The download engine.
    pub downloader: download::Downloader,
    /// `home/workers`.
    pub workers_dir: PathBuf,
    /// `home/downloads`: the archive and its resume state while it downloads.
    pub downloads_dir: PathBuf,
}

/// What a release archive's name says: `llm-worker-rbee-cpu-v0.1.0-linux.tar.gz`.
pub fn parse_archive_name(name: &str) -> Option<(WorkerType, Version, Platform)> {
    let stem = name
        .strip_suffix(".tar.gz")
        .or_else(|| name.strip_suffix(".tgz"))?;
    WorkerType::ALL.into_iter().find_map(|t| {
        let rest = stem.strip_prefix(t.binary_name())?.strip_prefix("-v")?;
        let (version, platform) = rest.rsplit_once('-')?;
        Some((t, Version::parse(version).ok()?, platform.parse().ok()?))
    })
}

struct Progress(Arc<dyn ProvisionReporter>);

impl download::Reporter for Progress {
    fn progress(&self, p: &download::Progress) {
        self.0
            .progress(p.bytes_done, p.bytes_total, p.bytes_per_sec, p.eta_secs);
    }

    fn message(&self, message: &str) {
        self.0.narrate("download", message);
    }
}

/// Takes the worker executable out of a `.tar.gz`: the one regular file named like
/// the binary (`llm-worker-rbee-cpu` or `llm-worker-rbee`), in any folder of the archive.
fn unpack_binary(
    archive: &Path,
    binary: &WorkerBinary,
    dir: &Path,
) -> Result<WorkerBinary, ProvisionError> {
    let file = fs_err::File::open(archive).map_err(|e| io_error("opening the archive", e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let wanted = [
        binary.file_name(),
        format!("{CARGO_BINARY}{}", binary.platform.extension()),
    ];
    let bad = |e: std::io::Error| ProvisionError::Invalid(format!("not a .tar.gz archive: {e}"));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !wanted.iter().any(|w| w == name) {
            continue;
        }
        return place(&mut entry, binary.clone(), dir);
    }
    Err(ProvisionError::Invalid(format!(
        "the archive holds no {} executable",
        wanted.join(" or ")
    )))
}

#[async_trait]
impl VendorSource<WorkerBinary> for ReleaseVendor {
    fn name(&self) -> &'static str {
        "release"
    }

    fn forms(&self) -> &'static str {
        "https://.../llm-worker-rbee-<cpu|cuda|metal>-v<version>-<platform>.tar.gz with its sha256"
    }

    fn supports(&self, reference: &str) -> bool {
        let r = reference.trim();
        r.starts_with("https://") || r.starts_with("http://")
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<WorkerBinary>, ProvisionError> {
        let invalid = |reason: String| ProvisionError::InvalidReference {
            reference: request.reference.clone(),
            reason,
        };
        let url: url::Url = request
            .reference
            .trim()
            .parse()
            .map_err(|e| invalid(format!("not a URL: {e}")))?;
        let Some(sha) = request.sha256.as_deref() else {
            return Err(invalid(
                "a release download needs its sha256: worker binaries are never installed unchecked"
                    .into(),
            ));
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "sha256 must be 64 hex digits, got {sha:?}"
            )));
        }
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_owned();
        let (worker_type, version, platform) = parse_archive_name(&name).ok_or_else(|| {
            invalid(format!(
                "the archive's name {name:?} must be <binary>-v<version>-<platform>.tar.gz, such as llm-worker-rbee-cpu-v0.1.0-linux.tar.gz"
            ))
        })?;
        if platform != Platform::current() {
            return Err(ProvisionError::Invalid(format!(
                "{name} is for {platform}; this machine is {}",
                Platform::current()
            )));
        }
        let mut plan = WorkerBinary::new(worker_type, platform, version, Path::new(""), 0);
        plan.status = ArtifactStatus::Downloading;
        plan.source = Some(url.to_string());
        plan.sha256 = Some(sha.to_ascii_lowercase());
        Ok(Resolved {
            id: plan.id.clone(),
            plan,
        })
    }

    async fn fetch(
        &self,
        resolved: Resolved<WorkerBinary>,
        ctx: &ProvisionContext,
    ) -> Result<WorkerBinary, ProvisionError> {
        let plan = resolved.plan;
        let url: url::Url = plan
            .source
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| ProvisionError::Invalid(format!("bad URL: {e}")))?;
        let archive = self.downloads_dir.join(format!("{}.tar.gz", plan.id));
        let request = download::DownloadRequest {
            url,
            dest: archive.clone(),
            work_dir: self.downloads_dir.clone(),
            sha256: plan.sha256.clone(),
            size: None,
            bearer_token: None,
        };
        self.downloader
            .download(
                request,
                Arc::new(Progress(Arc::clone(&ctx.reporter))),
                ctx.cancel.clone(),
            )
            .await
            .map_err(|e| match e {
                download::DownloadError::Cancelled => ProvisionError::Cancelled,
                download::DownloadError::NotFound { url } => {
                    ProvisionError::NotFound(format!("{url} does not exist (404)"))
                }
                e => ProvisionError::Download {
                    code: e.code(),
                    message: e.to_string(),
                },
            })?;
        let dir = self
            .workers_dir
            .join(artifact_catalog::encode_dir_name(&plan.id).map_err(|e| io_error("id", e))?);
        let archive2 = archive.clone();
        let result = tokio::task::spawn_blocking(move || unpack_binary(&archive2, &plan, &dir))
            .await
            .map_err(|e| io_error("unpacking", e))?;
        let _ = fs_err::remove_file(&archive);
        let mut binary = result?;
        // The catalog keeps the executable's own hash; the archive's was checked.
        ctx.reporter.narrate(
            "install",
            &format!("installed {} at {}", binary.id, binary.path.display()),
        );
        binary.status = ArtifactStatus::Available;
        Ok(binary)
    }
}

/// Every vendor: a reference goes to the one that supports it; a resolved binary
/// goes back to the one that resolved it (its `source` says which).
#[derive(Debug, Clone)]
pub struct WorkerProvisioner {
    local: LocalBuildVendor,
    release: ReleaseVendor,
    existing: ExistingBinaryVendor,
}

/// Every vendor, as one provisioner.
pub fn worker_provisioner(local: LocalBuildVendor, release: ReleaseVendor) -> WorkerProvisioner {
    WorkerProvisioner {
        local,
        release,
        existing: ExistingBinaryVendor,
    }
}

impl WorkerProvisioner {
    fn by_reference(
        &self,
        reference: &str,
    ) -> Result<&dyn VendorSource<WorkerBinary>, ProvisionError> {
        if self.local.supports(reference) {
            Ok(&self.local)
        } else if self.release.supports(reference) {
            Ok(&self.release)
        } else if self.existing.supports(reference) {
            Ok(&self.existing)
        } else {
            Err(ProvisionError::Unsupported {
                reference: reference.to_owned(),
                known: format!(
                    "{}, {}, or {}",
                    self.local.forms(),
                    self.release.forms(),
                    self.existing.forms()
                ),
            })
        }
    }
}

#[async_trait]
impl ArtifactProvisioner<WorkerBinary> for WorkerProvisioner {
    fn supports(&self, reference: &str) -> bool {
        self.by_reference(reference).is_ok()
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<WorkerBinary>, ProvisionError> {
        self.by_reference(&request.reference)?
            .resolve(request)
            .await
    }

    async fn fetch(
        &self,
        resolved: Resolved<WorkerBinary>,
        ctx: &ProvisionContext,
    ) -> Result<WorkerBinary, ProvisionError> {
        let source = resolved.plan.source.as_deref().unwrap_or("");
        if source.starts_with("local-build:") {
            self.local.fetch(resolved, ctx).await
        } else if source.starts_with("file:") {
            self.existing.fetch(resolved, ctx).await
        } else {
            self.release.fetch(resolved, ctx).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        assert_eq!(
            parse_archive_name("llm-worker-rbee-cuda-v0.10.2-linux.tar.gz"),
            Some((WorkerType::CudaLlm, Version::new(0, 10, 2), Platform::Linux))
        );
        assert_eq!(
            parse_archive_name("llm-worker-rbee-cpu-v1.0.0-rc.1-macos.tgz"),
            Some((
                WorkerType::CpuLlm,
                Version::parse("1.0.0-rc.1").unwrap_or_else(|_| Version::new(0, 0, 0)),
                Platform::Macos
            ))
        );
        for bad in [
            "llm-worker-rbee-cpu-v1-linux.tar.gz",
            "llm-worker-rbee-tpu-v1.0.0-linux.tar.gz",
            "llm-worker-rbee-cpu-v1.0.0-beos.tar.gz",
            "llm-worker-rbee-cpu-v1.0.0-linux.zip",
        ] {
            assert_eq!(parse_archive_name(bad), None, "{bad}");
        }
    }
}
