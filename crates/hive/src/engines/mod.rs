//! What an engine is, in one place: the command line it is given, the architectures
//! it runs, the extra flags it allows, how it says it is ready, the key it reads, and
//! the memory a model needs under it ([`memory`]). The supervisor (`workers/`) and the
//! operations (`ops/`) ask here; nothing here starts a process or reads the state.

pub mod llama;
pub mod memory;
pub mod rbee;

use std::path::PathBuf;
use std::time::Duration;

use worker_catalog::{Engine, WorkerType};

/// What a spawn request resolved to.
#[derive(Debug, Clone)]
pub struct SpawnPlan {
    /// The new worker's id.
    pub id: String,
    /// The model's catalog id.
    pub model_ref: String,
    /// The model file.
    pub model_path: PathBuf,
    /// `cpu`, `cuda` or `metal`.
    pub backend: String,
    /// Which engine the binary is: it decides the command line and readiness.
    pub engine: Engine,
    /// The engine's version as it writes it (`0.1.0`, `b6123`).
    pub engine_version: String,
    /// More arguments for the engine, checked by the spawn.
    pub engine_args: Vec<String>,
    /// The context to allocate (llama.cpp's `-c`).
    pub context: u64,
    /// Requests served at once, when the model's preset says (else the engine's
    /// default: one for llama.cpp as the hive runs it).
    pub slots: Option<u32>,
    /// The device.
    pub device: u32,
    /// The binary.
    pub binary: PathBuf,
    /// The folder of shared libraries installed beside the binary, for the loader.
    pub library_dir: Option<PathBuf>,
    /// The binary's catalog id.
    pub binary_id: String,
    /// CPU threads.
    pub threads: u32,
    /// Its log file.
    pub log_path: PathBuf,
    /// Stop it after this long without a request.
    pub idle_ttl: Option<Duration>,
    /// The draft model's file and its settings, when the preset names one.
    pub draft: Option<Draft>,
    /// Where llama-server saves and restores its slots' KV caches (warm swaps), when
    /// they are kept.
    pub slot_cache: Option<PathBuf>,
    /// The model's multimodal projector (llama.cpp's `--mmproj`), when paired.
    pub projector: Option<PathBuf>,
}

/// A draft model for speculative decoding, as a spawn passes it to llama.cpp.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Its file.
    pub path: PathBuf,
    /// The most tokens drafted at a time.
    pub max: Option<u32>,
    /// The fewest tokens a draft is used with.
    pub min: Option<u32>,
    /// How this llama-server takes a draft ([`llama::draft_flags`]).
    pub flags: llama::DraftFlags,
}

/// The command line of a worker on `port` (`hive_url`: where our own worker
/// reports; `stall`: how long it may generate without progress).
pub fn command_line(
    plan: &SpawnPlan,
    port: u16,
    stall: Duration,
    hive_url: Option<&str>,
) -> Vec<String> {
    match plan.engine {
        Engine::Rbee => rbee::args(plan, port, stall, hive_url),
        Engine::LlamaCpp => llama::server_args(plan, port),
    }
}

/// The environment variable a worker reads its API key from (never its command
/// line, which any local user can read).
pub fn key_var(engine: Engine) -> &'static str {
    match engine {
        Engine::Rbee => "RBEE_WORKER_API_KEY",
        Engine::LlamaCpp => "LLAMA_API_KEY",
    }
}

/// Whether a worker's answer to `GET /health` says it is ready: llama-server
/// answers 503 while it loads and 200 once ready; ours says `{"status":"ready"}`.
pub async fn is_ready(engine: Engine, health: reqwest::Response) -> bool {
    if !health.status().is_success() {
        return false;
    }
    match engine {
        Engine::LlamaCpp => true,
        Engine::Rbee => health
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|v| v["status"] == "ready"),
    }
}

/// The slots the hive sets for the worker, where the engine takes them from the
/// hive (llama.cpp's `-np`); `None` where the worker reports its own (ours).
pub fn slots_set_by_hive(plan: &SpawnPlan) -> Option<u64> {
    match plan.engine {
        Engine::LlamaCpp => Some(plan.slots.map_or(llama::SLOTS, u64::from)),
        Engine::Rbee => None,
    }
}

/// Refuses extra arguments outside llama.cpp's allow-list ([`llama::check_args`]),
/// and any for our own worker, which takes none.
pub fn check_args(engine: Engine, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Ok(());
    }
    match engine {
        Engine::Rbee => Err(
            "llm-worker-rbee takes no extra arguments; engine_args are for llama.cpp".to_owned(),
        ),
        Engine::LlamaCpp => llama::check_args(args),
    }
}

