//! Where the hub is and who we are there.

use std::path::PathBuf;

/// How to reach Hugging Face.
#[derive(Clone)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: url::Url,
    /// `HF_TOKEN`, else the token file.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: never touch the network.
    pub offline: bool,
    /// A registry that keeps the fleet's copies of hub files (`--model-mirror`).
    pub mirror: Option<crate::oci::Mirror>,
    /// Where `hf:` pulls land, in the hub cache's own layout (`--hf-cache-layout`);
    /// `None`: the hive's `models/` folder.
    pub cache_layout: Option<PathBuf>,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("mirror", &self.mirror)
            .field("cache_layout", &self.cache_layout)
            .finish()
    }
}

impl HubConfig {
    /// The default hub with no token.
    pub fn new(endpoint: url::Url) -> Self {
        Self {
            endpoint,
            token: None,
            offline: false,
            mirror: None,
            cache_layout: None,
        }
    }

    /// From `HF_ENDPOINT`, `HF_TOKEN` (else `HF_TOKEN_PATH`, `$HF_HOME/token`,
    /// `~/.cache/huggingface/token`) and `HF_HUB_OFFLINE`, as the hub's own tools read them.
    pub fn from_env() -> Result<Self, String> {
        let endpoint =
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
        let endpoint = url::Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| format!("HF_ENDPOINT {endpoint:?} is not a URL: {e}"))?;
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Ok(Self {
            endpoint,
            token: read_token(),
            offline,
            mirror: None,
            cache_layout: None,
        })
    }
}

/// The Hugging Face token: `HF_TOKEN`, else the token file.
pub fn read_token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        let t = t.trim().to_owned();
        if !t.is_empty() {
            return Some(t);
        }
    }
    let path = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HF_HOME").map(PathBuf::from).or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface"))
            })?;
            Some(home.join("token"))
        })?;
    let t = fs_err::read_to_string(path).ok()?.trim().to_owned();
    (!t.is_empty()).then_some(t)
}
