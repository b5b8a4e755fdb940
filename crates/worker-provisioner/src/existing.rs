//! Registering a worker binary that is already on the machine (`file:/usr/bin/llama-server`,
//! `file:/src/rbee/target/release/llm-worker-rbee`): it is asked for its version, hashed,
//! and recorded where it lies. The hive never moves or deletes it; removing it only
//! forgets it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use artifact_catalog::ArtifactStatus;
use async_trait::async_trait;
use provisioning::{
    ProvisionContext, ProvisionError, ProvisionRequest, Resolved, VendorInfo, VendorSource,
};
use semver::Version;
use worker_catalog::{Engine, Platform, WorkerBinary, WorkerType};

/// How long `--version` (or `--help`) may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// Registers executables already on the machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExistingBinaryVendor;

/// What a binary says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfReport {
    /// Which engine it is.
    pub engine: Engine,
    /// Its version (llama.cpp: the build number as the major version).
    pub version: Version,
}

/// Reads `--version` output (stdout and stderr together): `llm-worker-rbee 0.1.0`, or
/// llama.cpp's `version: 6123 (1a2b3c4)`.
pub fn parse_version(output: &str) -> Option<SelfReport> {
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("llm-worker-rbee ") {
            let version = Version::parse(rest.split_whitespace().next()?).ok()?;
            return Some(SelfReport {
                engine: Engine::Rbee,
                version,
            });
        }
        if let Some(rest) = line.strip_prefix("version: ") {
            return llama_version(rest).map(|version| SelfReport {
                engine: Engine::LlamaCpp,
                version,
            });
        }
    }
    None
}

/// llama.cpp's version line after `version: `: a build number and commit (`6123
/// (1a2b3c4)`), or a version with them (`0.5.0-dev (build 6123, commit 1a2b3c4)`). The
/// build number is the version where there is one (as its major); a build made from a
/// tree without git history says build 0, and keeps its own version.
fn llama_version(rest: &str) -> Option<Version> {
    let first = rest.split_whitespace().next()?;
    if let Ok(build) = first.parse::<u64>() {
        return Some(Version::new(build, 0, 0));
    }
    let version = Version::parse(first).ok()?;
    let build = rest
        .split_once("build ")
        .and_then(|(_, b)| b.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|b| b.parse::<u64>().ok())
        .filter(|&b| b > 0);
    Some(build.map_or(version, |b| Version::new(b, 0, 0)))
}

/// The backend of a llama.cpp build from `--list-devices`: a CUDA, ROCm, Vulkan or
/// Metal device makes it that backend; none, the CPU.
pub fn parse_devices(output: &str) -> WorkerType {
    let has = |prefix: &str| {
        output
            .lines()
            .map(str::trim)
            .any(|l| l.starts_with(prefix) && l.contains(':'))
    };
    if has("CUDA") {
        WorkerType::CudaLlm
    } else if has("ROCm") || has("HIP") {
        WorkerType::RocmLlm
    } else if has("Vulkan") {
        WorkerType::VulkanLlm
    } else if has("Metal") || has("MTL") {
        WorkerType::MetalLlm
    } else {
        WorkerType::CpuLlm
    }
}

/// Runs `path --version` and reads what it says; `libraries`, the folder its shared
/// libraries are in when they are not where the system looks.
pub(crate) async fn version_of(
    path: &Path,
    libraries: Option<&Path>,
) -> Result<SelfReport, ProvisionError> {
    let said = run(path, "--version", libraries).await?;
    parse_version(&said).ok_or_else(|| {
        ProvisionError::Invalid(format!(
            "{} --version does not name llm-worker-rbee or llama.cpp: {:?}",
            path.display(),
            said.trim().lines().next().unwrap_or("")
        ))
    })
}

