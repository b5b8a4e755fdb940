//! Release archives, downloaded through the download engine with a mandatory sha256:
//! - ours, `llm-worker-rbee-<cpu|cuda|metal>-v<version>-<platform>.tar.gz`, of which
//!   only the executable is unpacked;
//! - llama.cpp's, `llama-b<build>-bin-<os>[-<backend>]-<arch>.<zip|tar.gz>`, of which
//!   only `llama-server` and the shared libraries beside it are unpacked.
//!
//! An archive for another platform is refused before the download; one whose
//! executable does not run here (`--version` fails) installs nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use async_trait::async_trait;
use provisioning::{
    ProvisionContext, ProvisionError, ProvisionReporter, ProvisionRequest, Resolved, VendorInfo,
    VendorSource,
};
use semver::Version;
use worker_catalog::{Engine, Platform, WorkerBinary, WorkerType};

use crate::CARGO_BINARY;
use crate::archive::{self, Entry, Format};
use crate::install::Staging;

/// Downloads and unpacks release archives of either engine.
#[derive(Debug, Clone)]
pub struct ReleaseVendor {
    /// The download engine.
    pub downloader: download::Downloader,
    /// `home/workers`.
    pub workers_dir: PathBuf,
    /// `home/downloads`: the archive and its resume state while it downloads.
    pub downloads_dir: PathBuf,
}

/// What a release archive's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveName {
    /// Which engine's release it is.
    pub engine: Engine,
    /// Its backend.
    pub worker_type: WorkerType,
    /// Its version (llama.cpp: the build number as the major version).
    pub version: Version,
    /// Its operating system.
    pub platform: Platform,
    /// Its CPU architecture, as `std::env::consts::ARCH` writes it, when the name says.
    pub arch: Option<&'static str>,
    /// `.tar.gz` or `.zip`.
    pub format: Format,
}

/// What a release archive's name says: `llm-worker-rbee-cpu-v0.1.0-linux.tar.gz`.
pub fn parse_archive_name(name: &str) -> Option<(WorkerType, Version, Platform)> {
    let (Format::TarGz, stem) = Format::of(name)? else {
        return None;
    };
    [
        WorkerType::CpuLlm,
        WorkerType::CudaLlm,
        WorkerType::MetalLlm,
    ]
    .into_iter()
    .find_map(|t| {
        let rest = stem.strip_prefix(t.binary_name())?.strip_prefix("-v")?;
        let (version, platform) = rest.rsplit_once('-')?;
        Some((t, Version::parse(version).ok()?, platform.parse().ok()?))
    })
}

/// What a llama.cpp release's name says: `llama-b6123-bin-ubuntu-x64.zip`,
/// `llama-b6123-bin-ubuntu-vulkan-x64.tar.gz`, `llama-b6123-bin-macos-arm64.zip`,
/// `llama-b6123-bin-win-cuda-12.4-x64.zip`. `None` when it is not named like one;
/// an error for one whose backend the hive does not run.
pub fn parse_llama_archive_name(name: &str) -> Option<Result<ArchiveName, String>> {
    let (format, stem) = Format::of(name)?;
    let rest = stem.strip_prefix("llama-b")?;
    let (build, rest) = rest.split_once("-bin-")?;
    let build: u64 = build.parse().ok()?;
    let parts: Vec<&str> = rest.split('-').collect();
    let (os, arch) = (parts.first()?, parts.last()?);
    let platform = match *os {
        "ubuntu" | "linux" => Platform::Linux,
        "macos" => Platform::Macos,
        "win" | "windows" => Platform::Windows,
        _ => return None,
    };
    let arch = match *arch {
        "x64" | "x86_64" | "amd64" => "x86_64",
        "arm64" | "aarch64" => "aarch64",
        other => {
            return Some(Err(format!(
                "the {other} architecture is not one this hive runs"
            )));
        }
    };
    let middle = &parts[1..parts.len() - 1];
    let has = |word: &str| middle.iter().any(|p| p.eq_ignore_ascii_case(word));
    let worker_type = if has("cuda") {
        WorkerType::CudaLlm
    } else if has("vulkan") {
        WorkerType::VulkanLlm
    } else if has("hip") || has("rocm") {
        WorkerType::RocmLlm
    } else if middle.is_empty() || has("cpu") {
        if platform == Platform::Macos {
            WorkerType::MetalLlm
        } else {
            WorkerType::CpuLlm
        }
    } else {
        return Some(Err(format!(
            "a {} build: the hive runs llama.cpp's cpu, cuda, vulkan, rocm and metal builds",
            middle.join("-")
        )));
    };
    Some(Ok(ArchiveName {
        engine: Engine::LlamaCpp,
        worker_type,
        version: Version::new(build, 0, 0),
        platform,
        arch: Some(arch),
        format,
    }))
}

