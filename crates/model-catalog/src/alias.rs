//! A model's alias: the short `name:tag` the one endpoint and Ollama's clients know
//! it by.

use crate::ModelEntry;

/// The alias of a model: its preset's, else `<repository or file, lowercase, without
/// -GGUF>:<quant>`.
pub(crate) fn alias_of(entry: &ModelEntry) -> String {
    if let Some(a) = &entry.preset.alias {
        return a.clone();
    }
    let file = entry
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&entry.id);
    alias(
        &entry.reference,
        file,
        entry.gguf.as_ref().and_then(|g| g.quantization.as_deref()),
    )
}

/// The alias of a model of this reference, file name and quantization: for a model
/// adopted from Ollama's store, the name Ollama knows it by.
pub fn alias(reference: &str, file_name: &str, quant: Option<&str>) -> String {
    if let Some(name) = reference.strip_prefix("ollama:") {
        return name.to_ascii_lowercase();
    }
    let base = repository(reference)
        .unwrap_or_else(|| file_name.strip_suffix(".gguf").unwrap_or(file_name))
        .to_ascii_lowercase();
    let mut stem = base.as_str();
    for suffix in ["-gguf", "_gguf", ".gguf"] {
        stem = stem.strip_suffix(suffix).unwrap_or(stem);
    }
    let tag = quant.map_or_else(|| "latest".to_owned(), str::to_ascii_lowercase);
    // a file named after its quant (`smollm2-135m-instruct.q4_1`) keeps it once
    for sep in ['.', '-', '_'] {
        if let Some(s) = stem.strip_suffix(&format!("{sep}{tag}")) {
            stem = s;
        }
    }
    format!("{stem}:{tag}")
}

/// The repository's name of an `hf:ORG/REPO...` reference.
fn repository(reference: &str) -> Option<&str> {
    let rest = reference.strip_prefix("hf:")?;
    let repo = rest.split([':', '@']).next()?;
    repo.split('/').nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        assert_eq!(
            alias(
                "hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M",
                "SmolLM2-135M-Instruct-Q4_K_M.gguf",
                Some("Q4_K_M")
            ),
            "smollm2-135m-instruct:q4_k_m"
        );
        assert_eq!(
            alias(
                "file:/data/SmolLM2-135M-Instruct.Q4_1.gguf",
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                Some("Q4_1")
            ),
            "smollm2-135m-instruct:q4_1"
        );
        assert_eq!(
            alias("file:/data/gemma.gguf", "gemma.gguf", None),
            "gemma:latest"
        );
        assert_eq!(
            alias("ollama:gemma3:270m", "sha256-0a1b", Some("Q8_0")),
            "gemma3:270m"
        );
        assert_eq!(
            alias(
                "hf:TheOrg/Tiny-GGUF@0123abcd/tiny.Q4_0.gguf",
                "tiny.Q4_0.gguf",
                Some("Q4_0")
            ),
            "tiny:q4_0"
        );
    }
}
