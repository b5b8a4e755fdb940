//! Fit before fetch (`POST /v1/models/plan`, `rbee models pull --dry-run`): a model's
//! GGUF header read where it lies with a few `Range` requests, and what fetching and
//! running it would take here: disk against the quota and the free space (with the
//! models a pull would evict), memory at several contexts (the one estimate,
//! [`crate::engines::memory`]) against the RAM's and each GPU's budget, and the
//! installed engines that can run it. Nothing is recorded or fetched.

use std::sync::Arc;
use std::time::Duration;

use artifact_catalog::ArtifactStatus;
use axum::http::StatusCode;
use provisioning::{ArtifactProvisioner as _, ProvisionRequest};
use serde_json::{Value, json};

use crate::engines::memory::{self, Device};
use crate::error::ApiError;
use crate::ops::blocking;
use crate::ops::storage::plan_room;
use crate::state::SharedState;

/// How long resolving and reading the header may take.
const PLAN_TIMEOUT: Duration = Duration::from_secs(60);
/// The contexts memory is worked out at (those past the model's own are left out).
const CONTEXTS: [u64; 4] = [2048, 8192, 32768, 131_072];
/// The most contexts one plan works out, and the largest.
const MAX_CONTEXTS: usize = 16;
const MAX_CONTEXT: u64 = 1 << 24;

/// The fit check of one reference, with memory at `contexts` (none: some below the
/// model's own, and its own).
pub async fn plan(
    state: &SharedState,
    reference: &str,
    contexts: &[u64],
) -> Result<Value, ApiError> {
    if contexts.len() > MAX_CONTEXTS || contexts.iter().any(|&c| c == 0 || c > MAX_CONTEXT) {
        return Err(ApiError::bad_request(
            "invalid_context",
            format!("contexts: at most {MAX_CONTEXTS}, each from 1 to {MAX_CONTEXT} tokens"),
        ));
    }
    let request = ProvisionRequest::new(reference.trim());
    let work = async {
        let resolved = state.provisioner.resolve(&request).await?;
        let header = model_provisioner::plan::read_header(&*state.provisioner, &resolved).await?;
        Ok::<_, ApiError>((resolved, header))
    };
    let (resolved, header) = tokio::time::timeout(PLAN_TIMEOUT, work)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("planning {reference} took too long"),
            )
        })??;
    let mut entry = resolved.plan;
    if entry.size == 0 {
        // a plain URL's size comes with its first range
        entry.size = header.file_size.unwrap_or(0);
    }
    let summary = header.summary;

    let s = Arc::clone(state);
    let e = entry.clone();
    let (room, in_catalog) = blocking(move || {
        let existing = s.catalog.get(&e.id)?;
        Ok((plan_room(&s, &e)?, existing.map(|r| r.artifact.status)))
    })
    .await?;
    let available = matches!(in_catalog, Some(ArtifactStatus::Available));

    // memory at the contexts asked for, else at the model's own and some below it
    let trained = summary.context_length.unwrap_or(4096);
    let contexts: Vec<u64> = if contexts.is_empty() {
        let mut c: Vec<u64> = CONTEXTS.iter().copied().filter(|&c| c < trained).collect();
        c.push(trained);
        c
    } else {
        contexts.to_vec()
    };
    let ram_total = memory::ram_total();
    let margins = crate::ops::admission::margins(state);
    let ram_budget = memory::budget(Device::Ram, margins).map_or(ram_total, |b| b.bytes);
    let gpus = crate::capabilities::gpus();
    let gpu_budgets: Vec<(Value, Option<u64>)> = gpus
        .iter()
        .map(|g| {
            let index = g["index"].as_u64().and_then(|i| u32::try_from(i).ok());
            let budget = index.and_then(|i| memory::budget(Device::Gpu(i), margins));
            (g["index"].clone(), budget.map(|b| b.bytes))
        })
        .collect();
    let memory: Vec<Value> = contexts
        .iter()
        .map(|&ctx| {
            let m = memory::footprint(Some(&summary), entry.size, ctx);
            json!({
                "context": ctx,
                "weights_bytes": m.weights_bytes,
                "kv_cache_bytes": m.kv_cache_bytes,
                "total_bytes": m.total_bytes,
                "fits_ram": m.total_bytes <= ram_budget,
                "fits_gpus": gpu_budgets.iter().map(|(index, budget)| json!({
                    "index": index,
                    "fits": budget.map(|b| m.total_bytes <= b),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();

    let arch = summary.architecture.clone().unwrap_or_default();
    let catalog = Arc::clone(&state.worker_catalog);
    let binaries = blocking(move || Ok(catalog.list()?)).await?;
    let engines: Vec<Value> = binaries
        .iter()
        .map(|r| &r.artifact)
        .filter(|b| b.status == ArtifactStatus::Available)
        .map(|b| {
            let why = crate::engines::runs(b.engine, &arch).err();
            let runs = why.is_none();
            json!({
                "id": b.id,
                "engine": b.engine.as_str(),
                "backend": b.worker_type.backend(),
                "runs_it": runs,
                "why_not": why,
            })
        })
        .collect();

    Ok(json!({
        "id": entry.id,
        "reference": reference.trim(),
        "in_catalog": in_catalog.as_ref().map(ArtifactStatus::name),
        "architecture": summary.architecture,
        "name": summary.name,
        "parameter_count": summary.parameter_count,
        "quantization": summary.quantization,
        "context_length": summary.context_length,
        "size_bytes": entry.size,
        "files": entry.files().len(),
        "header": {"bytes_read": header.bytes_read, "requests": header.requests},
        "gguf": summary,
        "disk": if available { json!({"needed_bytes": 0, "fits": true, "evict": [], "already_here": true}) } else { json!(room) },
        "memory": {
            "ram_total_bytes": ram_total,
            "ram_budget_bytes": ram_budget,
            "gpus": gpus.iter().map(|g| json!({"index": g["index"], "name": g["name"], "memory_total_bytes": g["memory_total_bytes"]})).collect::<Vec<_>>(),
            "by_context": memory,
        },
        "engines": engines,
    }))
}
