//! What is particular to llama.cpp's `llama-server` as a worker: its command line, the
//! extra arguments a user may add to it, and what its `/metrics` says (slots in use,
//! tokens generated, speed).

use super::SpawnPlan;

/// The parallel slots a llama-server worker gets (`-np`) unless its preset says:
/// llama-server's own default (its `-np -1`, auto, is 4 slots on a unified KV cache).
pub const SLOTS: u64 = 4;

/// llama-server's command line: the model, loopback and the port, the context, the
/// slots on one KV cache they share (as llama-server's own default; the context is the
/// cache's size, so the slots do not multiply the memory), every layer on the GPU for
/// a GPU backend (none on the CPU), the device, the model's id as its alias, metrics
/// and the model's own chat template.
pub fn server_args(plan: &SpawnPlan, port: u16) -> Vec<String> {
    let mut args: Vec<String> = [
        "-m",
        &plan.model_path.display().to_string(),
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "-c",
        &plan.context.to_string(),
        "-t",
        &plan.threads.to_string(),
        "-tb",
        &plan.threads.to_string(),
        "-np",
        &plan.slots.map_or(SLOTS, u64::from).to_string(),
        "--kv-unified",
        "--alias",
        &plan.model_ref,
        "--metrics",
        "--jinja",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    match plan.backend.as_str() {
        "cpu" => args.extend(["-ngl".to_owned(), "0".to_owned()]),
        gpu => {
            let device = match gpu {
                "cuda" => format!("CUDA{}", plan.device),
                "metal" => format!("MTL{}", plan.device),
                "vulkan" => format!("Vulkan{}", plan.device),
                "rocm" => format!("ROCm{}", plan.device),
                _ => format!("{}{}", gpu.to_ascii_uppercase(), plan.device),
            };
            args.extend([
                "-ngl".to_owned(),
                "999".to_owned(),
                "-dev".to_owned(),
                device,
            ]);
        }
    }
    if let Some(draft) = &plan.draft {
        args.extend(["-md".to_owned(), draft.path.display().to_string()]);
        if plan.backend != "cpu" {
            args.extend(["-ngld".to_owned(), "999".to_owned()]);
        }
        let DraftFlags {
            max: max_flag,
            min: min_flag,
            simple,
        } = draft.flags;
        if simple {
            args.extend(["--spec-type".to_owned(), "draft-simple".to_owned()]);
        }
        if let Some(max) = draft.max {
            args.extend([max_flag.to_owned(), max.to_string()]);
        }
        if let Some(min) = draft.min {
            args.extend([min_flag.to_owned(), min.to_string()]);
        }
    }
    if let Some(projector) = &plan.projector {
        args.extend(["--mmproj".to_owned(), projector.display().to_string()]);
    }
    if let Some(dir) = &plan.slot_cache {
        args.extend(["--slot-save-path".to_owned(), format!("{}/", dir.display())]);
    }
    args.extend(plan.engine_args.iter().cloned());
    args
}

/// How this llama-server takes a draft model, as its `--help` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftFlags {
    /// The flag bounding a draft's length: `--spec-draft-n-max` in recent builds,
    /// `--draft-max` before.
    pub max: &'static str,
    /// Its lower bound: `--spec-draft-n-min`, or `--draft-min`.
    pub min: &'static str,
    /// Whether speculative decoding must be asked for by type
    /// (`--spec-type draft-simple`): recent builds use none unless told.
    pub simple: bool,
}

/// The draft flags of the llama-server whose `--help` is `help`.
pub fn draft_flags(help: &str) -> DraftFlags {
    let recent = help.contains("--spec-draft-n-max");
    DraftFlags {
        max: if recent {
            "--spec-draft-n-max"
        } else {
            "--draft-max"
        },
        min: if recent {
            "--spec-draft-n-min"
        } else {
            "--draft-min"
        },
        simple: help.contains("--spec-type") && help.contains("draft-simple"),
    }
}