/// Runs `path arg` (such as `--version` or `--help`), within 20 seconds, for its
/// output; a failure says the last lines it wrote.
pub async fn run(
    path: &Path,
    arg: &str,
    libraries: Option<&Path>,
) -> Result<String, ProvisionError> {
    let mut cmd = tokio::process::Command::new(path);
    cmd.arg(arg)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = libraries {
        cmd.env(worker_catalog::LIBRARY_PATH_VAR, dir);
    }
    let out = tokio::time::timeout(VERSION_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            ProvisionError::Invalid(format!(
                "{} {arg} did not answer within {}s",
                path.display(),
                VERSION_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| ProvisionError::Invalid(format!("cannot run {}: {e}", path.display())))?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        // the last lines say why: a missing library, an unknown option
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        return Err(ProvisionError::Invalid(format!(
            "{} {arg} failed ({}): {}",
            path.display(),
            out.status,
            lines[lines.len().saturating_sub(3)..].join(" / ")
        )));
    }
    Ok(text)
}

fn path_of(reference: &str) -> Result<PathBuf, ProvisionError> {
    let path = PathBuf::from(reference.trim().strip_prefix("file:").unwrap_or(reference));
    if !path.is_absolute() {
        return Err(ProvisionError::InvalidReference {
            reference: reference.to_owned(),
            reason: "the path must be absolute".into(),
        });
    }
    Ok(path)
}

/// The existing vendor.
pub(crate) const EXISTING: VendorInfo = VendorInfo {
    name: "existing",
    forms: "file:/path/to/llama-server or file:/path/to/llm-worker-rbee",
    prefixes: &["file:"],
};

#[async_trait]
impl VendorSource<WorkerBinary> for ExistingBinaryVendor {
    fn info(&self) -> &'static VendorInfo {
        &EXISTING
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<WorkerBinary>, ProvisionError> {
        let path = path_of(&request.reference)?;
        let meta = fs_err::metadata(&path)
            .map_err(|e| ProvisionError::NotFound(format!("{}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(ProvisionError::Invalid(format!(
                "{} is not a file",
                path.display()
            )));
        }
        if !request.build_args.is_empty() {
            return Err(ProvisionError::InvalidReference {
                reference: request.reference.clone(),
                reason: "registering a binary takes no build arguments".into(),
            });
        }
        let report = version_of(&path, None).await?;
        let worker_type = match report.engine {
            Engine::LlamaCpp => parse_devices(&run(&path, "--list-devices", None).await?),
            Engine::Rbee => WorkerType::CpuLlm,
        };
        let platform = Platform::current();
        let mut plan = WorkerBinary::new(worker_type, platform, report.version, &path, meta.len());
        plan.modified = meta.modified().ok();
        plan.engine = report.engine;
        plan.id = WorkerBinary::make_engine_id(report.engine, worker_type, &plan.version, platform);
        plan.status = ArtifactStatus::Downloading;
        plan.source = Some(format!("file:{}", path.display()));
        Ok(EXISTING.resolved(plan.id.clone(), plan))
    }

    async fn fetch(
        &self,
        resolved: Resolved<WorkerBinary>,
        ctx: &ProvisionContext,
    ) -> Result<WorkerBinary, ProvisionError> {
        let mut binary = resolved.plan;
        let path = binary.path.clone();
        let sha = tokio::task::spawn_blocking(move || artifact_catalog::sha256_file(&path))
            .await
            .map_err(|e| ProvisionError::io("", e))?
            .map_err(|e| ProvisionError::io(format!("hashing {}", binary.path.display()), e))?;
        ctx.reporter.narrate(
            "register",
            &format!("{}: sha256 {sha}", binary.path.display()),
        );
        binary.sha256 = Some(sha);
        binary.status = ArtifactStatus::Available;
        Ok(binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_both_engines() {
        assert_eq!(
            parse_version("llm-worker-rbee 0.1.0\n"),
            Some(SelfReport {
                engine: Engine::Rbee,
                version: Version::new(0, 1, 0),
            })
        );
        let llama = "load_backend: loaded CPU backend\nversion: 6123 (1a2b3c4d)\nbuilt with cc (Debian 12.2.0-14) 12.2.0 for x86_64-linux-gnu\n";
        assert_eq!(
            parse_version(llama).map(|r| (r.engine, r.version)),
            Some((Engine::LlamaCpp, Version::new(6123, 0, 0)))
        );
        let newer = "version: 0.5.0-dev (build 7012, commit 9f8e7d6)\n";
        assert_eq!(
            parse_version(newer).map(|r| r.version),
            Some(Version::new(7012, 0, 0))
        );
        let from_a_tarball = "version: 0.5.0-dev (build 0, commit unknown)\n";
        assert_eq!(
            parse_version(from_a_tarball).map(|r| r.version.to_string()),
            Some("0.5.0-dev".to_owned())
        );
        assert_eq!(parse_version("Python 3.11.7"), None);
        assert_eq!(parse_version("version: unknown"), None);
    }

    #[test]
    fn devices_give_the_backend() {
        assert_eq!(parse_devices("Available devices:\n"), WorkerType::CpuLlm);
        assert_eq!(
            parse_devices("Available devices:\n  CUDA0: NVIDIA H200 (143 GiB, 142 GiB free)\n"),
            WorkerType::CudaLlm
        );
        assert_eq!(
            parse_devices("Available devices:\n  Metal: Apple M2 (21845 MiB, 21845 MiB free)\n"),
            WorkerType::MetalLlm
        );
        assert_eq!(
            parse_devices(
                "Available devices:\n  Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31) (24560 MiB, 24560 MiB free)\n"
            ),
            WorkerType::VulkanLlm
        );
        assert_eq!(
            parse_devices(
                "Available devices:\n  ROCm0: AMD Radeon RX 7900 XTX (24560 MiB, 24484 MiB free)\n"
            ),
            WorkerType::RocmLlm
        );
    }
}
