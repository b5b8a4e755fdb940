//! Vendors for worker binaries, one module each, behind one [`WorkerProvisioner`]:
//! - [`LocalBuildVendor`] (`local:cpu`, `local:cuda`, `local:metal`) builds our own
//!   `llm-worker-rbee` from this workspace with cargo;
//! - [`LlamaBuildVendor`] (`llama.cpp:cpu@/path/to/llama.cpp`) builds llama.cpp's
//!   `llama-server` from a source tree with cmake;
//! - [`ReleaseVendor`] downloads a release archive of either engine through the
//!   download engine (a sha256 is mandatory) and unpacks only the executable and the
//!   shared libraries it loads;
//! - [`ExistingBinaryVendor`] (`file:/usr/bin/llama-server`) registers a binary
//!   already on the machine where it lies.
//!
//! An installed binary ends up as `workers/<id>/<executable>` (see [`install`]), and
//! the hive records it in the worker catalog.
#![deny(missing_docs)]

mod archive;
mod build_progress;
mod cargo_build;
mod cmake_build;
mod existing;
mod install;
mod release;

pub use cargo_build::{LocalBuildVendor, cargo_features};
pub use cmake_build::LlamaBuildVendor;
pub use existing::{ExistingBinaryVendor, parse_devices, parse_version, run as ask_binary};
pub use install::{STAGING_DIR, install};
pub use release::{ArchiveName, ReleaseVendor, parse_archive_name, parse_llama_archive_name};

use async_trait::async_trait;
use provisioning::{
    ArtifactProvisioner, ProvisionContext, ProvisionError, ProvisionRequest, Resolved, VendorSource,
};
use worker_catalog::WorkerBinary;

/// The name cargo gives the worker's executable.
pub const CARGO_BINARY: &str = "llm-worker-rbee";

/// Every vendor: a reference goes to the one that takes it; a resolved binary goes
/// back to the one that resolved it (its [`Resolved::vendor`] says which).
#[derive(Debug, Clone)]
pub struct WorkerProvisioner {
    local: LocalBuildVendor,
    cmake: LlamaBuildVendor,
    release: ReleaseVendor,
    existing: ExistingBinaryVendor,
}

/// Every vendor, as one provisioner; llama.cpp builds install where `local`'s do.
pub fn worker_provisioner(local: LocalBuildVendor, release: ReleaseVendor) -> WorkerProvisioner {
    WorkerProvisioner {
        cmake: LlamaBuildVendor {
            workers_dir: local.workers_dir.clone(),
        },
        local,
        release,
        existing: ExistingBinaryVendor,
    }
}

impl WorkerProvisioner {
    fn vendors(&self) -> [&dyn VendorSource<WorkerBinary>; 4] {
        [&self.local, &self.cmake, &self.release, &self.existing]
    }

    fn by_reference(
        &self,
        reference: &str,
    ) -> Result<&dyn VendorSource<WorkerBinary>, ProvisionError> {
        let vendors = self.vendors();
        vendors
            .into_iter()
            .find(|v| v.info().takes(reference))
            .ok_or_else(|| ProvisionError::Unsupported {
                reference: reference.to_owned(),
                known: vendors.map(|v| v.info().forms).join(", "),
            })
    }
}

#[async_trait]
impl ArtifactProvisioner<WorkerBinary> for WorkerProvisioner {
    fn supports(&self, reference: &str) -> bool {
        self.by_reference(reference).is_ok()
    }

    async fn resolve(
        &self,
        request: &ProvisionRequest,
    ) -> Result<Resolved<WorkerBinary>, ProvisionError> {
        self.by_reference(&request.reference)?
            .resolve(request)
            .await
    }

    async fn fetch(
        &self,
        resolved: Resolved<WorkerBinary>,
        ctx: &ProvisionContext,
    ) -> Result<WorkerBinary, ProvisionError> {
        let vendor = self
            .vendors()
            .into_iter()
            .find(|v| v.info().name == resolved.vendor)
            .ok_or_else(|| {
                ProvisionError::Invalid(format!(
                    "{} was resolved by no vendor of worker binaries ({:?})",
                    resolved.id, resolved.vendor
                ))
            })?;
        vendor.fetch(resolved, ctx).await
    }
}