/// The flags of llama-server that a spawn or a preset may add: each changes only how
/// the engine computes (sampling, batches, context shifting, cache types, flash
/// attention, threads' placement, rope, reasoning, the chat template's options, GPU
/// offload, logging's verbosity). Nothing that names a file, a URL or an address.
/// Written with `-` (an argument's `_` is read as `-`); a flag is matched with or
/// without `=value`.
const ALLOWED_FLAGS: &[&str] = &[
    // sampling
    "--temp",
    "--temperature",
    "--top-k",
    "--top-p",
    "--min-p",
    "--typical",
    "--typical-p",
    "--repeat-penalty",
    "--repeat-last-n",
    "--presence-penalty",
    "--frequency-penalty",
    "--mirostat",
    "--mirostat-lr",
    "--mirostat-ent",
    "-s",
    "--seed",
    "--dynatemp-range",
    "--dynatemp-exp",
    "--xtc-probability",
    "--xtc-threshold",
    "--dry-multiplier",
    "--dry-base",
    "--dry-allowed-length",
    "--dry-penalty-last-n",
    "--dry-sequence-breaker",
    "--top-nsigma",
    "--samplers",
    "--sampling-seq",
    "--ignore-eos",
    "-n",
    "--n-predict",
    "--predict",
    "-l",
    "--logit-bias",
    "--n-probs",
    "--keep",
    // batches and the context's handling
    "-b",
    "--batch-size",
    "-ub",
    "--ubatch-size",
    "--context-shift",
    "--no-context-shift",
    "--cache-reuse",
    "--swa-full",
    "-cb",
    "--cont-batching",
    "-nocb",
    "--no-cont-batching",
    "-kvu",
    "--kv-unified",
    "-no-kvu",
    "--no-kv-unified",
    "--no-cache-prompt",
    "--cache-prompt",
    "-cram",
    "--cache-ram",
    "-sps",
    "--slot-prompt-similarity",
    "--no-warmup",
    "-to",
    "--timeout",
    "--threads-http",
    "--embedding",
    "--embeddings",
    "--pooling",
    "--reranking",
    "--rerank",
    // cache types and attention
    "-ctk",
    "--cache-type-k",
    "-ctv",
    "--cache-type-v",
    "-ctkd",
    "--cache-type-k-draft",
    "-ctvd",
    "--cache-type-v-draft",
    "-fa",
    "--flash-attn",
    "-nkvo",
    "--no-kv-offload",
    "-dt",
    "--defrag-thold",
    // threads' placement (their number is the spawn's `threads`)
    "-C",
    "--cpu-mask",
    "-Cr",
    "--cpu-range",
    "--cpu-strict",
    "--prio",
    "--poll",
    "-Cb",
    "--cpu-mask-batch",
    "-Crb",
    "--cpu-range-batch",
    "--cpu-strict-batch",
    "--prio-batch",
    "--poll-batch",
    "--numa",
    // rope and long contexts
    "--rope-scaling",
    "--rope-scale",
    "--rope-freq-base",
    "--rope-freq-scale",
    "--yarn-orig-ctx",
    "--yarn-ext-factor",
    "--yarn-attn-factor",
    "--yarn-beta-slow",
    "--yarn-beta-fast",
    "-gan",
    "--grp-attn-n",
    "-gaw",
    "--grp-attn-w",
    // reasoning and the chat template's options (not a template file)
    "--reasoning-format",
    "--reasoning-budget",
    "--jinja",
    "--no-jinja",
    "--chat-template",
    "--chat-template-kwargs",
    "--no-prefill-assistant",
    // GPU offload and memory
    "-ngl",
    "--gpu-layers",
    "--n-gpu-layers",
    "-sm",
    "--split-mode",
    "-ts",
    "--tensor-split",
    "-mg",
    "--main-gpu",
    "--no-mmap",
    "--mlock",
    "-ot",
    "--override-tensor",
    "-cmoe",
    "--cpu-moe",
    "-ncmoe",
    "--n-cpu-moe",
    "--no-op-offload",
    "--override-kv",
    "--check-tensors",
    "--no-repack",
    "-nr",
    // speculative decoding's settings (the draft model itself comes from the catalog)
    "--draft-max",
    "--draft",
    "--draft-n",
    "--draft-min",
    "--draft-n-min",
    "--draft-p-min",
    "-ngld",
    "--gpu-layers-draft",
    "--n-gpu-layers-draft",
    // logging's verbosity, never its file
    "-v",
    "--verbose",
    "--log-verbose",
    "-lv",
    "--verbosity",
    "--log-verbosity",
    "--log-disable",
    "--log-colors",
    "--log-prefix",
    "--log-timestamps",
];

