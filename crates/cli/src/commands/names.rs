//! What people type for a model: its catalog id, its alias (the name the one endpoint
//! and Ollama's clients know), or a unique prefix of either. An ambiguous word lists
//! the candidates; a word that names nothing says which names are near. A reference
//! the catalog does not hold yet (`hf:`, `https://`, `file:`, `oci://`) passes through,
//! for the commands that pull it first.

use reqwest::Method;
use serde_json::Value;

use crate::commands::client::Client;

/// Every model of the catalog, page after page.
pub async fn all_models(client: &Client) -> anyhow::Result<Value> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    loop {
        let page = client
            .call(
                Method::GET,
                &format!("/v1/models?offset={}&limit={PAGE}", all.len()),
                None,
            )
            .await?;
        // OpenAI's list shape; a bare list from a hive before it
        let items = page["data"]
            .as_array()
            .or(page.as_array())
            .cloned()
            .unwrap_or_default();
        let n = items.len();
        all.extend(items);
        if n < PAGE {
            return Ok(Value::Array(all));
        }
    }
}

/// What a word names: a model in the catalog, or a reference the catalog does not
/// hold yet (for the commands that pull it first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A catalog id.
    Id(String),
    /// A reference to pull.
    Reference(String),
}

impl Named {
    /// The id, or the reference.
    pub fn into_string(self) -> String {
        match self {
            Self::Id(s) | Self::Reference(s) => s,
        }
    }
}

/// The catalog id that `word` names (or the reference it is, not yet pulled).
pub async fn model_id(client: &Client, word: &str) -> anyhow::Result<String> {
    named(client, word).await.map(Named::into_string)
}

/// What `word` names.
pub async fn named(client: &Client, word: &str) -> anyhow::Result<Named> {
    let models = all_models(client).await?;
    let names: Vec<(String, String)> = models
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let id = m["id"].as_str()?.to_owned();
            let alias = m["alias"].as_str().unwrap_or_default().to_owned();
            Some((id, alias))
        })
        .collect();
    resolve(&names, word)
}

fn is_reference(word: &str) -> bool {
    ["hf:", "https://", "http://", "file:", "oci://", "ollama:"]
        .iter()
        .any(|p| word.starts_with(p))
}

/// `names` are (id, alias) pairs.
fn resolve(names: &[(String, String)], word: &str) -> anyhow::Result<Named> {
    if let Some((id, _)) = names.iter().find(|(id, _)| id == word) {
        return Ok(Named::Id(id.clone()));
    }
    let lower = word.to_lowercase();
    let by_alias: Vec<&String> = names
        .iter()
        .filter(|(_, alias)| !alias.is_empty() && alias.to_lowercase() == lower)
        .map(|(id, _)| id)
        .collect();
    if let [id] = by_alias.as_slice() {
        return Ok(Named::Id((*id).clone()));
    }
    let by_prefix: Vec<&(String, String)> = names
        .iter()
        .filter(|(id, alias)| id.starts_with(word) || alias.to_lowercase().starts_with(&lower))
        .collect();
    match by_prefix.as_slice() {
        [(id, _)] => return Ok(Named::Id(id.clone())),
        [] => {}
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|(id, alias)| format!("  {alias}  ({id})"))
                .collect();
            anyhow::bail!(
                "{word:?} names {} models; say which:\n{}",
                many.len(),
                list.join("\n")
            );
        }
    }
    if is_reference(word) {
        return Ok(Named::Reference(word.to_owned()));
    }
    let near = names
        .iter()
        .flat_map(|(id, alias)| [alias.as_str(), id.as_str()])
        .filter(|n| !n.is_empty())
        .map(|n| (strsim::levenshtein(&lower, &n.to_lowercase()), n))
        .filter(|(d, n)| *d <= (n.chars().count() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n);
    match near {
        Some(n) => anyhow::bail!("{word:?} is not in the catalog; did you mean {n}?"),
        None => anyhow::bail!(
            "{word:?} is not in the catalog (not an id, an alias or the start of one): rbee models ls lists them"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{Named, resolve};

    fn names() -> Vec<(String, String)> {
        [
            ("hf:org/SmolLM2-GGUF/smol-q4_1.gguf", "smollm2:q4_1"),
            ("hf:org/SmolLM2-GGUF/smol-q8_0.gguf", "smollm2:q8_0"),
            ("file:/m/gemma.gguf", "gemma:q4_k_m"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
    }

    #[test]
    fn ids_aliases_prefixes_and_typos() {
        let n = names();
        let ok = |w: &str| match resolve(&n, w).unwrap_or_else(|e| panic!("{w}: {e}")) {
            Named::Id(id) => id,
            Named::Reference(r) => panic!("{w} is in the catalog, not {r}"),
        };
        assert_eq!(ok("file:/m/gemma.gguf"), "file:/m/gemma.gguf");
        assert_eq!(ok("smollm2:q8_0"), "hf:org/SmolLM2-GGUF/smol-q8_0.gguf");
        assert_eq!(ok("SMOLLM2:Q4_1"), "hf:org/SmolLM2-GGUF/smol-q4_1.gguf");
        assert_eq!(ok("gem"), "file:/m/gemma.gguf");
        assert_eq!(
            resolve(&n, "hf:new/Repo-GGUF").unwrap(),
            Named::Reference("hf:new/Repo-GGUF".into()),
            "a reference to pull"
        );
        let many = resolve(&n, "smollm2").unwrap_err().to_string();
        assert!(
            many.contains("names 2 models") && many.contains("smollm2:q8_0"),
            "{many}"
        );
        let typo = resolve(&n, "gemma:q4_k_n").unwrap_err().to_string();
        assert!(typo.contains("did you mean gemma:q4_k_m"), "{typo}");
        let none = resolve(&n, "llama3").unwrap_err().to_string();
        assert!(none.contains("rbee models ls"), "{none}");
    }
}
