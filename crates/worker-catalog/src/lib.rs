//! The catalog of inference-worker binaries on this machine.
//!
//! A [`WorkerBinary`] is one executable of one [`Engine`] (our `llm-worker-rbee`,
//! llama.cpp's `llama-server`) and one [`WorkerType`] (CPU, CUDA or Metal) for one
//! [`Platform`], at one version. [`WorkerCatalog`] keeps them on either catalog
//! backend and answers which binary to run for an engine, type and platform: the
//! highest available version.
//!
//! It knows nothing of how binaries are built or fetched.
#![deny(missing_docs)]

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use artifact_catalog::{
    Artifact, ArtifactCatalog, ArtifactMetadata, ArtifactStatus, Backend, CatalogError,
};
use semver::Version;
use serde::{Deserialize, Serialize};

/// The variable that tells the dynamic loader where else to look for shared
/// libraries: how an installed binary finds the libraries unpacked beside it.
pub const LIBRARY_PATH_VAR: &str = if cfg!(target_os = "macos") {
    "DYLD_LIBRARY_PATH"
} else if cfg!(windows) {
    "PATH"
} else {
    "LD_LIBRARY_PATH"
};

/// The result of a catalog operation.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// A kind of worker: what it runs and on which hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerType {
    /// LLM inference on the CPU.
    CpuLlm,
    /// LLM inference on NVIDIA GPUs.
    CudaLlm,
    /// LLM inference on Apple GPUs.
    MetalLlm,
    /// LLM inference through Vulkan (llama.cpp only).
    VulkanLlm,
    /// LLM inference on AMD GPUs through ROCm/HIP (llama.cpp only).
    RocmLlm,
}

impl WorkerType {
    /// Every worker type.
    pub const ALL: [WorkerType; 5] = [
        Self::CpuLlm,
        Self::CudaLlm,
        Self::MetalLlm,
        Self::VulkanLlm,
        Self::RocmLlm,
    ];

    /// The executable's name, without the platform's extension.
    pub fn binary_name(self) -> &'static str {
        match self {
            Self::CpuLlm => "llm-worker-rbee-cpu",
            Self::CudaLlm => "llm-worker-rbee-cuda",
            Self::MetalLlm => "llm-worker-rbee-metal",
            Self::VulkanLlm => "llm-worker-rbee-vulkan",
            Self::RocmLlm => "llm-worker-rbee-rocm",
        }
    }

    /// The compute backend: `cpu`, `cuda`, `metal`, `vulkan` or `rocm`.
    pub fn backend(self) -> &'static str {
        match self {
            Self::CpuLlm => "cpu",
            Self::CudaLlm => "cuda",
            Self::MetalLlm => "metal",
            Self::VulkanLlm => "vulkan",
            Self::RocmLlm => "rocm",
        }
    }

    /// Whether it computes on a GPU, which is then chosen by a device index.
    pub fn is_gpu(self) -> bool {
        self != Self::CpuLlm
    }
}

impl fmt::Display for WorkerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.backend())
    }
}

impl FromStr for WorkerType {
    type Err = String;

    /// Takes the backend (`cpu`), the type (`cpu_llm`, `cpu-llm`) or the binary name.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|t| {
                s == t.backend()
                    || s == format!("{}_llm", t.backend())
                    || s == t.binary_name().replace('-', "_")
            })
            .ok_or_else(|| {
                format!("unknown worker type {s:?}: use cpu, cuda, metal, vulkan or rocm")
            })
    }
}

/// The inference engine a binary is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Engine {
    /// Our own `llm-worker-rbee` (candle).
    #[default]
    #[serde(rename = "rbee")]
    Rbee,
    /// llama.cpp's `llama-server`.
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
}

impl Engine {
    /// Both engines.
    pub const ALL: [Engine; 2] = [Self::Rbee, Self::LlamaCpp];

    /// `rbee` or `llama.cpp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rbee => "rbee",
            Self::LlamaCpp => "llama.cpp",
        }
    }

    /// The executable this engine ships as, without the platform's extension.
    pub fn executable(self) -> &'static str {
        match self {
            Self::Rbee => "llm-worker-rbee",
            Self::LlamaCpp => "llama-server",
        }
    }

    /// How a version of this engine is written: `0.1.0`, or llama.cpp's build
    /// number `b6123` (kept as the major version; a build without one keeps its
    /// own version, `v0.5.0-dev`).
    pub fn version_text(self, version: &Version) -> String {
        let build_number =
            version.minor == 0 && version.patch == 0 && version.pre.is_empty() && version.major > 0;
        match self {
            Self::LlamaCpp if build_number => format!("b{}", version.major),
            Self::LlamaCpp => format!("v{version}"),
            Self::Rbee => version.to_string(),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rbee" | "llm-worker-rbee" | "candle" => Ok(Self::Rbee),
            "llama.cpp" | "llamacpp" | "llama-cpp" | "llama-server" => Ok(Self::LlamaCpp),
            other => Err(format!("unknown engine {other:?}: use rbee or llama.cpp")),
        }
    }
}