/// Whether the engine runs a model of this architecture; why not, when it does not.
pub fn runs(engine: Engine, architecture: &str) -> Result<(), String> {
    match engine {
        Engine::LlamaCpp => Ok(()),
        Engine::Rbee if rbee::runs(architecture) => Ok(()),
        Engine::Rbee => Err(format!(
            "llm-worker-rbee does not run architecture `{architecture}` (it runs {}); llama.cpp does: rbee worker-binaries add /path/to/llama-server",
            rbee::ARCHITECTURES.join(", ")
        )),
    }
}

/// Encoder-only architectures, which make embeddings and nothing else: llama.cpp
/// serves them started in its embedding mode.
pub fn is_embedding_architecture(architecture: &str) -> bool {
    matches!(
        architecture,
        "bert"
            | "nomic-bert"
            | "nomic-bert-moe"
            | "jina-bert-v2"
            | "jina-bert-v3"
            | "neo-bert"
            | "modern-bert"
            | "t5encoder"
    )
}

/// What a model is for, from its GGUF: it generates text, or it makes embeddings, or
/// it ranks documents against a query. A worker is started for its kind, and a
/// request of another kind never reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A language model: chat and completions.
    Generation,
    /// An embedding model: a pooling type (mean, cls, last) or an encoder-only
    /// architecture.
    Embedding,
    /// A reranker: rank pooling, a classifier head over query and document.
    Rerank,
}

/// llama.cpp's pooling type for ranking (`LLAMA_POOLING_TYPE_RANK`).
const POOLING_RANK: u32 = 4;

/// llama-server's flags for its embedding mode, and for its reranking mode.
const EMBEDDING_FLAGS: &[&str] = &["--embedding", "--embeddings"];
const RERANKING_FLAGS: &[&str] = &["--rerank", "--reranking"];

fn has_flag(args: &[String], flags: &[&str]) -> bool {
    args.iter().any(|a| flags.contains(&a.as_str()))
}

impl ModelKind {
    /// The kind of a model whose header says `summary`; a model with no header
    /// generates.
    pub fn of(summary: Option<&gguf::Summary>) -> Self {
        let Some(g) = summary else {
            return Self::Generation;
        };
        match g.pooling_type {
            Some(POOLING_RANK) => Self::Rerank,
            Some(_) => Self::Embedding,
            None if g
                .architecture
                .as_deref()
                .is_some_and(is_embedding_architecture) =>
            {
                Self::Embedding
            }
            None => Self::Generation,
        }
    }

    /// The kind a model is served as: its GGUF's, unless the extra arguments its
    /// worker gets (its preset's) start llama.cpp in another mode.
    pub fn served(summary: Option<&gguf::Summary>, engine_args: &[String]) -> Self {
        if has_flag(engine_args, RERANKING_FLAGS) {
            Self::Rerank
        } else if has_flag(engine_args, EMBEDDING_FLAGS) {
            Self::Embedding
        } else {
            Self::of(summary)
        }
    }

    /// Its name in the API: `generation`, `embedding`, `rerank`.
    pub fn id(self) -> &'static str {
        match self {
            Self::Generation => "generation",
            Self::Embedding => "embedding",
            Self::Rerank => "rerank",
        }
    }

    /// What people call it, in an error.
    pub fn name(self) -> &'static str {
        match self {
            Self::Generation => "a language model",
            Self::Embedding => "an embedding model",
            Self::Rerank => "a reranker",
        }
    }
}

/// What a model answers, as Ollama names it: `completion` (and `vision` with a
/// paired projector that sees, `audio` with one that hears, on llama.cpp's engine:
/// ours takes no projector), or `embedding`.
pub fn capabilities(model: &model_catalog::ModelEntry) -> Vec<&'static str> {
    let ours = model.preset.engine.as_deref().and_then(|e| e.parse().ok()) == Some(Engine::Rbee);
    match ModelKind::served(model.gguf.as_ref(), &model.preset.engine_args) {
        ModelKind::Generation => {
            let mut out = vec!["completion"];
            if let Some(p) = model.projector_in_use().filter(|_| !ours) {
                if p.summary.vision {
                    out.push("vision");
                }
                if p.summary.audio {
                    out.push("audio");
                }
            }
            out
        }
        ModelKind::Embedding | ModelKind::Rerank => vec!["embedding"],
    }
}

