//! This hive's card, as it publishes it to the fleet: its devices and the room left
//! on them, its models with what each needs here, and its loaded models with their
//! free slots and queues. Memory comes from the one estimate and budget
//! (`engines::memory`, `ops::admission`), the device from the one backend rule.

use std::sync::Arc;

use artifact_catalog::ArtifactStatus;
use model_catalog::ModelEntry;

use crate::engines::ModelKind;
use crate::engines::memory::{self, Device};
use crate::fleet::view::{Card, DeviceCard, LoadedCard, ModelCard};
use crate::gateway::Gateway;
use crate::ops::admission;

/// Free memory is published in steps of this much, so that a worker's resident
/// size moving by a few pages is not a change to publish.
const FREE_STEP: u64 = 64 << 20;

/// The catalog part of the card, kept while the catalog's generation stays.
#[derive(Debug, Default)]
pub struct ModelsPart {
    generation: Option<u64>,
    models: Vec<ModelCard>,
}

/// This hive's card now.
pub async fn build(gateway: &Gateway, id: &str, url: &str, models: &mut ModelsPart) -> Card {
    let hive = &gateway.hive;
    let generation = hive.catalog.generation();
    if models.generation != Some(generation) {
        models.models = model_cards(gateway).await;
        models.generation = Some(generation);
    }
    let mut devices = vec![Device::Ram];
    let gpus = u32::try_from(crate::capabilities::gpus().len()).unwrap_or(0);
    devices.extend((0..gpus).map(Device::Gpu));
    let mut device_cards = Vec::new();
    for device in devices {
        let Some(budget) = memory::budget(device, admission::margins(hive)) else {
            continue;
        };
        let used: u64 = admission::holdings(hive, device)
            .await
            .iter()
            .map(|h| h.bytes)
            .sum();
        let mut free = budget.bytes.saturating_sub(used);
        if let Some(now) = memory::free_now(device) {
            free = free.min(now);
        }
        device_cards.push(DeviceCard {
            name: device.to_string(),
            budget_bytes: budget.bytes,
            free_bytes: free - free % FREE_STEP,
        });
    }
    // per model: slots free and requests in them, over its ready workers; the
    // queue is the requests holding a ticket beyond those
    let mut by_model = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for w in hive.workers.list() {
        if w.state != crate::workers::WorkerState::Ready {
            continue;
        }
        let slots = w.slots_total.unwrap_or(1).max(1);
        let (free, busy) = by_model.entry(w.model_ref).or_default();
        *free += slots.saturating_sub(w.requests_in_flight);
        *busy += w.requests_in_flight;
    }
    let loaded = by_model
        .into_iter()
        .map(|(model, (slots_free, busy))| LoadedCard {
            queue: gateway.tickets.held(&model).saturating_sub(busy),
            model,
            slots_free,
        })
        .collect();
    Card {
        id: id.to_owned(),
        url: url.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        devices: device_cards,
        models: models.models.clone(),
        loaded,
    }
}

async fn model_cards(gateway: &Gateway) -> Vec<ModelCard> {
    let hive = &gateway.hive;
    let catalog = Arc::clone(&hive.catalog);
    let entries: Vec<ModelEntry> = crate::ops::blocking(move || Ok(catalog.list()?))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.artifact)
        .filter(|e| e.status == ArtifactStatus::Available)
        .collect();
    let installed = crate::ops::workers::installed_backends(hive)
        .await
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let device =
                crate::engines::place(crate::engines::Asked::default(), &e.preset, &installed)
                    .map_or(Device::Ram, |p| p.memory_device());
            ModelCard {
                id: e.id.clone(),
                alias: e.alias(),
                sha256: e.sha256.clone(),
                size: e.size,
                kind: ModelKind::served(e.gguf.as_ref(), &e.preset.engine_args)
                    .id()
                    .to_owned(),
                needs_bytes: memory::of_model(e).total_bytes,
                device: device.to_string(),
            }
        })
        .collect()
}