fn name_of(name: &str) -> Result<ArchiveName, String> {
    if let Some(parsed) = parse_llama_archive_name(name) {
        return parsed;
    }
    parse_archive_name(name)
        .map(|(worker_type, version, platform)| ArchiveName {
            engine: Engine::Rbee,
            worker_type,
            version,
            platform,
            arch: None,
            format: Format::TarGz,
        })
        .ok_or_else(|| {
            format!(
                "the archive's name {name:?} is neither llama.cpp's (llama-b<build>-bin-<os>[-<backend>]-<arch>.zip or .tar.gz) nor ours (llm-worker-rbee-<backend>-v<version>-<platform>.tar.gz)"
            )
        })
}

/// Download progress, handed to the provisioning's reporter.
pub(crate) struct Progress(pub(crate) Arc<dyn ProvisionReporter>);

impl download::Reporter for Progress {
    fn progress(&self, p: &download::Progress) {
        self.0
            .progress(p.bytes_done, p.bytes_total, p.bytes_per_sec, p.eta_secs);
    }

    fn message(&self, message: &str) {
        self.0.narrate("download", message);
    }
}

/// Unpacks our archive: the one regular file named like the binary
/// (`llm-worker-rbee-cpu` or `llm-worker-rbee`), in any folder of the archive.
fn unpack_rbee(
    archive: &Path,
    binary: &WorkerBinary,
    staging: &mut Staging,
) -> Result<(), ProvisionError> {
    let ext = binary.platform.extension();
    let wanted = [binary.file_name(), format!("{CARGO_BINARY}{ext}")];
    let mut found = false;
    archive::for_each(archive, Format::TarGz, &mut |name, entry| {
        if let (false, Entry::File(reader)) = (found, entry)
            && wanted.iter().any(|w| w == name)
        {
            staging.executable(&binary.file_name(), reader)?;
            found = true;
        }
        Ok(())
    })?;
    if found {
        Ok(())
    } else {
        Err(ProvisionError::Invalid(format!(
            "the archive holds no {} executable",
            wanted.join(" or ")
        )))
    }
}

/// Unpacks llama.cpp's archive: `llama-server` and the shared libraries (and links
/// between them), each by its file name; the other tools, scripts and docs stay out.
fn unpack_llama(
    archive: &Path,
    format: Format,
    binary: &WorkerBinary,
    staging: &mut Staging,
) -> Result<(), ProvisionError> {
    let exe = binary.file_name();
    let mut found = false;
    archive::for_each(archive, format, &mut |name, entry| {
        if name == exe && !found {
            if let Entry::File(reader) = entry {
                staging.executable(name, reader)?;
                found = true;
            }
        } else if archive::is_shared_library(name) && !staging.has(name) {
            match entry {
                Entry::File(reader) => staging.library(name, reader)?,
                Entry::Link(target)
                    if archive::is_shared_library(&target) && !target.contains(['/', '\\']) =>
                {
                    staging.link(name, &target)?;
                }
                Entry::Link(_) => {}
            }
        }
        Ok(())
    })?;
    if found {
        Ok(())
    } else {
        Err(ProvisionError::Invalid(format!(
            "the archive holds no {exe}: is it a llama.cpp release with the server?"
        )))
    }
}

/// The release vendor.
pub(crate) const RELEASE: VendorInfo = VendorInfo {
    name: "release",
    forms: "https://.../llama-b<build>-bin-<os>[-<backend>]-<arch>.zip (llama.cpp) or https://.../llm-worker-rbee-<backend>-v<version>-<platform>.tar.gz, with its sha256",
    prefixes: &["https://", "http://"],
};

