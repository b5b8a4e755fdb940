//! Checking that model files are still what the catalog says.

use std::path::{Path, PathBuf};

use artifact_catalog::ArtifactStatus;
use serde::Serialize;

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

pub use artifact_catalog::sha256_file;

enum FileCheck {
    Ok,
    /// No sha256 was recorded; this is the file's.
    Hashed(String),
    Problem(String),
}

fn check_file(path: &Path, size: u64, sha256: Option<&str>, rehash: bool) -> FileCheck {
    let shown = path.display();
    match fs_err::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            FileCheck::Problem(format!("file {shown} is missing"))
        }
        Err(e) => FileCheck::Problem(format!("cannot read {shown}: {e}")),
        Ok(m) if !m.is_file() => FileCheck::Problem(format!("{shown} is not a file")),
        Ok(m) if m.len() != size => FileCheck::Problem(format!(
            "file {shown} is {} bytes, the catalog recorded {size}",
            m.len()
        )),
        Ok(_) if rehash => match (sha256_file(path), sha256) {
            (Err(e), _) => FileCheck::Problem(format!("cannot hash {shown}: {e}")),
            (Ok(actual), Some(expected)) if !actual.eq_ignore_ascii_case(expected) => {
                FileCheck::Problem(format!(
                    "bad sha256 for {shown}: expected {expected}, got {actual}"
                ))
            }
            (Ok(actual), None) => FileCheck::Hashed(actual),
            (Ok(_), Some(_)) => FileCheck::Ok,
        },
        Ok(_) => FileCheck::Ok,
    }
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
            let files: Vec<(PathBuf, u64, Option<String>)> = entry
                .parts()
                .into_iter()
                .map(|s| (s.path, s.size, s.sha256))
                .collect();
            let mut problem = None;
            let mut hashed_any = false;
            let mut hashed = 0;
            for (path, size, sha256) in &files {
                let found = check_file(path, *size, sha256.as_deref(), rehash);
                hashed_any |= rehash;
                match found {
                    FileCheck::Ok => hashed += usize::from(rehash),
                    FileCheck::Hashed(actual) => {
                        hashed += 1;
                        if entry.shards.is_empty() {
                            self.modify(&entry.id, &mut |e| {
                                e.artifact.sha256 = Some(actual.clone())
                            })?;
                        }
                    }
                    FileCheck::Problem(p) => {
                        problem = Some(p);
                        break;
                    }
                }
            }
            if hashed_any {
                report.hashed += 1;
            }
            if problem.is_none() && hashed == files.len() && rehash {
                let now = artifact_catalog::now();
                self.modify(&entry.id, &mut |e| e.artifact.hashed_at = Some(now))?;
            }
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
