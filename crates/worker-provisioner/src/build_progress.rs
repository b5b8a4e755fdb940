//! How far a cargo build has come: the crates it will compile, counted from
//! `cargo metadata` before it starts, and those done, counted from its JSON messages
//! (`--message-format json-render-diagnostics`) as it runs.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cargo_metadata::{CargoOpt, DependencyKind, Message, MetadataCommand, PackageId};

/// The packages a build of `package` with `features` compiles (its dependency graph
/// without dev-dependencies, for the host), or `None` when cargo cannot say.
/// Blocking: it runs `cargo metadata`.
pub fn planned_crates(
    cargo: &std::ffi::OsStr,
    source_dir: &Path,
    package: &str,
    features: &[&str],
) -> Option<u64> {
    let mut cmd = MetadataCommand::new();
    cmd.cargo_path(cargo).current_dir(source_dir);
    if !features.is_empty() {
        cmd.features(CargoOpt::SomeFeatures(
            features.iter().map(|f| (*f).to_owned()).collect(),
        ));
    }
    let mut options = vec!["--locked".to_owned()];
    if let Some(host) = host_triple() {
        options.extend(["--filter-platform".to_owned(), host]);
    }
    cmd.other_options(options);
    let metadata = match cmd.exec() {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!("cargo metadata: {e}");
            return None;
        }
    };
    let root = metadata
        .workspace_packages()
        .into_iter()
        .find(|p| p.name.as_str() == package)?
        .id
        .clone();
    let resolve = metadata.resolve?;
    let nodes: HashMap<&PackageId, _> = resolve.nodes.iter().map(|n| (&n.id, n)).collect();
    let mut seen: HashSet<&PackageId> = HashSet::new();
    let mut stack = vec![&root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = nodes.get(id) else { continue };
        for dep in &node.deps {
            let needed = dep
                .dep_kinds
                .iter()
                .any(|k| k.kind != DependencyKind::Development);
            if needed {
                stack.push(&dep.pkg);
            }
        }
    }
    u64::try_from(seen.len()).ok()
}

/// The host's target triple, as `rustc -vV` says it.
fn host_triple() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(rustc).arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
}

/// Counts the packages a running build has compiled (or found fresh).
#[derive(Debug, Default)]
pub struct BuildCounter {
    done: HashSet<String>,
}

impl BuildCounter {
    /// Reads one line of cargo's JSON output: for a new package's artifact, how
    /// many packages are done and the one that just finished.
    pub fn line(&mut self, line: &str) -> Option<(u64, String)> {
        let message: Message = serde_json::from_str(line).ok()?;
        let Message::CompilerArtifact(artifact) = message else {
            return None;
        };
        let id = &artifact.package_id.repr;
        let fresh = self.done.insert(id.clone());
        fresh.then(|| {
            (
                u64::try_from(self.done.len()).unwrap_or(u64::MAX),
                package_name(id).unwrap_or(&artifact.target.name).to_owned(),
            )
        })
    }
}

/// The package's name in a package id: `registry+...#serde@1.0.0`,
/// `path+file:///src/foo#0.1.0` (the folder's name), or the older `serde 1.0.0 (...)`.
fn package_name(id: &str) -> Option<&str> {
    match id.split_once('#') {
        Some((source, rest)) => match rest.split_once('@') {
            Some((name, _)) => Some(name),
            None => source.rsplit('/').next(),
        },
        None => id.split_whitespace().next(),
    }
    .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::BuildCounter;

    #[test]
    fn each_package_counts_once() {
        let artifact = |pkg: &str, target: &str| {
            format!(
                r#"{{"reason":"compiler-artifact","package_id":"{pkg}","manifest_path":"/x/Cargo.toml","target":{{"kind":["lib"],"crate_types":["lib"],"name":"{target}","src_path":"/x/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true}},"profile":{{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false}},"features":[],"filenames":[],"executable":null,"fresh":false}}"#
            )
        };
        let mut c = BuildCounter::default();
        assert_eq!(
            c.line(&artifact("registry+x#serde@1.0.0", "build_script_build")),
            Some((1, "serde".into()))
        );
        // the same package's library after its build script: not a new crate
        assert_eq!(c.line(&artifact("registry+x#serde@1.0.0", "serde")), None);
        assert_eq!(
            c.line(&artifact("registry+x#libc@0.2.0", "libc")),
            Some((2, "libc".into()))
        );
        assert_eq!(
            c.line(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(c.line("not json"), None);
    }

    #[test]
    fn package_names_in_every_id_form() {
        use super::package_name;
        assert_eq!(
            package_name("registry+https://x/index#serde@1.0.0"),
            Some("serde")
        );
        assert_eq!(
            package_name("path+file:///src/llm-worker#0.1.0"),
            Some("llm-worker")
        );
        assert_eq!(
            package_name("serde 1.0.0 (registry+https://x)"),
            Some("serde")
        );
    }
}
