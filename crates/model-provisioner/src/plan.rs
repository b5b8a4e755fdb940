//! A look at a model before it is fetched: its GGUF header, read where the model
//! lies with `Range` requests, a window that starts small and grows only while the
//! metadata runs past it (a 150k-token vocabulary takes several MiB). A split model's
//! every shard's header is read: the first holds the metadata, each its own tensors.

use model_catalog::ModelEntry;
use provisioning::{ArtifactProvisioner, ProvisionError, Resolved};

/// The first window read.
pub const FIRST_WINDOW: u64 = 2 << 20;
/// The largest header read: a header past this is refused, not read on.
pub const MAX_HEADER: u64 = 128 << 20;

/// What a model's header says, and what reading it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The GGUF summary of the whole model.
    pub summary: gguf::Summary,
    /// The bytes fetched to read it, over every file.
    pub bytes_read: u64,
    /// The requests made.
    pub requests: u32,
    /// The first file's size, when its source said.
    pub file_size: Option<u64>,
}

/// Reads the GGUF headers of a resolved model's files (its shards, else its one
/// file), fetching nothing past each but the rest of its last window.
pub async fn read_header<P: ArtifactProvisioner<ModelEntry> + ?Sized>(
    provisioner: &P,
    resolved: &Resolved<ModelEntry>,
) -> Result<Header, ProvisionError> {
    let files = resolved.plan.shards.len().max(1);
    let mut headers = Vec::with_capacity(files);
    let mut bytes_read = 0;
    let mut requests = 0;
    let mut file_size = None;
    for file in 0..files {
        let one = read_one(provisioner, resolved, file).await?;
        bytes_read += one.bytes_read;
        requests += one.requests;
        if file == 0 {
            file_size = one.file_size;
        }
        headers.push(one.gguf);
    }
    let summary = gguf::summary_of_shards(&headers)
        .map_err(|e| ProvisionError::Invalid(format!("{}: {e}", resolved.id)))?;
    Ok(Header {
        summary,
        bytes_read,
        requests,
        file_size,
    })
}

/// One file's header, and what reading it cost.
struct OneHeader {
    gguf: gguf::Gguf,
    bytes_read: u64,
    requests: u32,
    file_size: Option<u64>,
}

async fn read_one<P: ArtifactProvisioner<ModelEntry> + ?Sized>(
    provisioner: &P,
    resolved: &Resolved<ModelEntry>,
    file: usize,
) -> Result<OneHeader, ProvisionError> {
    // a shard's errors name the shard
    let name = match file {
        1.. => format!(
            "{} (shard {} of {})",
            resolved.id,
            file + 1,
            resolved.plan.shards.len()
        ),
        _ => resolved.id.clone(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut window = FIRST_WINDOW;
    let mut requests = 0;
    let mut file_size = None;
    loop {
        let start = buf.len() as u64;
        let part = provisioner
            .read_range(resolved, file, start, window - start)
            .await?;
        requests += 1;
        file_size = file_size.or(part.total);
        let at_end = (part.bytes.len() as u64) < window - start;
        buf.extend_from_slice(&part.bytes);
        match gguf::read_bytes(&buf, &gguf::ReadOptions::default()) {
            Ok(gguf) => {
                return Ok(OneHeader {
                    gguf,
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
                    "{name}: the GGUF header runs past {} MiB; not read further",
                    MAX_HEADER >> 20
                )));
            }
            Err(e) => {
                return Err(ProvisionError::Invalid(format!(
                    "{name} is not a GGUF model file: {e}"
                )));
            }
        }
    }
}
