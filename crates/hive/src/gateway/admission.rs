//! Admission by memory, per device. The workers of the hive together may hold the
//! RAM budget (`--ram-budget-bytes`, else the machine's RAM less
//! `--ram-margin-bytes`), and the workers on each GPU that GPU's budget (its total
//! less `--vram-margin-bytes`, where NVML can tell; a GPU it cannot measure is not
//! gated). A worker counts what it is measured to hold once it is ready (its RSS;
//! on a GPU, the memory NVML reports for its pid), and its model's estimate (weights
//! plus the KV cache at the context it gets) while it starts. A load that does not
//! fit stops idle workers of other models on the same device, least recently used
//! first; one with a request in flight, or whose model is pinned, is never stopped.
//! If it still does not fit, the answer is a 503 that says what it needs and who
//! holds what.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use model_catalog::ModelEntry;

use super::GatewayError;
use crate::state::SharedState;
use crate::workers::{WorkerRecord, WorkerState};

/// The context the estimate assumes: what a worker allocates at most.
const CONTEXT: u64 = 4096;

/// What a model needs to run: its weights and a KV cache of 4096 tokens (or
/// its trained context, when shorter); its file's size when the header says less.
pub fn estimate(model: &ModelEntry) -> u64 {
    model.gguf.as_ref().map_or(model.size, |g| {
        let ctx = model
            .preset
            .context
            .unwrap_or_else(|| g.context_length.unwrap_or(CONTEXT).min(CONTEXT));
        g.memory_estimate(ctx).total_bytes.max(model.size)
    })
}

/// Where a worker's model is held: system RAM (the CPU, and Metal's unified
/// memory), or one GPU's own memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// System RAM.
    Ram,
    /// The GPU of this index.
    Gpu(u32),
}

impl Device {
    /// The device a worker of this backend (`cpu`, `cuda`, ...) and index uses.
    pub fn of(backend: &str, index: u32) -> Self {
        match backend {
            "cpu" | "metal" => Self::Ram,
            _ => Self::Gpu(index),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ram => f.write_str("RAM"),
            Self::Gpu(i) => write!(f, "GPU {i}"),
        }
    }
}

/// The device's budget, and in words where it comes from; None for a GPU whose
/// memory cannot be read (no NVIDIA driver), which is not gated.
fn budget(state: &SharedState, device: Device) -> Option<(u64, String)> {
    if let Device::Gpu(i) = device {
        let total = crate::capabilities::gpu_total_memory(i)?;
        let margin = state.config.vram_margin_bytes;
        return Some((
            total.saturating_sub(margin),
            format!(
                "GPU {i}'s {} less a margin of {}",
                download::human_bytes(total),
                download::human_bytes(margin)
            ),
        ));
    }
    if let Some(b) = state.config.ram_budget_bytes {
        return Some((b, "--ram-budget-bytes".to_owned()));
    }
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let total = sys.total_memory();
    let margin = state.config.ram_margin_bytes;
    Some((
        total.saturating_sub(margin),
        format!(
            "this machine's {} of RAM less a margin of {}",
            download::human_bytes(total),
            download::human_bytes(margin)
        ),
    ))
}

/// Each live worker on `device`, what it holds there now, and whether its model is
/// pinned.
async fn holdings(state: &SharedState, device: Device) -> Vec<(WorkerRecord, u64, bool)> {
    let live: Vec<WorkerRecord> = state
        .workers
        .list()
        .into_iter()
        .filter(|w| w.state.is_live() && Device::of(&w.backend, w.device) == device)
        .collect();
    let on_gpu = match device {
        Device::Gpu(i) => Some(crate::capabilities::gpu_memory_by_pid(i)),
        Device::Ram => None,
    };
    let catalog = Arc::clone(&state.catalog);
    let models: Vec<String> = live.iter().map(|w| w.model_ref.clone()).collect();
    let estimates: HashMap<String, (u64, bool)> = crate::ops::blocking(move || {
        let mut out = HashMap::new();
        for id in models {
            if let Some(r) = catalog.get(&id)? {
                out.insert(id, (estimate(&r.artifact), r.artifact.preset.pinned));
            }
        }
        Ok(out)
    })
    .await
    .unwrap_or_default();
    let pids: Vec<sysinfo::Pid> = live
        .iter()
        .filter_map(|w| w.pid)
        .map(sysinfo::Pid::from_u32)
        .collect();
    let mut sys = sysinfo::System::new();
    sys.refresh_processes_specifics(
        sysinfo::ProcessesToUpdate::Some(&pids),
        true,
        sysinfo::ProcessRefreshKind::nothing().with_memory(),
    );
    live.into_iter()
        .map(|w| {
            let (estimate, pinned) = estimates.get(&w.model_ref).copied().unwrap_or((0, false));
            let rss = match &on_gpu {
                Some(by_pid) => w.pid.and_then(|p| by_pid.get(&p).copied()),
                None => w
                    .pid
                    .and_then(|p| sys.process(sysinfo::Pid::from_u32(p)))
                    .map(sysinfo::Process::memory),
            };
            // measured once ready; until then what it is about to take
            let held = match (&w.state, rss) {
                (WorkerState::Ready, Some(rss)) => rss,
                (_, rss) => estimate.max(rss.unwrap_or(0)),
            };
            (w, held, pinned)
        })
        .collect()
}

