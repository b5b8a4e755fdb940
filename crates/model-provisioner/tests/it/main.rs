//! The vendors against a Hugging Face test server on loopback and real files.
#![allow(clippy::unwrap_used)]

mod hf;
mod local_and_http;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model_catalog::ModelEntry;
use model_provisioner::{HubConfig, MultiVendorProvisioner, ProvisionContext, ProvisionReporter};

pub fn fixture(name: &str) -> Vec<u8> {
    fs_err::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../gguf/tests/fixtures")
            .join(name),
    )
    .unwrap()
}

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gguf/tests/fixtures")
        .join(name)
}

pub fn provisioner(
    home: &Path,
    endpoint: &str,
    token: Option<&str>,
    offline: bool,
) -> MultiVendorProvisioner<ModelEntry> {
    let hub = HubConfig {
        endpoint: endpoint.parse().unwrap(),
        token: token.map(str::to_owned),
        offline,
        mirror: None,
        cache_layout: None,
    };
    let config = download::DownloadConfig {
        connections: 4,
        min_part_size: 64 << 10,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..download::DownloadConfig::default()
    };
    model_provisioner::model_provisioner(
        home,
        hub,
        model_provisioner::oci::OciConfig::default(),
        download::Downloader::new(config).unwrap(),
    )
}

/// The plan's header read of `reference`: resolved, then read where it lies.
pub async fn read_header(
    p: &MultiVendorProvisioner<ModelEntry>,
    reference: &str,
) -> Result<model_provisioner::plan::Header, model_provisioner::ProvisionError> {
    use model_provisioner::ArtifactProvisioner as _;
    let resolved = p
        .resolve(&model_provisioner::ProvisionRequest::new(reference))
        .await?;
    model_provisioner::plan::read_header(p, &resolved).await
}

#[derive(Debug, Default)]
pub struct Recorder {
    pub narration: Mutex<Vec<String>>,
    pub last: Mutex<Option<(u64, Option<u64>)>>,
}

impl ProvisionReporter for Recorder {
    fn narrate(&self, _action: &str, message: &str) {
        self.narration.lock().unwrap().push(message.to_owned());
    }
    fn progress(&self, done: u64, total: Option<u64>, _: f64, _: Option<f64>) {
        *self.last.lock().unwrap() = Some((done, total));
    }
}

pub fn ctx() -> (ProvisionContext, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (
        ProvisionContext {
            reporter: rec.clone(),
            cancel: tokio_util::sync::CancellationToken::new(),
        },
        rec,
    )
}
