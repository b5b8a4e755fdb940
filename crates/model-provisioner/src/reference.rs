//! `hf:` references and choosing a file in a repo.

use crate::ProvisionError;

/// What part of a repo an `hf:` reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HfSelector {
    /// The repo's only GGUF, else `Q4_K_M`, else `Q8_0`.
    Auto,
    /// The GGUF whose name carries this quant tag.
    Quant(String),
    /// That exact file.
    Path(String),
}

/// `hf:ORG/REPO[@REVISION][:QUANT | /path/to/file.gguf]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfReference {
    /// `ORG/REPO`.
    pub repo: String,
    /// A branch, tag or commit; `main` when not given.
    pub revision: String,
    /// Which file.
    pub selector: HfSelector,
}

fn invalid(reference: &str, reason: impl Into<String>) -> ProvisionError {
    ProvisionError::InvalidReference {
        reference: reference.to_owned(),
        reason: reason.into(),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl HfReference {
    /// Parses a reference that starts with `hf:`.
    pub fn parse(reference: &str) -> Result<Self, ProvisionError> {
        let rest = reference
            .trim()
            .strip_prefix("hf:")
            .ok_or_else(|| invalid(reference, "it does not start with hf:"))?;
        let mut parts = rest.splitn(3, '/');
        let org = parts.next().unwrap_or_default();
        let repo_part = parts
            .next()
            .ok_or_else(|| invalid(reference, "expected hf:ORG/REPO"))?;
        let path = parts.next();
        let (repo_rev, quant) = match repo_part.split_once(':') {
            Some((r, q)) => (r, Some(q)),
            None => (repo_part, None),
        };
        let (name, revision) = match repo_rev.split_once('@') {
            Some((n, r)) => (n, Some(r)),
            None => (repo_rev, None),
        };
        if !valid_name(org) || !valid_name(name) {
            return Err(invalid(
                reference,
                "ORG and REPO take letters, digits, '-', '_' and '.' (hf:ORG/REPO)",
            ));
        }
        let revision = match revision {
            Some(r)
                if r.is_empty()
                    || r.contains(['/', '\\'])
                    || r.contains("..")
                    || r.chars().any(char::is_control) =>
            {
                return Err(invalid(reference, format!("bad revision {r:?}")));
            }
            Some(r) => r.to_owned(),
            None => "main".to_owned(),
        };
        let selector = match (quant, path) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    reference,
                    "give a quant (:Q4_K_M) or a file path, not both",
                ));
            }
            (Some(q), None) => {
                if q.is_empty() || !q.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(invalid(reference, format!("bad quant tag {q:?}")));
                }
                HfSelector::Quant(q.to_owned())
            }
            (None, Some(p)) => {
                let bad = p.is_empty()
                    || p.starts_with('/')
                    || p.split('/')
                        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
                    || p.chars().any(|c| c.is_control() || c == '\\');
                if bad {
                    return Err(invalid(reference, format!("bad file path {p:?}")));
                }
                if !p.to_ascii_lowercase().ends_with(".gguf") {
                    return Err(invalid(reference, format!("{p} is not a .gguf file")));
                }
                HfSelector::Path(p.to_owned())
            }
            (None, None) => HfSelector::Auto,
        };
        Ok(Self {
            repo: format!("{org}/{name}"),
            revision,
            selector,
        })
    }
}

/// A GGUF model in a repo: one file, or the shards of a split one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoModel<F> {
    /// The first (or only) file's path.
    pub path: String,
    pub files: Vec<F>,
}

/// `name-00001-of-00003.gguf` as (`name`, 1, 3).
pub(crate) fn shard_of(path: &str) -> Option<(&str, u32, u32)> {
    let stem = path
        .strip_suffix(".gguf")
        .or_else(|| path.strip_suffix(".GGUF"))?;
    let (rest, total) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    if index.len() != 5 || total.len() != 5 {
        return None;
    }
    Some((prefix, index.parse().ok()?, total.parse().ok()?))
}

/// Whether a file is a multimodal projector by its name (`mmproj-*.gguf`, as
/// llama.cpp's converter and the hub's repos name them): never a model to run.
pub(crate) fn is_projector_name(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.to_ascii_lowercase().starts_with("mmproj"))
}

/// Of `paths` (a repo's files, or a folder's), the projector of the model at
/// `model_path`: an `mmproj*.gguf` in its folder; of several, F16's, else BF16's,
/// else the model's quantization's, else the first by name.
pub(crate) fn pick_projector<'a>(model_path: &str, paths: &'a [String]) -> Option<&'a str> {
    let folder = |p: &str| p.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
    let here = folder(model_path);
    let mut found: Vec<&str> = paths
        .iter()
        .map(String::as_str)
        .filter(|p| {
            is_projector_name(p) && p.to_ascii_lowercase().ends_with(".gguf") && folder(p) == here
        })
        .collect();
    found.sort_unstable();
    let with = |q: &str| found.iter().copied().find(|p| has_quant(p, q));
    with("F16")
        .or_else(|| with("BF16"))
        .or_else(|| quant_of(model_path).and_then(with))
        .or_else(|| found.first().copied())
}