/// The arguments a model's kind adds on llama.cpp, unless they are there already:
/// `--embeddings` for an embedding model, `--reranking` for a reranker.
pub fn kind_args(engine: Engine, kind: ModelKind, args: &mut Vec<String>) {
    if engine != Engine::LlamaCpp {
        return;
    }
    match kind {
        ModelKind::Embedding if !has_flag(args, EMBEDDING_FLAGS) => {
            args.push("--embeddings".to_owned());
        }
        ModelKind::Rerank if !has_flag(args, RERANKING_FLAGS) => {
            args.push("--reranking".to_owned());
        }
        _ => {}
    }
}

/// Where a model runs: the backend, its device, and the engine when one is asked for
/// (else the spawn takes llama.cpp when one is installed, else ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The backend's worker type.
    pub wtype: WorkerType,
    /// The device index.
    pub device: u32,
    /// The engine asked for, by the request or the preset.
    pub engine: Option<Engine>,
}

impl Placement {
    /// The device whose memory the worker takes.
    pub fn memory_device(&self) -> memory::Device {
        memory::Device::of(self.wtype.backend(), self.device)
    }
}

/// What a request says of where a model runs; each may be left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked<'a> {
    /// `cpu`, `cuda`, `metal`, `vulkan` or `rocm`.
    pub worker: Option<&'a str>,
    /// `rbee` or `llama.cpp`.
    pub engine: Option<&'a str>,
    /// The device index (0 unless given).
    pub device: u32,
}

/// The one rule for where a model runs, for a spawn, a load, the one endpoint and
/// the fleet's card alike: the backend asked for, else the model's preset's, else a
/// GPU's when a binary for one is installed here, else the CPU's; the device asked
/// for with it, else the preset's; the engine asked for, else the preset's. A name
/// that is no backend or engine is the error's code and sentence.
pub fn place(
    asked: Asked<'_>,
    preset: &model_catalog::Preset,
    installed: &[WorkerType],
) -> Result<Placement, (&'static str, String)> {
    let worker_type = |s: &str| {
        s.parse::<WorkerType>()
            .map_err(|e| ("invalid_worker_type", e))
    };
    let wanted = asked.worker.map(worker_type).transpose()?;
    let from_preset = preset.worker.as_deref().map(worker_type).transpose()?;
    let wtype = pick_backend(wanted, from_preset, installed);
    let device = match (wanted, preset.device) {
        (None, Some(d)) => d,
        _ => asked.device,
    };
    let engine = asked
        .engine
        .or(preset.engine.as_deref())
        .map(str::parse::<Engine>)
        .transpose()
        .map_err(|e| ("invalid_engine", e))?;
    Ok(Placement {
        wtype,
        device,
        engine,
    })
}

