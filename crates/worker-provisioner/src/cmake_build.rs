//! Building llama.cpp's `llama-server` from a source tree with cmake
//! (`llama.cpp:cpu@/path/to/llama.cpp`): configured for the backend in
//! `<tree>/build-rbee-<backend>` (kept, so a second build only compiles what
//! changed), built with `--target llama-server`, narrated by percent or step, and
//! cancellable: the whole build's process group is killed.
//!
//! The defaults are a static, native-CPU release build without curl, tests or
//! examples; the backend adds its own switch (`-DGGML_CUDA=ON`, ...), and the
//! request's build arguments come last, so they win (`-DGGML_NATIVE=OFF`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use artifact_catalog::ArtifactStatus;
use async_trait::async_trait;
use provisioning::{
    ProvisionContext, ProvisionError, ProvisionRequest, Resolved, VendorInfo, VendorSource,
};
use semver::Version;
use tokio::io::AsyncBufReadExt;
use worker_catalog::{Engine, Platform, WorkerBinary, WorkerType};

use crate::archive::is_shared_library;
use crate::install::Staging;

/// The `source` a binary built here records: `cmake-build:<tree>`.
pub(crate) const SOURCE_PREFIX: &str = "cmake-build:";

/// Lines of the build's output kept for a failure's message.
const TAIL: usize = 25;

/// Builds llama.cpp's server from a source tree.
#[derive(Debug, Clone)]
pub struct LlamaBuildVendor {
    /// `home/workers`.
    pub workers_dir: PathBuf,
}

/// What a reference asks for: the backend and the tree.
fn parse(request: &ProvisionRequest) -> Result<(WorkerType, PathBuf), ProvisionError> {
    let invalid = |reason: String| ProvisionError::InvalidReference {
        reference: request.reference.clone(),
        reason,
    };
    let rest = request
        .reference
        .trim()
        .strip_prefix("llama.cpp:")
        .unwrap_or_default();
    let Some((backend, tree)) = rest.split_once('@') else {
        return Err(invalid(
            "a llama.cpp build needs its source tree: llama.cpp:cpu@/path/to/llama.cpp".into(),
        ));
    };
    let worker_type: WorkerType = backend.parse().map_err(invalid)?;
    let tree = PathBuf::from(tree);
    if !tree.is_absolute() {
        return Err(invalid("the source tree's path must be absolute".into()));
    }
    for arg in &request.build_args {
        if !arg.starts_with("-D") || arg.len() < 3 || arg.contains(['\n', '\0']) {
            return Err(invalid(format!(
                "build arguments are cmake cache settings, -DNAME=VALUE; got {arg:?}"
            )));
        }
    }
    Ok((worker_type, tree))
}

/// The switch that turns a backend on.
fn backend_flag(worker_type: WorkerType) -> Option<&'static str> {
    match worker_type {
        WorkerType::CpuLlm => None,
        WorkerType::CudaLlm => Some("-DGGML_CUDA=ON"),
        WorkerType::MetalLlm => Some("-DGGML_METAL=ON"),
        WorkerType::VulkanLlm => Some("-DGGML_VULKAN=ON"),
        WorkerType::RocmLlm => Some("-DGGML_HIP=ON"),
    }
}

/// The configure step's arguments, in order: defaults, backend, the request's own.
pub fn configure_args(
    tree: &Path,
    build_dir: &Path,
    worker_type: WorkerType,
    extra: &[String],
) -> Vec<String> {
    let mut args = vec![
        "-S".to_owned(),
        tree.display().to_string(),
        "-B".to_owned(),
        build_dir.display().to_string(),
    ];
    args.extend(
        [
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=ON",
            "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ]
        .map(str::to_owned),
    );
    args.extend(backend_flag(worker_type).map(str::to_owned));
    args.extend(extra.iter().cloned());
    args
}

/// How far a build has come, from one line of its output: make's `[ 45%] ...` (out
/// of 100) or ninja's `[12/240] ...`.
pub fn progress_of(line: &str) -> Option<(u64, u64, &str)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (inside, what) = rest.split_once(']')?;
    let what = what.trim();
    if let Some(pct) = inside.trim().strip_suffix('%') {
        return Some((pct.trim().parse().ok()?, 100, what));
    }
    let (done, total) = inside.split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?, what))
}

