//! What is particular to llama.cpp's `llama-server` as a worker: its command line, and
//! what its `/metrics` says (slots in use, tokens generated, speed).

use crate::workers::SpawnPlan;

/// The parallel slots a llama-server worker gets (`-np`).
pub const SLOTS: u64 = 1;

/// llama-server's command line: the model, loopback and the port, the context, one
/// slot, every layer on the GPU for a GPU backend (none on the CPU), the device, the
/// model's id as its alias, metrics and the model's own chat template.
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
    args.extend(plan.engine_args.iter().cloned());
    args
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
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::{LlamaMetrics, parse_metrics};

    #[test]
    fn the_figures_that_matter() {
        let text = "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n\
# TYPE llamacpp:prompt_tokens_total counter\n\
llamacpp:prompt_tokens_total 12\n\
llamacpp:tokens_predicted_total 30\n\
llamacpp:predicted_tokens_seconds 87.5\n\
llamacpp:requests_processing 1\n\
llamacpp:n_busy_slots_per_decode nan\n\
garbage\n";
        assert_eq!(
            parse_metrics(text),
            LlamaMetrics {
                processing: Some(1.0),
                tokens_total: Some(42.0),
                tokens_per_second: Some(87.5),
            }
        );
        assert_eq!(parse_metrics(""), LlamaMetrics::default());
    }
}