/// The worker to stop for `model_id`: of another model, idle, not pinned, used least
/// recently.
fn victim(held: &[(WorkerRecord, u64, bool)], model_id: &str) -> Option<(WorkerRecord, u64)> {
    held.iter()
        .filter(|(w, _, pinned)| w.model_ref != model_id && w.requests_in_flight == 0 && !pinned)
        .min_by_key(|(w, _, _)| w.last_activity.unwrap_or(w.started_at))
        .map(|(w, b, _)| (w.clone(), *b))
}

async fn stop(state: &SharedState, victim: &WorkerRecord, bytes: u64, model: &ModelEntry) {
    tracing::info!(
        worker = %victim.id,
        model = %victim.model_ref,
        held = bytes,
        "evicting the least recently used idle worker to load {}",
        model.id
    );
    state
        .metrics
        .evictions
        .get_or_create(&crate::metrics::ModelLabel {
            model: victim.model_ref.clone(),
        })
        .inc();
    let _ = crate::ops::workers::stop(state, &victim.id).await;
}

/// Stops one idle worker on `device` to make room for `model`, whatever the budget
/// says (the machine itself may be short); false when none can be stopped.
pub async fn evict_one(state: &SharedState, model: &ModelEntry, device: Device) -> bool {
    let held = holdings(state, device).await;
    match victim(&held, &model.id) {
        Some((w, bytes)) => {
            stop(state, &w, bytes, model).await;
            true
        }
        None => false,
    }
}

/// Makes room for `model` within `device`'s budget, stopping idle workers of other
/// models there least recently used first; a 503 when what is left is busy or
/// pinned.
pub async fn make_room(
    state: &SharedState,
    model: &ModelEntry,
    device: Device,
) -> Result<(), GatewayError> {
    let need = estimate(model);
    loop {
        let Some((budget, from)) = budget(state, device) else {
            tracing::debug!("{device} cannot be measured; {} is not gated", model.id);
            return Ok(());
        };
        let held = holdings(state, device).await;
        let used: u64 = held.iter().map(|(_, b, _)| b).sum();
        if used.saturating_add(need) <= budget {
            return Ok(());
        }
        let Some((w, bytes)) = victim(&held, &model.id) else {
            let holders: Vec<String> = held
                .iter()
                .map(|(w, b, pinned)| {
                    let busy = if w.requests_in_flight > 0 {
                        format!(", {} request(s) in flight", w.requests_in_flight)
                    } else if *pinned {
                        ", pinned".to_owned()
                    } else {
                        String::new()
                    };
                    format!("{} ({}{busy})", w.model_ref, download::human_bytes(*b))
                })
                .collect();
            return Err(GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "insufficient_memory",
                format!(
                    "{} needs about {} of {device}; the budget is {} ({from}), and {} of it is held by {}, none of which can be stopped now; retry when one is idle",
                    model.id,
                    download::human_bytes(need),
                    download::human_bytes(budget),
                    download::human_bytes(used),
                    if holders.is_empty() {
                        "nothing".to_owned()
                    } else {
                        holders.join(", ")
                    }
                ),
            ));
        };
        stop(state, &w, bytes, model).await;
    }
}
