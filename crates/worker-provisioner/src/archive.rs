//! Reading release archives, `.tar.gz` and `.zip`, entry by entry. Only an entry's
//! file name is handed on, never its path: what is unpacked is chosen by name and
//! written by [`crate::install::Staging`], so no entry can land outside its folder.

use std::io::Read;
use std::path::Path;

use provisioning::ProvisionError;

/// The kinds of archive a release comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.tar.gz` or `.tgz`.
    TarGz,
    /// `.zip`.
    Zip,
}

impl Format {
    /// The format a file name says, with the name without its extension.
    pub fn of(name: &str) -> Option<(Self, &str)> {
        if let Some(stem) = name
            .strip_suffix(".tar.gz")
            .or_else(|| name.strip_suffix(".tgz"))
        {
            Some((Self::TarGz, stem))
        } else {
            name.strip_suffix(".zip").map(|stem| (Self::Zip, stem))
        }
    }

    /// The extension, with its dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::TarGz => ".tar.gz",
            Self::Zip => ".zip",
        }
    }
}

/// One entry worth a look: a regular file to read, or a symbolic link.
pub enum Entry<'a> {
    /// A regular file.
    File(&'a mut dyn Read),
    /// A symbolic link to this target, as written in the archive.
    Link(String),
}

/// Calls `visit` with the file name and content of every regular file and symbolic
/// link in the archive, in archive order. Folders and other entries are skipped.
pub fn for_each(
    path: &Path,
    format: Format,
    visit: &mut dyn FnMut(&str, Entry<'_>) -> Result<(), ProvisionError>,
) -> Result<(), ProvisionError> {
    let file =
        fs_err::File::open(path).map_err(|e| ProvisionError::io("opening the archive", e))?;
    match format {
        Format::TarGz => {
            let bad =
                |e: std::io::Error| ProvisionError::Invalid(format!("not a .tar.gz archive: {e}"));
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
            for entry in tar.entries().map_err(bad)? {
                let mut entry = entry.map_err(bad)?;
                let path = entry.path().map_err(bad)?.into_owned();
                let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        visit(&name, Entry::File(&mut entry))?;
                    }
                    tar::EntryType::Symlink => {
                        let target = entry.link_name().map_err(bad)?.unwrap_or_default();
                        visit(&name, Entry::Link(target.to_string_lossy().into_owned()))?;
                    }
                    _ => {}
                }
            }
        }
        Format::Zip => {
            let bad = |e: zip::result::ZipError| {
                ProvisionError::Invalid(format!("not a .zip archive: {e}"))
            };
            let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(bad)?;
            for i in 0..zip.len() {
                let mut entry = zip.by_index(i).map_err(bad)?;
                if entry.is_dir() {
                    continue;
                }
                let full = entry.name().map_err(bad)?.into_owned();
                let Some(name) = Path::new(&full)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
                else {
                    continue;
                };
                if entry.is_symlink() {
                    let mut target = String::new();
                    entry
                        .read_to_string(&mut target)
                        .map_err(|e| ProvisionError::Invalid(format!("not a .zip archive: {e}")))?;
                    visit(&name, Entry::Link(target))?;
                } else {
                    visit(&name, Entry::File(&mut entry))?;
                }
            }
        }
    }
    Ok(())
}

/// Whether a file name is a shared library an executable may load: `libllama.so`,
/// `libggml-cpu.so.0.9.1`, `libggml.dylib`, `ggml.dll`.
pub fn is_shared_library(name: &str) -> bool {
    name.ends_with(".so")
        || name.contains(".so.")
        || name.ends_with(".dylib")
        || name.to_ascii_lowercase().ends_with(".dll")
}