impl Engine {
    /// Whether this engine has builds for `worker_type`: llama.cpp for every one, our
    /// own worker for the CPU, CUDA and Metal.
    pub fn builds_for(self, worker_type: WorkerType) -> bool {
        match self {
            Self::LlamaCpp => true,
            Self::Rbee => matches!(
                worker_type,
                WorkerType::CpuLlm | WorkerType::CudaLlm | WorkerType::MetalLlm
            ),
        }
    }
}

/// An operating system a binary runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Linux.
    Linux,
    /// macOS.
    Macos,
    /// Windows.
    Windows,
}

impl Platform {
    /// The platform this program was built for.
    pub fn current() -> Self {
        if cfg!(target_os = "macos") {
            Self::Macos
        } else if cfg!(windows) {
            Self::Windows
        } else {
            Self::Linux
        }
    }

    /// The executable extension, with its dot: `.exe` on Windows, else empty.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Windows => ".exe",
            Self::Linux | Self::Macos => "",
        }
    }

    /// `linux`, `macos` or `windows`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Macos => "macos",
            Self::Windows => "windows",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "linux" => Ok(Self::Linux),
            "macos" | "darwin" => Ok(Self::Macos),
            "windows" => Ok(Self::Windows),
            other => Err(format!(
                "unknown platform {other:?}: use linux, macos or windows"
            )),
        }
    }
}

/// One installed worker executable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerBinary {
    /// `{binary}-v{version}-{platform}`, such as `llm-worker-rbee-cpu-v0.1.0-linux`
    /// or `llama-server-cpu-b6123-linux`.
    pub id: String,
    /// Which engine it is (`rbee` for entries made before engines existed).
    #[serde(default)]
    pub engine: Engine,
    /// What it runs on.
    pub worker_type: WorkerType,
    /// The platform it was built for.
    pub platform: Platform,
    /// Its version.
    pub version: Version,
    /// The executable.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Where it stands.
    pub status: ArtifactStatus,
    /// The sha256 of the executable, lowercase hex, when known.
    pub sha256: Option<String>,
    /// How it got here: `local-build`, a release URL, `file:` for a binary registered
    /// where it lies (never moved or deleted by the hive).
    pub source: Option<String>,
    /// When the file was last modified, as recorded when it was installed or added:
    /// with the size, how a change to it is noticed without reading it.
    #[serde(default)]
    pub modified: Option<std::time::SystemTime>,
    /// The arguments it was built with beyond the defaults (cmake's `-D...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_args: Vec<String>,
}

impl WorkerBinary {
    /// The id of a binary: `{binary}-v{version}-{platform}`.
    pub fn make_id(worker_type: WorkerType, version: &Version, platform: Platform) -> String {
        format!("{}-v{version}-{platform}", worker_type.binary_name())
    }

    /// The id of a binary of any engine: as [`Self::make_id`] for `rbee`,
    /// `llama-server-{backend}-b{build}-{platform}` for llama.cpp.
    pub fn make_engine_id(
        engine: Engine,
        worker_type: WorkerType,
        version: &Version,
        platform: Platform,
    ) -> String {
        match engine {
            Engine::Rbee => Self::make_id(worker_type, version, platform),
            Engine::LlamaCpp => format!(
                "llama-server-{}-{}-{platform}",
                worker_type.backend(),
                engine.version_text(version)
            ),
        }
    }

    /// What changed about the executable since it was recorded: gone, another size,
    /// or (when recorded) another modification time; `None` when it is as recorded.
    pub fn file_changed(&self) -> Option<String> {
        let shown = self.path.display();
        match fs_err::metadata(&self.path) {
            Err(e) => Some(format!("{shown} is gone: {e}")),
            Ok(m) if m.len() != self.size => Some(format!(
                "{shown} is {} bytes, {} were recorded",
                m.len(),
                self.size
            )),
            Ok(m) if self.modified.is_some() && m.modified().ok() != self.modified => {
                Some(format!("{shown} was modified since it was recorded"))
            }
            Ok(_) => None,
        }
    }

    /// Whether the hive only points at this file (registered where it lies): it is
    /// never moved or deleted, only forgotten.
    pub fn is_registered(&self) -> bool {
        self.source
            .as_deref()
            .is_some_and(|s| s.starts_with("file:"))
    }

    /// The folder of shared libraries installed beside the executable, which the
    /// loader must be told of: an installed llama.cpp build's. `None` for our own
    /// worker and for a binary registered where it lies, which finds its own.
    pub fn library_dir(&self) -> Option<&Path> {
        if self.engine == Engine::LlamaCpp && !self.is_registered() {
            self.path.parent()
        } else {
            None
        }
    }

    /// A new, available binary at `path`.
    pub fn new(
        worker_type: WorkerType,
        platform: Platform,
        version: Version,
        path: &Path,
        size: u64,
    ) -> Self {
        Self {
            id: Self::make_id(worker_type, &version, platform),
            engine: Engine::Rbee,
            worker_type,
            platform,
            version,
            path: path.to_path_buf(),
            size,
            status: ArtifactStatus::Available,
            sha256: None,
            source: None,
            modified: None,
            build_args: Vec::new(),
        }
    }

