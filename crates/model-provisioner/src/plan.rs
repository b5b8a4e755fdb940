//! A look at a model before it is fetched: its GGUF header, read where the model
//! lies with `Range` requests, a window that starts small and grows only while the
//! metadata runs past it (a 150k-token vocabulary takes several MiB).

use artifact_catalog::provision::{ArtifactProvisioner, ProvisionError, Resolved};
use model_catalog::ModelEntry;

/// The first window read.
pub const FIRST_WINDOW: u64 = 2 << 20;
/// The largest header read: a header past this is refused, not read on.
pub const MAX_HEADER: u64 = 128 << 20;

/// What a model's header says, and what reading it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The GGUF summary.
    pub summary: gguf::Summary,
    /// The bytes fetched to read it.
    pub bytes_read: u64,
    /// The requests made.
    pub requests: u32,
    /// The first file's size, when its source said.
    pub file_size: Option<u64>,
}

/// Reads the GGUF header of a resolved model's first file, fetching nothing past
/// it but the rest of the last window.
pub async fn read_header<P: ArtifactProvisioner<ModelEntry> + ?Sized>(
    provisioner: &P,
    resolved: &Resolved<ModelEntry>,
) -> Result<Header, ProvisionError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut window = FIRST_WINDOW;
    let mut requests = 0;
    let mut file_size = None;
    loop {
        let start = buf.len() as u64;
        let part = provisioner
            .read_range(resolved, start, window - start)
            .await?;
        requests += 1;
        file_size = file_size.or(part.total);
        let at_end = (part.bytes.len() as u64) < window - start;
        buf.extend_from_slice(&part.bytes);
        match gguf::read_bytes(&buf, &gguf::ReadOptions::default()) {
            Ok(g) => {
                return Ok(Header {
                    summary: g.summary(),
                    bytes_read: buf.len() as u64,
                    requests,
                    file_size,
                });
            }
            Err(e) if e.is_truncation() && !at_end && window < MAX_HEADER => {
                window = (window * 2).min(MAX_HEADER);
            }
            Err(e) if e.is_truncation() && !at_end => {
                return Err(ProvisionError::Invalid(format!(
                    "{}: the GGUF header runs past {} MiB; not read further",
                    resolved.id,
                    MAX_HEADER >> 20
                )));
            }
            Err(e) => {
                return Err(ProvisionError::Invalid(format!(
                    "{} is not a GGUF model file: {e}",
                    resolved.id
                )));
            }
        }
    }
}