/// Groups a repo's GGUF files into models: shards of one split model together; a
/// projector is no model.
pub(crate) fn group_models<F: Clone>(files: &[(String, F)]) -> Vec<RepoModel<F>> {
    let mut ggufs: Vec<&(String, F)> = files
        .iter()
        .filter(|(p, _)| p.to_ascii_lowercase().ends_with(".gguf") && !is_projector_name(p))
        .collect();
    ggufs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut models: Vec<RepoModel<F>> = Vec::new();
    for (path, f) in ggufs {
        match shard_of(path) {
            Some((prefix, index, total)) if index > 1 => {
                if let Some(m) = models.iter_mut().find(|m| {
                    shard_of(&m.path).is_some_and(|(p, i, t)| p == prefix && i == 1 && t == total)
                }) {
                    m.files.push(f.clone());
                    continue;
                }
                models.push(RepoModel {
                    path: path.clone(),
                    files: vec![f.clone()],
                });
            }
            _ => models.push(RepoModel {
                path: path.clone(),
                files: vec![f.clone()],
            }),
        }
    }
    models
}

/// Whether a file name carries `tag` as a whole token: `Q4_K` is in
/// `m.Q4_K.gguf` but not in `m.Q4_K_M.gguf`.
pub(crate) fn has_quant(path: &str, tag: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_uppercase();
    let tag = tag.to_ascii_uppercase();
    let bytes = name.as_bytes();
    name.match_indices(&tag).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + tag.len()).copied();
        before.is_none_or(|b| matches!(b, b'-' | b'_' | b'.'))
            && after.is_none_or(|b| matches!(b, b'-' | b'.'))
    })
}

/// The quant tag a file name carries, for listing choices.
pub(crate) fn quant_of(path: &str) -> Option<&'static str> {
    gguf::quantization_names()
        .filter(|q| has_quant(path, q))
        .max_by_key(|q| q.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> HfReference {
        HfReference::parse(s).unwrap()
    }

    #[test]
    fn references() {
        let r = parse("hf:TheOrg/Model-GGUF");
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str(), r.selector),
            ("TheOrg/Model-GGUF", "main", HfSelector::Auto)
        );
        let r = parse("hf:o/r:Q5_K_M");
        assert_eq!(r.selector, HfSelector::Quant("Q5_K_M".into()));
        let r = parse("hf:o/r@v1.0:q8_0");
        assert_eq!(
            (r.revision.as_str(), r.selector),
            ("v1.0", HfSelector::Quant("q8_0".into()))
        );
        let r = parse("hf:o/r@abc123/sub/dir/m.gguf");
        assert_eq!(
            (r.revision.as_str(), r.selector),
            ("abc123", HfSelector::Path("sub/dir/m.gguf".into()))
        );
        for bad in [
            "hf:",
            "hf:o",
            "hf:o/",
            "hf:/r",
            "hf:o/r/../x.gguf",
            "hf:o/r//x.gguf",
            "hf:o/r/x.bin",
            "hf:o/r:Q4/x.gguf",
            "hf:o/r@",
            "hf:o/r:",
            "hf:o/r:Q4 K",
            "hf:../r",
            "hf:o/r@..",
            "hf:o o/r",
            "o/r",
        ] {
            assert!(HfReference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quant_tokens() {
        assert!(has_quant("m.Q4_K_M.gguf", "q4_k_m"));
        assert!(!has_quant("m.Q4_K_M.gguf", "Q4_K"));
        assert!(has_quant("dir/m-Q4_K.gguf", "Q4_K"));
        assert!(!has_quant("m-IQ4_XS.gguf", "Q4_XS"));
        assert!(has_quant("m-q8_0-00001-of-00002.gguf", "Q8_0"));
        assert_eq!(quant_of("model.Q4_K_M.gguf"), Some("Q4_K_M"));
        assert_eq!(quant_of("model-f16.gguf"), Some("F16"));
    }

    #[test]
    fn shards_group() {
        let files: Vec<(String, u32)> = [
            "big-Q4_K_M-00002-of-00003.gguf",
            "big-Q4_K_M-00001-of-00003.gguf",
            "big-Q4_K_M-00003-of-00003.gguf",
            "small.Q8_0.gguf",
            "README.md",
            "mmproj-small-F16.gguf",
            "vision/MMPROJ-Q8_0.gguf",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| ((*p).to_owned(), i as u32))
        .collect();
        let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            pick_projector("small.Q8_0.gguf", &paths),
            Some("mmproj-small-F16.gguf")
        );
        assert_eq!(
            pick_projector("vision/x.gguf", &paths),
            Some("vision/MMPROJ-Q8_0.gguf")
        );
        assert_eq!(pick_projector("elsewhere/x.gguf", &paths), None);
        let models = group_models(&files);
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].path, "big-Q4_K_M-00001-of-00003.gguf");
        assert_eq!(models[0].files, vec![1, 0, 2]);
        assert_eq!(models[1].files, vec![3]);
    }
}
