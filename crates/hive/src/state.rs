//! What every request handler shares.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use model_catalog::{ModelCatalog, ModelEntry};
use model_provisioner::MultiVendorProvisioner;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::jobs::Jobs;

/// The daemon's state.
#[derive(Debug)]
pub struct AppState {
    /// The configuration it started with.
    pub config: Config,
    /// `RBEE_HOME`.
    pub home: PathBuf,
    /// The model catalog.
    pub catalog: Arc<ModelCatalog>,
    /// Hugging Face, HTTP and local vendors.
    pub provisioner: Arc<MultiVendorProvisioner<ModelEntry>>,
    /// Jobs.
    pub jobs: Jobs,
    /// Bounds the downloads running at once.
    pub download_slots: Arc<Semaphore>,
    /// When the daemon started.
    pub started: Instant,
    /// Counters and gauges for `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

/// The state as handlers get it.
pub type SharedState = Arc<AppState>;