/// What to do instead, for flags a user may reach for that the hive sets itself.
fn instead(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "-m" | "--model" | "-mu" | "--model-url" | "-hf" | "-hfr" | "--hf-repo" | "-hff"
        | "--hf-file" | "-dr" | "--docker-repo" => {
            "the hive passes the model: pull it into the catalog (rbee models pull) and spawn it by id"
        }
        "--host" | "--port" | "--path" | "--api-prefix" | "--api-key" | "--api-key-file"
        | "--alias" | "-a" | "--ssl-key-file" | "--ssl-cert-file" => {
            "the hive sets where a worker listens, its key and its name"
        }
        "-c" | "--ctx-size" => {
            "set the model's context with its preset (rbee models set ID --context N)"
        }
        "-np" | "--parallel" => {
            "set the model's slots with its preset (rbee models set ID --slots N)"
        }
        "-t" | "--threads" | "-tb" | "--threads-batch" => "set threads with the spawn's --threads",
        "--no-mmproj" => {
            "run it without its projector with its preset (rbee models set ID --no-mmproj), so that the hive knows it cannot see"
        }
        "-md"
        | "--model-draft"
        | "--mmproj"
        | "--mmproj-url"
        | "-mm"
        | "-mmu"
        | "--lora"
        | "--lora-scaled"
        | "--control-vector"
        | "--control-vector-scaled" => {
            "a file a worker needs comes from the catalog, by id, never by path"
        }
        _ => return None,
    })
}

/// Checks extra arguments for llama-server against the allow-list: each flag must
/// be listed, and a value follows its flag (`--temp 0.7`, `--temp=0.7`). The error
/// names the flag and says what to do instead.
pub fn check_args(args: &[String]) -> Result<(), String> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        if arg.contains('\0') || arg.contains('\n') {
            return Err(format!("engine argument {arg:?} holds a control character"));
        }
        let (flag, inline_value) = match arg.split_once('=') {
            Some((f, _)) => (f, true),
            None => (arg.as_str(), false),
        };
        if !flag.starts_with('-') || flag.len() < 2 {
            return Err(format!(
                "engine argument {arg:?} is not a flag: extra arguments are flags such as --temp 0.7"
            ));
        }
        // llama.cpp reads `--log_file` as `--log-file`: so does the check
        let normal = {
            let dashes = flag.len() - flag.trim_start_matches('-').len();
            format!("{}{}", &flag[..dashes], flag[dashes..].replace('_', "-"))
        };
        if !ALLOWED_FLAGS.contains(&normal.as_str()) {
            let hint = instead(&normal).unwrap_or(
                "extra engine arguments may only change how the engine computes (sampling, batch sizes, context shifting, cache types, flash attention, threads, rope, reasoning, the chat template's options, GPU offload); nothing that names a file, a URL or an address",
            );
            return Err(format!("engine argument {normal} is not allowed: {hint}"));
        }
        // the value, when it is a separate argument: anything that is not a flag
        if !inline_value && args.get(i).is_some_and(|next| !looks_like_flag(next)) {
            i += 1;
        }
    }
    Ok(())
}

/// `-x` or `--xy`, not a negative number such as `-1` or `-0.5`.
fn looks_like_flag(s: &str) -> bool {
    let rest = s.trim_start_matches('-');
    s.starts_with('-')
        && rest
            .chars()
            .next()
            .is_some_and(|c| !c.is_ascii_digit() && c != '.')
}

/// What one scrape of llama-server's `/metrics` (`--metrics`) says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LlamaMetrics {
    /// Requests being processed now (`llamacpp:requests_processing`).
    pub processing: Option<f64>,
    /// Tokens evaluated and generated so far (`llamacpp:prompt_tokens_total` plus
    /// `llamacpp:tokens_predicted_total`): a change means the worker was used.
    pub tokens_total: Option<f64>,
    /// Average generation speed (`llamacpp:predicted_tokens_seconds`).
    pub tokens_per_second: Option<f64>,
    /// `llama_decode()` calls so far (`llamacpp:n_decode_total`): while a request is
    /// processed, a count that does not move means no progress.
    pub decodes: Option<f64>,
    /// Tokens a draft model proposed so far
    /// (`llamacpp:spec_decode_num_draft_tokens_total`).
    pub drafted: Option<f64>,
    /// Of those, the tokens the model accepted
    /// (`llamacpp:spec_decode_num_accepted_tokens_total`).
    pub accepted: Option<f64>,
}

