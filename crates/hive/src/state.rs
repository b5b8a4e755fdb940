//! What every request handler shares.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
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
    /// The end: the token cancelled at SIGTERM, and every background task.
    pub shutdown: crate::shutdown::Shutdown,
    /// Bounds the downloads running at once.
    pub download_slots: Arc<Semaphore>,
    /// When the daemon started.
    pub started: Instant,
    /// Counters and gauges for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The model list as `GET /v1/models` serves it.
    pub models_cache: ModelsCache,
    /// The worker binaries.
    pub worker_catalog: Arc<worker_catalog::WorkerCatalog>,
    /// Local-build and release vendors for worker binaries.
    pub worker_provisioner: Arc<worker_provisioner::WorkerProvisioner>,
    /// The worker processes.
    pub workers: Arc<crate::workers::Registry>,
    /// The audit log.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Registries reached over plain HTTP, and credentials, for pushes.
    pub oci: model_provisioner::oci::OciConfig,
    /// The client pushes go out with.
    pub http: reqwest::Client,
    /// Held from a pull's room check to its record in the catalog, so two pulls do
    /// not count the same free space.
    pub storage_lock: tokio::sync::Mutex<()>,
    /// What was found wrong with the catalog and done about it (`hive status`).
    pub catalog_health: SharedHealth,
    /// The fleet as this hive sees it, with `--etcd`.
    pub fleet: Option<Arc<crate::fleet::view::Fleet>>,
    /// How to reach etcd, with `--etcd`.
    pub etcd: Option<crate::fleet::etcd::EtcdAccess>,
}

/// The catalog's entries, each already serialized, in id order: a page of
/// `GET /v1/models` is then a copy of bytes, not a query and a serialization. The
/// daemon is the catalog's only writer (one per home), and the catalog's generation
/// moves at each write ([`ModelCatalog::generation`]), so it stays true.
#[derive(Debug, Default)]
pub struct ModelsCache {
    built: Mutex<Option<(u64, Arc<Vec<bytes::Bytes>>)>>,
}

impl ModelsCache {
    /// The entries as of the catalog's `generation` (read before the catalog);
    /// `rebuild` makes them when the catalog changed since they were made.
    pub fn get_or_build(
        &self,
        generation: u64,
        rebuild: impl FnOnce() -> Result<Vec<bytes::Bytes>, crate::error::ApiError>,
    ) -> Result<Arc<Vec<bytes::Bytes>>, crate::error::ApiError> {
        if let Some((g, v)) = self
            .built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && *g == generation
        {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(rebuild()?);
        *self.built.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((generation, Arc::clone(&v)));
        Ok(v)
    }
}

/// The state as handlers get it.
pub type SharedState = Arc<AppState>;

/// A model folder that could not be re-adopted, and why.
pub type Unreadable = (PathBuf, String);

/// What was found wrong with the catalog, and done about it, for `hive status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CatalogHealth {
    /// Where a damaged database was moved, at start.
    pub damaged_moved_to: Option<PathBuf>,
    /// Entries set aside because they could not be read.
    pub quarantined: Vec<artifact_catalog::Quarantined>,
    /// Models re-adopted from their folders.
    pub readopted: Vec<String>,
    /// Folders under `models/` that could not be re-adopted, with why.
    pub unreadable: Vec<Unreadable>,
}

impl CatalogHealth {
    /// Whether anything was wrong.
    pub fn is_clean(&self) -> bool {
        self.damaged_moved_to.is_none()
            && self.quarantined.is_empty()
            && self.readopted.is_empty()
            && self.unreadable.is_empty()
    }
}

/// The catalog's health, shared.
pub type SharedHealth = Arc<Mutex<CatalogHealth>>;