    /// The executable's file name on its platform: `llm-worker-rbee-cpu`, or
    /// `llama-server` (the name its shared libraries and tools expect).
    pub fn file_name(&self) -> String {
        let name = match self.engine {
            Engine::Rbee => self.worker_type.binary_name(),
            Engine::LlamaCpp => Engine::LlamaCpp.executable(),
        };
        format!("{name}{}", self.platform.extension())
    }
}

impl Artifact for WorkerBinary {
    const KIND: &'static str = "worker";

    fn id(&self) -> &str {
        &self.id
    }

    fn status(&self) -> &ArtifactStatus {
        &self.status
    }

    fn set_status(&mut self, status: ArtifactStatus) {
        self.status = status;
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// The worker binaries of one `RBEE_HOME`.
///
/// It dereferences to the generic [`ArtifactCatalog`].
pub struct WorkerCatalog {
    inner: Box<dyn ArtifactCatalog<WorkerBinary>>,
    workers_dir: PathBuf,
}

impl fmt::Debug for WorkerCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerCatalog")
            .field("workers_dir", &self.workers_dir)
            .finish_non_exhaustive()
    }
}

impl WorkerCatalog {
    /// Opens the worker catalog of `home`: `home/catalog.db` with the SQLite
    /// backend, `home/workers/*/metadata.json` with the filesystem backend.
    pub fn open(home: &Path, backend: Backend) -> Result<Self> {
        let workers_dir = home.join("workers");
        let inner = backend.open(&home.join("catalog.db"), &workers_dir)?;
        fs_err::create_dir_all(&workers_dir)?;
        Ok(Self { inner, workers_dir })
    }

    /// `home/workers`.
    pub fn workers_dir(&self) -> &Path {
        &self.workers_dir
    }

    /// The folder a binary goes in: `home/workers/<encoded id>`.
    pub fn binary_dir(&self, id: &str) -> Result<PathBuf> {
        Ok(self
            .workers_dir
            .join(artifact_catalog::encode_dir_name(id)?))
    }

    /// The available `rbee` binary to run for this type on this platform: the
    /// highest version (semver order, so `0.10.0` beats `0.9.0`).
    pub fn find_by_type_and_platform(
        &self,
        worker_type: WorkerType,
        platform: Platform,
    ) -> Result<Option<WorkerBinary>> {
        self.find(Engine::Rbee, worker_type, platform)
    }

    /// The available binary of this engine to run for this type on this platform:
    /// the highest version.
    pub fn find(
        &self,
        engine: Engine,
        worker_type: WorkerType,
        platform: Platform,
    ) -> Result<Option<WorkerBinary>> {
        Ok(self
            .inner
            .list()?
            .into_iter()
            .map(|r| r.artifact)
            .filter(|b| {
                b.engine == engine
                    && b.worker_type == worker_type
                    && b.platform == platform
                    && b.status == ArtifactStatus::Available
            })
            .max_by(|a, b| a.version.cmp(&b.version)))
    }
}

impl Deref for WorkerCatalog {
    type Target = dyn ArtifactCatalog<WorkerBinary>;

    fn deref(&self) -> &Self::Target {
        self.inner.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let v = Version::new(0, 1, 0);
        assert_eq!(
            WorkerBinary::make_id(WorkerType::CudaLlm, &v, Platform::Linux),
            "llm-worker-rbee-cuda-v0.1.0-linux"
        );
        let b = WorkerBinary::new(WorkerType::CpuLlm, Platform::Windows, v, Path::new("x"), 1);
        assert_eq!(b.file_name(), "llm-worker-rbee-cpu.exe");
        for (s, t) in [
            ("cpu", WorkerType::CpuLlm),
            ("CUDA", WorkerType::CudaLlm),
            ("metal_llm", WorkerType::MetalLlm),
            ("cuda-llm", WorkerType::CudaLlm),
            ("llm-worker-rbee-cpu", WorkerType::CpuLlm),
        ] {
            assert_eq!(s.parse::<WorkerType>(), Ok(t), "{s}");
        }
        assert_eq!("rocm".parse::<WorkerType>(), Ok(WorkerType::RocmLlm));
        assert!(
            "tpu"
                .parse::<WorkerType>()
                .unwrap_err()
                .contains("cpu, cuda, metal, vulkan or rocm")
        );
        assert!(!Engine::Rbee.builds_for(WorkerType::VulkanLlm));
        assert!(Engine::LlamaCpp.builds_for(WorkerType::VulkanLlm));
        let mut l = WorkerBinary::new(
            WorkerType::VulkanLlm,
            Platform::Linux,
            Version::new(6123, 0, 0),
            Path::new("x"),
            1,
        );
        l.engine = Engine::LlamaCpp;
        assert_eq!(l.file_name(), "llama-server");
        assert_eq!("darwin".parse::<Platform>(), Ok(Platform::Macos));
        assert_eq!(
            Platform::current().extension(),
            if cfg!(windows) { ".exe" } else { "" }
        );
    }
}