impl LlamaMetrics {
    /// The share of drafted tokens the model accepted, once a draft proposed any.
    pub fn draft_acceptance(&self) -> Option<f64> {
        match (self.drafted, self.accepted) {
            (Some(d), Some(a)) if d > 0.0 => Some(a / d),
            _ => None,
        }
    }
}

/// Reads llama-server's Prometheus text; unknown and malformed lines are skipped.
pub fn parse_metrics(text: &str) -> LlamaMetrics {
    let mut m = LlamaMetrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "llamacpp:requests_processing" => m.processing = Some(value),
            "llamacpp:prompt_tokens_total" | "llamacpp:tokens_predicted_total" => {
                m.tokens_total = Some(m.tokens_total.unwrap_or(0.0) + value);
            }
            "llamacpp:predicted_tokens_seconds" => m.tokens_per_second = Some(value),
            "llamacpp:n_decode_total" => m.decodes = Some(value),
            "llamacpp:spec_decode_num_draft_tokens_total" => m.drafted = Some(value),
            "llamacpp:spec_decode_num_accepted_tokens_total" => m.accepted = Some(value),
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::{LlamaMetrics, check_args, parse_metrics};

    fn check(args: &[&str]) -> Result<(), String> {
        check_args(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn extra_arguments_are_an_allow_list() {
        for ok in [
            &["--temp", "0.7", "--top-k", "40"][..],
            &["--temp=0.7", "-fa", "on", "-ctk", "q8_0"],
            &["--flash_attn", "auto", "--jinja", "--no-mmap"],
            &["--seed", "-1", "--rope-freq-scale", "-0.5"],
            &["--embeddings", "--pooling", "mean"],
            &["--chat-template", "chatml", "--reasoning-format", "none"],
            &[],
        ] {
            assert_eq!(check(ok), Ok(()), "{ok:?}");
        }
        for (bad, named) in [
            (&["--log-file", "/home/u/.bashrc"][..], "--log-file"),
            (&["--log_file=/tmp/x"], "--log-file"),
            (&["--slot-save-path", "/tmp"], "--slot-save-path"),
            (&["--rpc", "10.0.0.1:50052"], "--rpc"),
            (&["--lora", "x.gguf"], "--lora"),
            (&["-md", "d.gguf"], "-md"),
            (&["--mmproj-url", "http://x"], "--mmproj-url"),
            (&["-hfr", "a/b"], "-hfr"),
            (&["-hff", "f"], "-hff"),
            (
                &["--chat-template-file", "/etc/shadow"],
                "--chat-template-file",
            ),
            (&["--ssl-key-file", "k"], "--ssl-key-file"),
            (&["--api-prefix", "/x"], "--api-prefix"),
            (&["--path", "/"], "--path"),
            (&["--port", "9"], "--port"),
            (&["--host=0.0.0.0"], "--host"),
            (&["-m", "/etc/passwd"], "-m"),
            (&["--temp", "0.7", "--api-key", "x"], "--api-key"),
            (&["--temp", "--log-file"], "--log-file"),
            (&["-c", "99999"], "preset"),
            (&["--no-mmproj"], "--no-mmproj"),
            (&["positional"], "positional"),
        ] {
            let e = check(bad).expect_err(&format!("{bad:?}"));
            assert!(e.contains(named), "{bad:?}: {e}");
        }
        assert!(check(&["--temp\u{0}"]).is_err());
    }

    #[test]
    fn the_figures_that_matter() {
        let text = "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n\
# TYPE llamacpp:prompt_tokens_total counter\n\
llamacpp:prompt_tokens_total 12\n\
llamacpp:tokens_predicted_total 30\n\
llamacpp:predicted_tokens_seconds 87.5\n\
llamacpp:requests_processing 1\n\
llamacpp:n_decode_total 31\n\
llamacpp:n_busy_slots_per_decode nan\n\
llamacpp:spec_decode_num_draft_tokens_total 40\n\
llamacpp:spec_decode_num_accepted_tokens_total 30\n\
garbage\n";
        assert_eq!(
            parse_metrics(text),
            LlamaMetrics {
                processing: Some(1.0),
                tokens_total: Some(42.0),
                tokens_per_second: Some(87.5),
                decodes: Some(31.0),
                drafted: Some(40.0),
                accepted: Some(30.0),
            }
        );
        assert_eq!(parse_metrics(text).draft_acceptance(), Some(0.75));
        assert_eq!(parse_metrics(""), LlamaMetrics::default());
        assert_eq!(parse_metrics("").draft_acceptance(), None);
    }
}
