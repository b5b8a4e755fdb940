//! Admission by memory, per device: one rule for a spawn, a load and the one
//! endpoint. The workers of the hive together may hold a device's budget
//! ([`crate::engines::memory::budget`]), and a new one may take no more than the
//! device has free now. A worker counts what it is measured to hold once it is
//! ready (its RSS; on a GPU, the memory NVML reports for its pid), and its model's
//! estimate ([`crate::engines::memory::of_model`]) while it starts. When a model
//! does not fit, the answer is a [`NoRoom`] that names the numbers and the workers
//! that could go: idle workers of other models on the same device, least recently
//! used first; one with a request in flight, or whose model is pinned, never goes.
//! A spawn refuses with it; the one endpoint stops those workers and asks again.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use model_catalog::ModelEntry;

use crate::engines::memory::{self, Device, Margins};
use crate::error::ApiError;
use crate::state::SharedState;
use crate::workers::{WorkerRecord, WorkerState};

/// How a spawn meets a model that does not fit in its device's budget now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Refuse with a 409 that names what could go (a spawn or a load through the API).
    Refuse,
    /// Stop idle workers of other models, least recently used first, until it fits;
    /// a 503 when none is left to stop (the one endpoint).
    Evict,
    /// Start it anyway (`force`).
    Ignore,
}

impl Room {
    /// `force` as a spawn or a load request says it.
    pub fn forced(force: bool) -> Self {
        if force { Self::Ignore } else { Self::Refuse }
    }
}

/// A worker on the device, what it holds there now, and whether its model is pinned.
#[derive(Debug, Clone)]
pub struct Holding {
    /// The worker.
    pub worker: WorkerRecord,
    /// Bytes it holds (measured once ready; its estimate until then).
    pub bytes: u64,
    /// Whether its model is pinned.
    pub pinned: bool,
}

/// Why a model does not fit on a device now, and what could go to make room.
#[derive(Debug, Clone)]
pub struct NoRoom {
    /// The model.
    pub model: String,
    /// The device.
    pub device: Device,
    /// What the model needs.
    pub need: u64,
    /// The device's budget, in bytes and in words.
    pub budget: memory::Budget,
    /// What the hive's workers hold there now.
    pub used: u64,
    /// What the device has free now (other programs' use included), where it says.
    pub free: Option<u64>,
    /// Who holds it.
    pub holders: Vec<Holding>,
    /// The workers that could be stopped for it, the one to stop first first.
    pub could_go: Vec<WorkerRecord>,
}

impl NoRoom {
    /// The sentence for a person: the numbers, who holds the memory, what could go.
    pub fn message(&self) -> String {
        let holders: Vec<String> = self
            .holders
            .iter()
            .map(|h| {
                let w = &h.worker;
                let busy = if w.requests_in_flight > 0 {
                    format!(", {} request(s) in flight", w.requests_in_flight)
                } else if h.pinned {
                    ", pinned".to_owned()
                } else {
                    String::new()
                };
                format!("{} ({}{busy})", w.model_ref, download::human_bytes(h.bytes))
            })
            .collect();
        let held = if holders.is_empty() {
            "nothing".to_owned()
        } else {
            holders.join(", ")
        };
        let free = self
            .free
            .map(|f| format!("; {} is free on it now", download::human_bytes(f)))
            .unwrap_or_default();
        let could_go = if self.could_go.is_empty() {
            "none of which can be stopped now; retry when one is idle".to_owned()
        } else {
            let ids: Vec<&str> = self.could_go.iter().map(|w| w.id.as_str()).collect();
            format!("idle, and could be stopped: {}", ids.join(", "))
        };
        format!(
            "{} needs about {} of {}; the budget is {} ({}), and {} of it is held by {held}{free}; {could_go}",
            self.model,
            download::human_bytes(self.need),
            self.device,
            download::human_bytes(self.budget.bytes),
            self.budget.source,
            download::human_bytes(self.used),
        )
    }