/// Runs one cmake step, narrating its lines; the whole process group is killed when
/// the provisioning is cancelled. Returns the step's last lines on failure.
async fn run_step(
    args: &[String],
    step: &str,
    ctx: &ProvisionContext,
) -> Result<(), ProvisionError> {
    let mut cmd = tokio::process::Command::new("cmake");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        ProvisionError::Invalid(format!("cannot run cmake (is it installed?): {e}"))
    })?;
    let group = child.id();
    let kill = |group: Option<u32>| {
        #[cfg(unix)]
        if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        #[cfg(not(unix))]
        let _ = group;
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill(group);
        return Err(ProvisionError::io(
            "cmake's output",
            std::io::Error::other("not piped"),
        ));
    };
    let mut out = tokio::io::BufReader::new(stdout).lines();
    let mut err = tokio::io::BufReader::new(stderr).lines();
    let (mut out_open, mut err_open) = (true, true);
    let mut tail: Vec<String> = Vec::new();
    let mut keep = |line: String| {
        tail.push(line);
        if tail.len() > TAIL {
            tail.remove(0);
        }
    };
    let mut last_step = None;
    while out_open || err_open {
        let line = tokio::select! {
            l = out.next_line(), if out_open => match l {
                Ok(Some(l)) => l,
                _ => { out_open = false; continue; }
            },
            l = err.next_line(), if err_open => match l {
                Ok(Some(l)) => l,
                _ => { err_open = false; continue; }
            },
            () = ctx.cancel.cancelled() => {
                kill(group);
                let _ = child.wait().await;
                return Err(ProvisionError::Cancelled);
            }
        };
        if let Some((done, total, what)) = progress_of(&line) {
            if last_step != Some(done) {
                last_step = Some(done);
                ctx.reporter.step(done, Some(total), "percent", what);
            }
        } else if line.starts_with("-- Build files have been written")
            || line.starts_with("-- Configuring done")
        {
            ctx.reporter.narrate(step, line.trim_start_matches("-- "));
        }
        keep(line);
    }
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| ProvisionError::io("waiting for cmake", e))?,
        () = ctx.cancel.cancelled() => {
            kill(group);
            let _ = child.wait().await;
            return Err(ProvisionError::Cancelled);
        }
    };
    // the build's compilers are in its group; none may outlive it
    kill(group);
    if status.success() {
        Ok(())
    } else {
        Err(ProvisionError::failed(
            "build_failed",
            format!("cmake {step} failed ({status}):\n{}", tail.join("\n")),
        ))
    }
}

/// The cmake-build vendor.
pub(crate) const CMAKE_BUILD: VendorInfo = VendorInfo {
    name: "cmake-build",
    forms: "llama.cpp:<cpu|cuda|vulkan|rocm|metal>@/path/to/llama.cpp (built with cmake)",
    prefixes: &["llama.cpp:"],
};

#[async_trait]
impl VendorSource<WorkerBinary> for LlamaBuildVendor {
    fn info(&self) -> &'static VendorInfo {
        &CMAKE_BUILD
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<WorkerBinary>, ProvisionError> {
        let (worker_type, tree) = parse(request)?;
        if worker_type == WorkerType::MetalLlm && Platform::current() != Platform::Macos {
            return Err(ProvisionError::Invalid(
                "llama.cpp's metal build is for macOS".into(),
            ));
        }
        if tree.is_file() {
            return Err(ProvisionError::Invalid(format!(
                "{} is a file, not a llama.cpp source tree: to register a built llama-server, use rbee worker-binaries add {}",
                tree.display(),
                tree.display()
            )));
        }
        if !tree.is_dir() {
            return Err(ProvisionError::NotFound(format!(
                "{} is not a folder",
                tree.display()
            )));
        }
        let lists = tree.join("CMakeLists.txt");
        let text = fs_err::read_to_string(&lists).map_err(|_| {
            ProvisionError::NotFound(format!(
                "{} has no CMakeLists.txt: it is not a llama.cpp source tree",
                tree.display()
            ))
        })?;
        if !text.contains("llama.cpp") {
            return Err(ProvisionError::Invalid(format!(
                "{} is not llama.cpp's: its project is not llama.cpp",
                lists.display()
            )));
        }
        // The version is the build's own word, known once it is built; until then
        // the entry is a placeholder the build replaces.
        let mut plan = WorkerBinary::new(
            worker_type,
            Platform::current(),
            Version::new(0, 0, 0),
            Path::new(""),
            0,
        );
        plan.engine = Engine::LlamaCpp;
        plan.id = format!(
            "llama-server-{}-source-{}",
            worker_type.backend(),
            plan.platform
        );
        plan.status = ArtifactStatus::Downloading;
        plan.source = Some(format!("{SOURCE_PREFIX}{}", tree.display()));
        plan.build_args.clone_from(&request.build_args);
        Ok(CMAKE_BUILD.resolved(plan.id.clone(), plan))
    }

