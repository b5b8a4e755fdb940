//! What this machine has: CPU, RAM, GPUs (through NVML, when an NVIDIA driver is
//! there; none is not an error), free disk.

use std::path::Path;
use std::sync::OnceLock;

use nvml_wrapper::Nvml;
use serde_json::{Value, json};

/// NVML, loaded once; `None` without an NVIDIA driver.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match Nvml::init() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!("no NVIDIA GPUs: {e}");
            None
        }
    })
    .as_ref()
}

/// Each GPU: index, name, memory, utilization.
pub fn gpus() -> Vec<Value> {
    let Some(nvml) = nvml() else {
        return Vec::new();
    };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let mem = d.memory_info().ok();
            Some(json!({
                "index": i,
                "vendor": "nvidia",
                "name": d.name().ok(),
                "uuid": d.uuid().ok(),
                "memory_total_bytes": mem.as_ref().map(|m| m.total),
                "memory_free_bytes": mem.as_ref().map(|m| m.free),
                "utilization_percent": d.utilization_rates().ok().map(|u| u.gpu),
                "compute_capability": d.cuda_compute_capability().ok().map(|c| format!("{}.{}", c.major, c.minor)),
            }))
        })
        .collect()
}

/// Free memory of one GPU, when NVML can tell.
pub fn gpu_free_memory(index: u32) -> Option<u64> {
    nvml()?
        .device_by_index(index)
        .ok()?
        .memory_info()
        .ok()
        .map(|m| m.free)
}

/// Total memory of one GPU, when NVML can tell.
pub fn gpu_total_memory(index: u32) -> Option<u64> {
    nvml()?
        .device_by_index(index)
        .ok()?
        .memory_info()
        .ok()
        .map(|m| m.total)
}

/// GPU memory each process uses on one GPU, by pid, as NVML reports it (empty when
/// it cannot tell).
pub fn gpu_memory_by_pid(index: u32) -> std::collections::HashMap<u32, u64> {
    use nvml_wrapper::enums::device::UsedGpuMemory;
    let Some(device) = nvml().and_then(|n| n.device_by_index(index).ok()) else {
        return std::collections::HashMap::new();
    };
    device
        .running_compute_processes()
        .unwrap_or_default()
        .into_iter()
        .chain(device.running_graphics_processes().unwrap_or_default())
        .filter_map(|p| match p.used_gpu_memory {
            UsedGpuMemory::Used(b) => Some((p.pid, b)),
            UsedGpuMemory::Unavailable => None,
        })
        .collect()
}

/// The whole picture, for `GET /v1/capabilities` and announcements.
pub fn capabilities(home: &Path) -> Value {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let cpu_model = sys.cpus().first().map(|c| c.brand().trim().to_owned());
    let free_disk = download::available_space(home).ok();
    json!({
        "hostname": sysinfo::System::host_name(),
        "cpu": {
            "model": cpu_model,
            "logical_cores": sys.cpus().len(),
            "physical_cores": sysinfo::System::physical_core_count(),
        },
        "ram": {"total_bytes": sys.total_memory(), "available_bytes": sys.available_memory()},
        "gpus": gpus(),
        "disk": {"path": home, "free_bytes": free_disk},
    })
}
