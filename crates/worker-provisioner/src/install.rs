//! Putting a binary's files in its folder, `workers/<id>/`: each file is written into
//! a staging folder inside it (`.installing/`), fsynced, and renamed into place, the
//! executable last, so a crash leaves the old install or the new one, never half a
//! file. Only plain names are written: nothing can land outside the folder.

use std::io::Read;
use std::path::{Path, PathBuf};

use artifact_catalog::ArtifactStatus;
use provisioning::{ProvisionContext, ProvisionError};
use worker_catalog::WorkerBinary;

/// The staging folder inside a binary's folder, while an install writes it.
pub const STAGING_DIR: &str = ".installing";

/// The files of one install, written one at a time, committed together.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    staging: PathBuf,
    /// Libraries and links, in the order they were staged.
    others: Vec<String>,
    /// The executable's size and sha256, once staged.
    executable: Option<(u64, String)>,
}

impl Staging {
    /// A fresh staging folder inside `dir`.
    pub fn new(dir: &Path) -> Result<Self, ProvisionError> {
        let staging = dir.join(STAGING_DIR);
        let _ = fs_err::remove_dir_all(&staging);
        fs_err::create_dir_all(&staging)
            .map_err(|e| ProvisionError::io("creating the worker's folder", e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            staging,
            others: Vec::new(),
            executable: None,
        })
    }

    fn target(&self, name: &str) -> Result<PathBuf, ProvisionError> {
        let plain = Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name);
        if !plain || name == STAGING_DIR || name == "metadata.json" {
            return Err(ProvisionError::Invalid(format!(
                "refusing to install a file named {name:?}"
            )));
        }
        Ok(self.staging.join(name))
    }

    /// The staging folder, where staged files can be run before they are committed.
    pub fn folder(&self) -> &Path {
        &self.staging
    }

    /// Where a staged file is until it is committed.
    pub fn staged(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    /// Whether a file of this name was staged already.
    pub fn has(&self, name: &str) -> bool {
        self.others.iter().any(|n| n == name) || self.staging.join(name).exists()
    }

    /// Stages the executable, mode 755; its size and sha256 become the binary's.
    pub fn executable(&mut self, name: &str, src: &mut dyn Read) -> Result<(), ProvisionError> {
        let path = self.target(name)?;
        self.executable = Some(copy_hashing(src, &path, 0o755)?);
        Ok(())
    }

    /// Stages a shared library the executable loads, mode 644.
    pub fn library(&mut self, name: &str, src: &mut dyn Read) -> Result<(), ProvisionError> {
        let path = self.target(name)?;
        copy_hashing(src, &path, 0o644)?;
        self.others.push(name.to_owned());
        Ok(())
    }

    /// Stages `name` as a symbolic link to `target`, another plain name in the same
    /// folder (`libllama.so -> libllama.so.0`).
    pub fn link(&mut self, name: &str, target: &str) -> Result<(), ProvisionError> {
        let path = self.target(name)?;
        self.target(target)?;
        #[cfg(unix)]
        std::os::unix::fs::symlink(target, &path)
            .map_err(|e| ProvisionError::io("linking a shared library", e))?;
        #[cfg(not(unix))]
        return Err(ProvisionError::Invalid(format!(
            "{name} is a symbolic link, which this platform cannot install"
        )));
        self.others.push(name.to_owned());
        Ok(())
    }

    /// Renames every staged file into the folder (the executable, `executable_name`,
    /// last) and fills in the binary's path, size, sha256 and modification time.
    pub fn commit(
        mut self,
        executable_name: &str,
        mut binary: WorkerBinary,
    ) -> Result<WorkerBinary, ProvisionError> {
        let Some((size, sha)) = self.executable.take() else {
            return Err(ProvisionError::Invalid(format!(
                "no {executable_name} executable to install"
            )));
        };
        for name in self
            .others
            .iter()
            .map(String::as_str)
            .chain([executable_name])
        {
            let dest = self.dir.join(name);
            if dest.is_dir() {
                return Err(ProvisionError::Invalid(format!(
                    "{} is a folder",
                    dest.display()
                )));
            }
            fs_err::rename(self.staging.join(name), &dest)
                .map_err(|e| ProvisionError::io("installing the worker", e))?;
        }
        sync_dir(&self.dir);
        let dest = self.dir.join(executable_name);
        binary.modified = fs_err::metadata(&dest).and_then(|m| m.modified()).ok();
        binary.path = dest;
        binary.size = size;
        binary.sha256 = Some(sha);
        binary.status = ArtifactStatus::Available;
        Ok(binary)
    }
}

impl Drop for Staging {
    /// Whether committed or abandoned, the staging folder goes.
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.staging);
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs_err::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The folder a binary installs into: `workers_dir/<its id, as a folder name>/`.
pub(crate) fn folder_of(workers_dir: &Path, id: &str) -> Result<PathBuf, ProvisionError> {
    let name = artifact_catalog::encode_dir_name(id).map_err(|e| ProvisionError::io("id", e))?;
    Ok(workers_dir.join(name))
}

/// Runs `step`, an install that writes files, off the async threads; then says where
/// the binary went.
pub(crate) async fn finish(
    ctx: &ProvisionContext,
    step: impl FnOnce() -> Result<WorkerBinary, ProvisionError> + Send + 'static,
) -> Result<WorkerBinary, ProvisionError> {
    let binary = tokio::task::spawn_blocking(step)
        .await
        .map_err(|e| ProvisionError::io("installing", e))??;
    ctx.reporter.narrate(
        "install",
        &format!("installed {} at {}", binary.id, binary.path.display()),
    );
    Ok(binary)
}

/// Installs the single executable at `from` as `dir/<its file name>`.
pub fn install(
    from: &Path,
    binary: WorkerBinary,
    dir: &Path,
) -> Result<WorkerBinary, ProvisionError> {
    let mut src =
        fs_err::File::open(from).map_err(|e| ProvisionError::io("reading the built worker", e))?;
    let name = binary.file_name();
    let mut staging = Staging::new(dir)?;
    staging.executable(&name, &mut src)?;
    staging.commit(&name, binary)
}

/// Writes `src` to `path` with `mode`, fsynced, returning its size and sha256.
fn copy_hashing(
    src: &mut dyn Read,
    path: &Path,
    mode: u32,
) -> Result<(u64, String), ProvisionError> {
    let result = (|| -> std::io::Result<(u64, String)> {
        let mut out = fs_err::File::create(path)?;
        let (size, sha) = artifact_catalog::copy_hashing(src, &mut out, &mut |_| {})?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            out.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        out.sync_all()?;
        Ok((size, sha))
    })();
    result.map_err(|e| {
        let _ = fs_err::remove_file(path);
        ProvisionError::io("writing the worker binary", e)
    })
}