/// The backend by [`place`]'s rule, from types already parsed.
fn pick_backend(
    asked: Option<WorkerType>,
    preset: Option<WorkerType>,
    installed: &[WorkerType],
) -> WorkerType {
    asked.or(preset).unwrap_or_else(|| {
        [
            WorkerType::CudaLlm,
            WorkerType::MetalLlm,
            WorkerType::RocmLlm,
            WorkerType::VulkanLlm,
        ]
        .into_iter()
        .find(|t| installed.contains(t))
        .unwrap_or(WorkerType::CpuLlm)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_kind_comes_from_its_pooling_or_its_architecture() {
        let summary = |arch: &str, pooling: Option<u32>| gguf::Summary {
            architecture: Some(arch.to_owned()),
            pooling_type: pooling,
            ..gguf::Summary::default()
        };
        assert_eq!(ModelKind::of(None), ModelKind::Generation);
        assert_eq!(
            ModelKind::of(Some(&summary("llama", None))),
            ModelKind::Generation
        );
        assert_eq!(
            ModelKind::of(Some(&summary("bert", None))),
            ModelKind::Embedding
        );
        assert_eq!(
            ModelKind::of(Some(&summary("qwen3", Some(3)))),
            ModelKind::Embedding
        );
        assert_eq!(
            ModelKind::of(Some(&summary("bert", Some(4)))),
            ModelKind::Rerank
        );
        let args = |engine, kind, given: &[&str]| {
            let mut a: Vec<String> = given.iter().map(|s| (*s).to_owned()).collect();
            kind_args(engine, kind, &mut a);
            a
        };
        assert_eq!(
            args(Engine::LlamaCpp, ModelKind::Rerank, &[]),
            ["--reranking"]
        );
        assert_eq!(
            args(Engine::LlamaCpp, ModelKind::Embedding, &[]),
            ["--embeddings"]
        );
        assert_eq!(
            args(Engine::LlamaCpp, ModelKind::Embedding, &["--embedding"]),
            ["--embedding"]
        );
        assert!(args(Engine::LlamaCpp, ModelKind::Generation, &[]).is_empty());
        assert!(args(Engine::Rbee, ModelKind::Rerank, &[]).is_empty());
        // a preset that starts llama.cpp in a mode makes the model that kind
        let llama = Some(summary("llama", None));
        let preset = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            ModelKind::served(llama.as_ref(), &preset(&["--embeddings"])),
            ModelKind::Embedding
        );
        assert_eq!(
            ModelKind::served(llama.as_ref(), &preset(&["--rerank"])),
            ModelKind::Rerank
        );
        assert_eq!(
            ModelKind::served(llama.as_ref(), &preset(&["--temp", "0"])),
            ModelKind::Generation
        );
    }

    #[test]
    fn the_backend_is_asked_then_preset_then_an_installed_gpu_then_the_cpu() {
        use WorkerType::{CpuLlm, CudaLlm, VulkanLlm};
        assert_eq!(
            pick_backend(Some(CpuLlm), Some(CudaLlm), &[CudaLlm]),
            CpuLlm
        );
        assert_eq!(pick_backend(None, Some(CpuLlm), &[CudaLlm]), CpuLlm);
        assert_eq!(pick_backend(None, None, &[CpuLlm, VulkanLlm]), VulkanLlm);
        assert_eq!(pick_backend(None, None, &[CpuLlm]), CpuLlm);
    }

    #[test]
    fn a_placement_takes_the_request_then_the_preset_and_refuses_bad_names() {
        use WorkerType::{CpuLlm, CudaLlm};
        let preset = model_catalog::Preset {
            worker: Some("cuda".to_owned()),
            device: Some(1),
            engine: Some("rbee".to_owned()),
            ..model_catalog::Preset::default()
        };
        let placed = place(Asked::default(), &preset, &[CpuLlm]).unwrap();
        assert_eq!(
            (placed.wtype, placed.device, placed.engine),
            (CudaLlm, 1, Some(Engine::Rbee))
        );
        // a backend asked for brings its own device, not the preset's
        let asked = Asked {
            worker: Some("cpu"),
            engine: Some("llama.cpp"),
            device: 0,
        };
        let placed = place(asked, &preset, &[CpuLlm]).unwrap();
        assert_eq!(
            (placed.wtype, placed.device, placed.engine),
            (CpuLlm, 0, Some(Engine::LlamaCpp))
        );
        assert_eq!(placed.memory_device(), memory::Device::Ram);
        let bad = Asked {
            worker: Some("tpu"),
            ..Asked::default()
        };
        assert_eq!(
            place(bad, &preset, &[]).unwrap_err().0,
            "invalid_worker_type"
        );
        let bad = Asked {
            engine: Some("vllm"),
            ..Asked::default()
        };
        assert_eq!(place(bad, &preset, &[]).unwrap_err().0, "invalid_engine");
    }

    #[test]
    fn our_worker_takes_no_extra_flags_and_names_what_it_runs() {
        assert!(check_args(Engine::Rbee, &[]).is_ok());
        assert!(check_args(Engine::Rbee, &["--temp".into(), "1".into()]).is_err());
        assert!(runs(Engine::Rbee, "llama").is_ok());
        let why = runs(Engine::Rbee, "gemma3").err().unwrap_or_default();
        assert!(why.contains("llama, qwen2, qwen3"), "{why}");
        assert!(runs(Engine::LlamaCpp, "gemma3").is_ok());
    }

    #[test]
    fn a_projector_makes_a_model_see_on_llama_cpp_unless_its_preset_says_not() {
        let mut m = model_catalog::ModelEntry::new(
            "m",
            "local",
            "file:/m.gguf",
            std::path::Path::new("/m.gguf"),
        );
        assert_eq!(capabilities(&m), ["completion"]);
        m.projector = Some(model_catalog::ModelProjector {
            path: "/mmproj.gguf".into(),
            size: 1,
            sha256: String::new(),
            summary: gguf::Projector {
                vision: true,
                ..gguf::Projector::default()
            },
            source_url: None,
        });
        assert_eq!(capabilities(&m), ["completion", "vision"]);
        m.preset.no_mmproj = true;
        assert_eq!(capabilities(&m), ["completion"]);
        m.preset.no_mmproj = false;
        m.preset.engine = Some(Engine::Rbee.as_str().to_owned());
        assert_eq!(capabilities(&m), ["completion"]);
    }
}
