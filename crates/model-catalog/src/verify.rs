//! Checking that model files are still what the catalog says.

use std::io::Read as _;
use std::path::Path;

use artifact_catalog::ArtifactStatus;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{ModelCatalog, Result};

/// What a check found wrong with one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// The model.
    pub id: String,
    /// What is wrong, as recorded in its `Failed` status.
    pub reason: String,
}

/// The outcome of [`ModelCatalog::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many available models were checked.
    pub checked: usize,
    /// How many of them were hashed.
    pub hashed: usize,
    /// The models now marked `Failed`.
    pub problems: Vec<VerifyProblem>,
}

/// The sha256 of a file, lowercase hex, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs_err::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

impl ModelCatalog {
    /// Checks every available model: its file is there and has the recorded size;
    /// with `rehash`, its sha256 matches too (a model with no recorded sha256 gets
    /// the one computed). A model that fails is marked `Failed` with the reason.
    /// Files are never deleted or changed. Blocking: it reads whole files.
    pub fn verify(&self, rehash: bool) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for record in self.list()? {
            let entry = record.artifact;
            if entry.status != ArtifactStatus::Available {
                continue;
            }
            report.checked += 1;
            let problem = match fs_err::metadata(&entry.path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(format!("file {} is missing", entry.path.display()))
                }
                Err(e) => Some(format!("cannot read {}: {e}", entry.path.display())),
                Ok(m) if !m.is_file() => Some(format!("{} is not a file", entry.path.display())),
                Ok(m) if m.len() != entry.size => Some(format!(
                    "file {} is {} bytes, the catalog recorded {}",
                    entry.path.display(),
                    m.len(),
                    entry.size
                )),
                Ok(_) if rehash => {
                    report.hashed += 1;
                    match (sha256_file(&entry.path), &entry.sha256) {
                        (Err(e), _) => Some(format!("cannot hash {}: {e}", entry.path.display())),
                        (Ok(actual), Some(expected)) if !actual.eq_ignore_ascii_case(expected) => {
                            Some(format!(
                                "bad sha256 for {}: expected {expected}, got {actual}",
                                entry.path.display()
                            ))
                        }
                        (Ok(actual), None) => {
                            self.modify(&entry.id, &mut |e| {
                                e.artifact.sha256 = Some(actual.clone())
                            })?;
                            None
                        }
                        (Ok(_), Some(_)) => None,
                    }
                }
                Ok(_) => None,
            };
            if let Some(reason) = problem {
                self.set_status(
                    &entry.id,
                    ArtifactStatus::Failed {
                        error: reason.clone(),
                    },
                )?;
                report.problems.push(VerifyProblem {
                    id: entry.id,
                    reason,
                });
            }
        }
        Ok(report)
    }
}