    async fn fetch(
        &self,
        resolved: Resolved<WorkerBinary>,
        ctx: &ProvisionContext,
    ) -> Result<WorkerBinary, ProvisionError> {
        let mut plan = resolved.plan;
        let tree = PathBuf::from(
            plan.source
                .as_deref()
                .and_then(|s| s.strip_prefix(SOURCE_PREFIX))
                .unwrap_or_default(),
        );
        let build_dir = tree.join(format!("build-rbee-{}", plan.worker_type.backend()));
        let configure = configure_args(&tree, &build_dir, plan.worker_type, &plan.build_args);
        ctx.reporter
            .narrate("configure", &format!("cmake {}", configure.join(" ")));
        run_step(&configure, "configure", ctx).await?;
        let jobs = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let build = [
            "--build",
            &build_dir.display().to_string(),
            "--config",
            "Release",
            "--target",
            "llama-server",
            "-j",
            &jobs.to_string(),
        ]
        .map(str::to_owned);
        ctx.reporter.narrate(
            "build",
            &format!(
                "building llama-server in {} with {jobs} jobs",
                build_dir.display()
            ),
        );
        ctx.reporter.step(0, Some(100), "percent", "");
        run_step(&build, "build", ctx).await?;

        let bin_dir = build_dir.join("bin");
        let exe = plan.file_name();
        let built = bin_dir.join(&exe);
        let report = crate::existing::version_of(&built, Some(&bin_dir)).await?;
        if report.engine != Engine::LlamaCpp {
            return Err(ProvisionError::Invalid(format!(
                "{} says it is not llama.cpp's server",
                built.display()
            )));
        }
        plan.version = report.version;
        plan.id = WorkerBinary::make_engine_id(
            plan.engine,
            plan.worker_type,
            &plan.version,
            plan.platform,
        );
        let dir = crate::install::folder_of(&self.workers_dir, &plan.id)?;
        crate::install::finish(ctx, move || {
            let mut staging = Staging::new(&dir)?;
            for entry in fs_err::read_dir(&bin_dir)
                .map_err(|e| ProvisionError::io("the build's output", e))?
            {
                let entry = entry.map_err(|e| ProvisionError::io("the build's output", e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_shared_library(&name) && entry.path().is_file() {
                    let mut f = fs_err::File::open(entry.path())
                        .map_err(|e| ProvisionError::io("reading a built library", e))?;
                    staging.library(&name, &mut f)?;
                }
            }
            let mut f = fs_err::File::open(&built)
                .map_err(|e| ProvisionError::io("reading the build", e))?;
            staging.executable(&exe, &mut f)?;
            staging.commit(&exe, plan)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_progress_lines() {
        assert_eq!(
            progress_of("[ 45%] Building CXX object ggml/src/CMakeFiles/ggml-base.dir/ggml.cpp.o"),
            Some((
                45,
                100,
                "Building CXX object ggml/src/CMakeFiles/ggml-base.dir/ggml.cpp.o"
            ))
        );
        assert_eq!(
            progress_of("[12/240] Building C object ggml.c.o"),
            Some((12, 240, "Building C object ggml.c.o"))
        );
        assert_eq!(progress_of("-- Configuring done"), None);
        assert_eq!(progress_of("[not a step]"), None);
    }

    #[test]
    fn the_requests_arguments_come_last() {
        let args = configure_args(
            Path::new("/src"),
            Path::new("/src/build-rbee-cuda"),
            WorkerType::CudaLlm,
            &["-DGGML_NATIVE=OFF".to_owned()],
        );
        let at = |a: &str| args.iter().position(|x| x == a);
        assert!(at("-DGGML_CUDA=ON") < at("-DGGML_NATIVE=OFF"));
        assert!(at("-DGGML_NATIVE=ON") < at("-DGGML_CUDA=ON"));
        let bad = ProvisionRequest {
            build_args: vec!["--fresh".into()],
            ..ProvisionRequest::new("llama.cpp:cpu@/src")
        };
        assert!(parse(&bad).is_err());
        assert!(parse(&ProvisionRequest::new("llama.cpp:cpu")).is_err());
        assert!(parse(&ProvisionRequest::new("llama.cpp:cpu@relative/x")).is_err());
        assert!(parse(&ProvisionRequest::new("llama.cpp:tpu@/src")).is_err());
    }
}
