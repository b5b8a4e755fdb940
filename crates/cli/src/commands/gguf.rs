//! `rbee gguf inspect`: what a GGUF file holds, read from its header alone.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use gguf::{Gguf, ReadOptions};
use serde_json::{Map, Value as Json, json};

/// Arrays longer than this are shown as their type and length.
const SHOWN_ARRAY_LEN: u64 = 16;

/// Exit code for a file that is not a readable GGUF file.
const EXIT_BAD_FILE: u8 = 2;

#[derive(Debug, Subcommand)]
pub enum GgufCommand {
    /// Show a GGUF file's model summary and metadata
    Inspect {
        /// The GGUF file
        file: PathBuf,
        /// Print one JSON object instead of a readable summary
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: GgufCommand) -> ExitCode {
    match cmd {
        GgufCommand::Inspect { file, json } => match inspect(&file, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}: {e:#}", file.display());
                ExitCode::from(EXIT_BAD_FILE)
            }
        },
    }
}

fn inspect(path: &Path, as_json: bool) -> anyhow::Result<()> {
    let file = fs_err::File::open(path)?;
    let len = file.metadata().context("cannot read its size")?.len();
    let g = gguf::read(
        file,
        &ReadOptions {
            max_array_len: SHOWN_ARRAY_LEN,
        },
    )?;
    g.check_file_size(len)?;
    let out = if as_json {
        let mut s = serde_json::to_string_pretty(&to_json(&g, len))?;
        s.push('\n');
        s
    } else {
        readable(&g, len)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()) {
        // `rbee gguf inspect f | head` is not an error
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

fn to_json(g: &Gguf, file_size: u64) -> Json {
    let s = g.summary();
    let metadata: Map<String, Json> = g
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let ctx = s.context_length.unwrap_or(4096);
    json!({
        "gguf_version": g.version,
        "big_endian": g.big_endian,
        "tensor_count": g.tensors.len(),
        "kv_count": g.metadata.len(),
        "architecture": s.architecture,
        "name": s.name,
        "quantization": s.quantization,
        "file_type": s.file_type,
        "parameter_count": s.parameter_count,
        "context_length": s.context_length,
        "embedding_length": s.embedding_length,
        "block_count": s.block_count,
        "head_count": s.head_count,
        "head_count_kv": s.head_count_kv,
        "vocab_size": s.vocab_size,
        "has_chat_template": s.has_chat_template,
        "tokenizer_model": s.tokenizer_model,
        "alignment": g.alignment,
        "tensor_data_offset": g.tensor_data_offset,
        "tensor_data_size": s.tensor_data_size,
        "file_size": file_size,
        "memory_estimate": g.memory_estimate(ctx),
        "metadata": metadata,
    })
}

fn readable(g: &Gguf, file_size: u64) -> String {
    let s = g.summary();
    let mut out = String::new();
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let rows: Vec<(&str, String)> = vec![
        ("name", text(&s.name)),
        ("architecture", text(&s.architecture)),
        ("quantization", text(&s.quantization)),
        (
            "parameters",
            format!("{} ({})", human_count(s.parameter_count), s.parameter_count),
        ),
        ("context length", opt(s.context_length)),
        ("embedding length", opt(s.embedding_length)),
        ("layers", opt(s.block_count)),
        (
            "heads (kv)",
            format!("{} ({})", opt(s.head_count), opt(s.head_count_kv)),
        ),
        ("vocabulary", opt(s.vocab_size)),
        ("tokenizer", text(&s.tokenizer_model)),
        (
            "chat template",
            if s.has_chat_template { "yes" } else { "no" }.to_owned(),
        ),
        (
            "file",
            format!(
                "GGUF v{}{}, {} tensors, {} metadata keys, {}",
                g.version,
                if g.big_endian { " big-endian" } else { "" },
                g.tensors.len(),
                g.metadata.len(),
                human_bytes(file_size)
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<17}{v}");
    }
    let ctx = s.context_length.unwrap_or(4096);
    let est = g.memory_estimate(ctx);
    let _ = writeln!(
        out,
        "{:<17}{} at {} tokens (weights {}, KV cache {})",
        "memory",
        human_bytes(est.total_bytes),
        ctx,
        human_bytes(est.weights_bytes),
        est.kv_cache_bytes
            .map_or_else(|| "unknown".to_owned(), human_bytes)
    );
    out
}

/// A count with a unit (`134.5M`, `7.24B`).
pub fn human_count(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", f / 1e6),
        _ => format!("{:.2}B", f / 1e9),
    }
}

/// Bytes in binary units (`93.81 MiB`).
pub fn human_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