#[async_trait]
impl VendorSource<WorkerBinary> for ReleaseVendor {
    fn info(&self) -> &'static VendorInfo {
        &RELEASE
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<WorkerBinary>, ProvisionError> {
        let invalid = |reason: String| ProvisionError::InvalidReference {
            reference: request.reference.clone(),
            reason,
        };
        if !request.build_args.is_empty() {
            return Err(invalid(
                "a release download takes no build arguments".into(),
            ));
        }
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
        let file = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_owned();
        let name = name_of(&file).map_err(invalid)?;
        let here = (Platform::current(), std::env::consts::ARCH);
        if name.platform != here.0 || name.arch.is_some_and(|a| a != here.1) {
            return Err(ProvisionError::Invalid(format!(
                "{file} is for {} {}; this machine is {} {}",
                name.platform,
                name.arch.unwrap_or(""),
                here.0,
                here.1
            )));
        }
        let mut plan = WorkerBinary::new(
            name.worker_type,
            name.platform,
            name.version,
            Path::new(""),
            0,
        );
        plan.engine = name.engine;
        plan.id = WorkerBinary::make_engine_id(
            plan.engine,
            plan.worker_type,
            &plan.version,
            plan.platform,
        );
        plan.status = ArtifactStatus::Downloading;
        plan.source = Some(url.to_string());
        // the archive's hash until it is unpacked; then the executable's
        plan.sha256 = Some(sha.to_ascii_lowercase());
        Ok(RELEASE.resolved(plan.id.clone(), plan))
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
        let file = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_owned();
        let format = name_of(&file).map_err(ProvisionError::Invalid)?.format;
        let archive = self
            .downloads_dir
            .join(format!("{}{}", plan.id, format.extension()));
        let request = download::DownloadRequest {
            url,
            dest: archive.clone(),
            work_dir: self.downloads_dir.clone(),
            sha256: plan.sha256.clone(),
            size: None,
            credential: None,
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
                e => ProvisionError::download(e.code(), e.to_string(), e),
            })?;
        let dir = crate::install::folder_of(&self.workers_dir, &plan.id)?;
        let (archive2, plan2) = (archive.clone(), plan.clone());
        let staged = tokio::task::spawn_blocking(move || {
            let mut staging = Staging::new(&dir)?;
            match plan2.engine {
                Engine::Rbee => unpack_rbee(&archive2, &plan2, &mut staging)?,
                Engine::LlamaCpp => unpack_llama(&archive2, format, &plan2, &mut staging)?,
            }
            Ok::<_, ProvisionError>(staging)
        })
        .await
        .map_err(|e| ProvisionError::io("unpacking", e));
        let _ = fs_err::remove_file(&archive);
        let staging = staged??;
        let exe = plan.file_name();
        if plan.engine == Engine::LlamaCpp {
            let staged_exe = staging.staged(&exe);
            let report = crate::existing::version_of(&staged_exe, Some(staging.folder())).await?;
            let said = report.version.major;
            if report.engine != Engine::LlamaCpp
                || (said > 0 && report.version.minor == 0 && said != plan.version.major)
            {
                return Err(ProvisionError::Invalid(format!(
                    "the archive is named for llama.cpp b{}, but its {exe} says it is {} {}",
                    plan.version.major,
                    report.engine,
                    report.engine.version_text(&report.version)
                )));
            }
        }
        crate::install::finish(ctx, move || staging.commit(&exe, plan)).await
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
            "llm-worker-rbee-vulkan-v1.0.0-linux.tar.gz",
        ] {
            assert_eq!(parse_archive_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn llama_cpp_archive_names() {
        let parsed = |n: &str| parse_llama_archive_name(n).and_then(Result::ok);
        let got = parsed("llama-b6123-bin-ubuntu-x64.zip");
        assert_eq!(
            got.as_ref()
                .map(|a| (a.worker_type, a.version.major, a.platform, a.arch, a.format)),
            Some((
                WorkerType::CpuLlm,
                6123,
                Platform::Linux,
                Some("x86_64"),
                Format::Zip
            ))
        );
        for (name, t, p) in [
            (
                "llama-b7000-bin-ubuntu-vulkan-x64.tar.gz",
                WorkerType::VulkanLlm,
                Platform::Linux,
            ),
            (
                "llama-b7000-bin-macos-arm64.zip",
                WorkerType::MetalLlm,
                Platform::Macos,
            ),
            (
                "llama-b7000-bin-win-cuda-12.4-x64.zip",
                WorkerType::CudaLlm,
                Platform::Windows,
            ),
            (
                "llama-b7000-bin-win-cpu-arm64.zip",
                WorkerType::CpuLlm,
                Platform::Windows,
            ),
            (
                "llama-b7000-bin-win-hip-radeon-x64.zip",
                WorkerType::RocmLlm,
                Platform::Windows,
            ),
        ] {
            let a = parsed(name);
            assert_eq!(
                a.as_ref().map(|a| (a.worker_type, a.platform)),
                Some((t, p)),
                "{name}"
            );
        }
        assert!(matches!(
            parse_llama_archive_name("llama-b7000-bin-win-sycl-x64.zip"),
            Some(Err(e)) if e.contains("sycl")
        ));
        assert!(matches!(
            parse_llama_archive_name("llama-b7000-bin-ubuntu-s390x.tar.gz"),
            Some(Err(e)) if e.contains("s390x")
        ));
        for not_llama in [
            "llama-b7000-ubuntu-x64.zip",
            "llama-bX-bin-ubuntu-x64.zip",
            "llama-b1-bin-beos-x64.zip",
            "llama-b1-bin-ubuntu-x64.rar",
        ] {
            assert!(parse_llama_archive_name(not_llama).is_none(), "{not_llama}");
        }
    }
}