    /// The refusal as the API answers it: `insufficient_memory`, with `status`.
    pub fn into_error(self, status: StatusCode) -> ApiError {
        ApiError::new(status, "insufficient_memory", self.message())
    }
}

/// The budget's settings from the hive's configuration.
pub fn margins(state: &SharedState) -> Margins {
    Margins {
        ram_budget: state.config.ram_budget_bytes,
        ram_margin: state.config.ram_margin_bytes,
        vram_margin: state.config.vram_margin_bytes,
    }
}

/// Each live worker on `device`, what it holds there now, and whether its model is
/// pinned.
pub async fn holdings(state: &SharedState, device: Device) -> Vec<Holding> {
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
                let need = memory::of_model(&r.artifact).total_bytes;
                out.insert(id, (need, r.artifact.preset.pinned));
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
            let bytes = match (&w.state, rss) {
                (WorkerState::Ready, Some(rss)) => rss,
                (_, rss) => estimate.max(rss.unwrap_or(0)),
            };
            Holding {
                worker: w,
                bytes,
                pinned,
            }
        })
        .collect()
}

/// Whether `model` fits on `device` now: within the budget with what the workers
/// there hold, and within what the device has free. A device that cannot be
/// measured is not gated.
pub async fn fit(state: &SharedState, model: &ModelEntry, device: Device) -> Result<(), NoRoom> {
    let need = memory::of_model(model).total_bytes;
    let Some(budget) = memory::budget(device, margins(state)) else {
        tracing::debug!("{device} cannot be measured; {} is not gated", model.id);
        return Ok(());
    };
    let holders = holdings(state, device).await;
    let used: u64 = holders.iter().map(|h| h.bytes).sum();
    let free = memory::free_now(device);
    let within_budget = used.saturating_add(need) <= budget.bytes;
    let within_free = free.is_none_or(|f| need <= f);
    if within_budget && within_free {
        return Ok(());
    }
    let mut could_go: Vec<&Holding> = holders
        .iter()
        .filter(|h| h.worker.model_ref != model.id && h.worker.requests_in_flight == 0 && !h.pinned)
        .collect();
    could_go.sort_by_key(|h| h.worker.last_activity.unwrap_or(h.worker.started_at));
    let could_go = could_go.into_iter().map(|h| h.worker.clone()).collect();
    Err(NoRoom {
        model: model.id.clone(),
        device,
        need,
        budget,
        used,
        free,
        holders,
        could_go,
    })
}

/// Makes room for `model` on `device`, stopping the workers that could go least
/// recently used first, until it fits; the last [`NoRoom`] when none is left.
pub async fn make_room(
    state: &SharedState,
    model: &ModelEntry,
    device: Device,
) -> Result<(), NoRoom> {
    loop {
        let no_room = match fit(state, model, device).await {
            Ok(()) => return Ok(()),
            Err(n) => n,
        };
        let Some(victim) = no_room.could_go.first() else {
            return Err(no_room);
        };
        let bytes = no_room
            .holders
            .iter()
            .find(|h| h.worker.id == victim.id)
            .map_or(0, |h| h.bytes);
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
        let _ = state.workers.stop(&victim.id).await;
    }
}

/// Admits `model` on `device` as `room` says: refused with a 409 when it does not
/// fit, or made room for (a 503 when nothing is left to stop), or not checked. What
/// it was admitted with is its footprint, the one estimate's.
pub async fn admit(
    state: &SharedState,
    model: &ModelEntry,
    device: Device,
    room: Room,
) -> Result<memory::Footprint, ApiError> {
    match room {
        Room::Ignore => {}
        Room::Refuse => fit(state, model, device)
            .await
            .map_err(|n| n.into_error(StatusCode::CONFLICT))?,
        Room::Evict => make_room(state, model, device)
            .await
            .map_err(|n| n.into_error(StatusCode::SERVICE_UNAVAILABLE))?,
    }
    Ok(memory::of_model(model))
}
