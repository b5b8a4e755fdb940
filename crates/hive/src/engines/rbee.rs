//! What is particular to our own worker, `llm-worker-rbee`: the architectures it
//! runs and its command line.

use std::time::Duration;

use super::SpawnPlan;

/// The architectures `llm-worker-rbee` runs (as `llm_worker::SUPPORTED_ARCHITECTURES`).
pub const ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

/// Whether it runs a model of this architecture.
pub fn runs(architecture: &str) -> bool {
    ARCHITECTURES.contains(&architecture)
}

/// Its command line: id, model, port, device, threads, slots when the preset says,
/// the stall limit, and the hive to report to.
pub fn args(plan: &SpawnPlan, port: u16, stall: Duration, hive_url: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--worker-id".to_owned(),
        plan.id.clone(),
        "--model".to_owned(),
        plan.model_path.display().to_string(),
        "--port".to_owned(),
        port.to_string(),
        "--device".to_owned(),
        plan.device.to_string(),
        "--threads".to_owned(),
        plan.threads.to_string(),
    ];
    if let Some(n) = plan.slots {
        args.extend(["--slots".to_owned(), n.to_string()]);
    }
    args.extend(["--stall-secs".to_owned(), stall.as_secs().to_string()]);
    if let Some(hive) = hive_url {
        args.extend(["--hive-url".to_owned(), hive.to_owned()]);
    }
    args
}
