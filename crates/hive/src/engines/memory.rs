//! The one memory model: what a model needs to run (its weights, and the KV cache at
//! the context its worker really gets), and what each device may give the hive's
//! workers. Admission, spawn, plan and the dashboard all ask here, so one model at
//! one context is one number everywhere.

use model_catalog::ModelEntry;

/// The context a worker gets when the model's preset does not say: llama.cpp's own
/// default would be the model's whole trained context, often 128k tokens, whose KV
/// cache alone can outweigh the model.
pub const DEFAULT_CONTEXT: u64 = 4096;

/// The context a worker of this model is started with: the preset's, else the
/// model's trained context capped at [`DEFAULT_CONTEXT`].
pub fn context_for(model: &ModelEntry) -> u64 {
    let trained = model.gguf.as_ref().and_then(|g| g.context_length);
    model
        .preset
        .context
        .unwrap_or_else(|| trained.unwrap_or(DEFAULT_CONTEXT).min(DEFAULT_CONTEXT))
}

/// What a model needs in memory at one context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    /// The context it is for.
    pub context: u64,
    /// The weights, as stored.
    pub weights_bytes: u64,
    /// An f16 KV cache for the context (llama.cpp shares one cache among its
    /// slots, so the slots do not multiply it); unknown when the header lacks the
    /// attention's shape.
    pub kv_cache_bytes: Option<u64>,
    /// A draft model's weights and cache, when its preset names one.
    #[serde(skip_serializing_if = "is_zero")]
    pub draft_bytes: u64,
    /// A multimodal projector's weights, when one is paired.
    #[serde(skip_serializing_if = "is_zero")]
    pub projector_bytes: u64,
    /// All of them, and never less than the file.
    pub total_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The estimate: weights plus KV cache at `context`, from the GGUF header; the
/// file's size where there is no header or it says less.
pub fn footprint(header: Option<&gguf::Summary>, file_size: u64, context: u64) -> Footprint {
    match header {
        Some(g) => {
            let m = g.memory_estimate(context);
            Footprint {
                context,
                weights_bytes: m.weights_bytes,
                kv_cache_bytes: m.kv_cache_bytes,
                draft_bytes: 0,
                projector_bytes: 0,
                total_bytes: m.total_bytes.max(file_size),
            }
        }
        None => Footprint {
            context,
            weights_bytes: file_size,
            kv_cache_bytes: None,
            draft_bytes: 0,
            projector_bytes: 0,
            total_bytes: file_size,
        },
    }
}

/// What a catalog model needs at the context its worker gets, its draft included
/// (measured when the preset named it).
pub fn of_model(model: &ModelEntry) -> Footprint {
    let mut f = footprint(model.gguf.as_ref(), model.size, context_for(model));
    f.draft_bytes = model.preset.draft_bytes.unwrap_or(0);
    f.projector_bytes = model.projector_in_use().map_or(0, |p| p.size);
    f.total_bytes = f
        .total_bytes
        .saturating_add(f.draft_bytes)
        .saturating_add(f.projector_bytes);
    f
}

/// Where a worker's model is held: system RAM (the CPU, and Metal's unified
/// memory), or one GPU's own memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// The settings a budget comes from (`--ram-budget-bytes`, `--ram-margin-bytes`,
/// `--vram-margin-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Margins {
    /// The RAM the workers may hold together, when set.
    pub ram_budget: Option<u64>,
    /// RAM kept for everything else when the budget is the machine's RAM.
    pub ram_margin: u64,
    /// Memory kept free on each GPU.
    pub vram_margin: u64,
}

/// What the hive's workers may hold on one device, and in words where that comes
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Bytes.
    pub bytes: u64,
    /// Where the figure comes from, for a person.
    pub source: String,
}

/// A device's budget; `None` for a GPU whose memory cannot be read (no NVIDIA
/// driver), which is not gated.
pub fn budget(device: Device, margins: Margins) -> Option<Budget> {
    if let Device::Gpu(i) = device {
        let total = crate::capabilities::gpu_total_memory(i)?;
        return Some(Budget {
            bytes: total.saturating_sub(margins.vram_margin),
            source: format!(
                "GPU {i}'s {} less a margin of {}",
                download::human_bytes(total),
                download::human_bytes(margins.vram_margin)
            ),
        });
    }
    if let Some(bytes) = margins.ram_budget {
        return Some(Budget {
            bytes,
            source: "--ram-budget-bytes".to_owned(),
        });
    }
    let total = ram_total();
    Some(Budget {
        bytes: total.saturating_sub(margins.ram_margin),
        source: format!(
            "this machine's {} of RAM less a margin of {}",
            download::human_bytes(total),
            download::human_bytes(margins.ram_margin)
        ),
    })
}

/// What the device has free now, whoever holds the rest; `None` where it cannot
/// be read.
pub fn free_now(device: Device) -> Option<u64> {
    match device {
        Device::Gpu(i) => crate::capabilities::gpu_free_memory(i),
        Device::Ram => {
            let mut sys = sysinfo::System::new();
            sys.refresh_memory();
            Some(sys.available_memory())
        }
    }
}

/// This machine's RAM.
pub fn ram_total() -> u64 {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.total_memory()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_header_the_file_is_the_estimate() {
        let f = footprint(None, 1000, 4096);
        assert_eq!(
            (f.weights_bytes, f.total_bytes, f.kv_cache_bytes),
            (1000, 1000, None)
        );
    }

    #[test]
    fn a_device_is_ram_for_the_cpu_and_metal_and_a_gpu_otherwise() {
        assert_eq!(Device::of("cpu", 3), Device::Ram);
        assert_eq!(Device::of("metal", 0), Device::Ram);
        assert_eq!(Device::of("cuda", 1), Device::Gpu(1));
        assert_eq!(Device::Gpu(1).to_string(), "GPU 1");
        let b = budget(
            Device::Ram,
            Margins {
                ram_budget: Some(5),
                ram_margin: 0,
                vram_margin: 0,
            },
        );
        assert_eq!(b.map(|b| b.bytes), Some(5));
    }
}
