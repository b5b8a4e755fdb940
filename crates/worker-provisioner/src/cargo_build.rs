//! Building our own worker, `llm-worker-rbee`, from this workspace with cargo
//! (`local:cpu`, `local:cuda`, `local:metal`), with the worker type's cargo features;
//! narrated crate by crate and cancellable.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use artifact_catalog::ArtifactStatus;
use async_trait::async_trait;
use provisioning::{
    ProvisionContext, ProvisionError, ProvisionRequest, Resolved, VendorInfo, VendorSource,
};
use semver::Version;
use tokio::io::AsyncBufReadExt;
use worker_catalog::{Platform, WorkerBinary, WorkerType};

use crate::install::install;
use crate::{CARGO_BINARY, build_progress};

/// The cargo features a worker type is built with; `None` for a backend our worker
/// has no build for.
pub fn cargo_features(worker_type: WorkerType) -> Option<&'static [&'static str]> {
    match worker_type {
        WorkerType::CpuLlm => Some(&[]),
        WorkerType::CudaLlm => Some(&["cuda"]),
        WorkerType::MetalLlm => Some(&["metal"]),
        WorkerType::VulkanLlm | WorkerType::RocmLlm => None,
    }
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

/// The local-build vendor.
pub(crate) const LOCAL_BUILD: VendorInfo = VendorInfo {
    name: "local-build",
    forms: "local:cpu, local:cuda, local:metal",
    prefixes: &["local:"],
};

#[async_trait]
impl VendorSource<WorkerBinary> for LocalBuildVendor {
    fn info(&self) -> &'static VendorInfo {
        &LOCAL_BUILD
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<WorkerBinary>, ProvisionError> {
        let worker_type = parse_local(&request.reference)?;
        if cargo_features(worker_type).is_none() {
            return Err(ProvisionError::Invalid(format!(
                "llm-worker-rbee has no {worker_type} build; llama.cpp has: llama.cpp:{worker_type}@/path/to/llama.cpp"
            )));
        }
        if !request.build_args.is_empty() {
            return Err(ProvisionError::InvalidReference {
                reference: request.reference.clone(),
                reason: "the cargo build takes no build arguments".into(),
            });
        }
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
        Ok(LOCAL_BUILD.resolved(plan.id.clone(), plan))
    }

    async fn fetch(
        &self,
        resolved: Resolved<WorkerBinary>,
        ctx: &ProvisionContext,
    ) -> Result<WorkerBinary, ProvisionError> {
        let plan = resolved.plan;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let features = cargo_features(plan.worker_type).unwrap_or_default();
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
            .map_err(|e| ProvisionError::io("cannot run cargo (is it installed?)", e))?;
        let mut tail: Vec<String> = Vec::new();
        let mut counter = build_progress::BuildCounter::default();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ProvisionError::io(
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
            s = child.wait() => s.map_err(|e| ProvisionError::io("waiting for cargo", e))?,
            () = ctx.cancel.cancelled() => {
                let _ = child.kill().await;
                return Err(ProvisionError::Cancelled);
            }
        };
        if !status.success() {
            return Err(ProvisionError::failed(
                "build_failed",
                format!("cargo build failed ({status}):\n{}", tail.join("\n")),
            ));
        }
        let built = self.built_path();
        let dir = crate::install::folder_of(&self.workers_dir, &plan.id)?;
        crate::install::finish(ctx, move || install(&built, plan, &dir)).await
    }
}
