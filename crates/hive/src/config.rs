//! The daemon's configuration: flags, each also read from an `RBEE_*` variable.

use std::net::IpAddr;
use std::path::PathBuf;

use artifact_catalog::Backend;
use clap::Parser;

/// rbee-hive: the daemon that owns this machine's models and workers
#[derive(Debug, Clone, Parser)]
#[command(name = "rbee-hive", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on; anything but loopback needs --api-token
    #[arg(long, env = "RBEE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port, printed at start)
    #[arg(long, env = "RBEE_PORT", default_value_t = 7835)]
    pub port: u16,
    /// Home folder: catalog.db, models/, workers/, downloads/, logs/ [default: ~/.cache/rbee]
    #[arg(long, env = "RBEE_HOME")]
    pub home: Option<PathBuf>,
    /// Catalog backend: sqlite or filesystem
    #[arg(long, env = "RBEE_CATALOG_BACKEND", default_value = "sqlite")]
    pub catalog_backend: Backend,
    /// Bearer token every route but /health requires
    #[arg(long, env = "RBEE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Hugging Face endpoint [default: HF_ENDPOINT, else the public hub]
    #[arg(long, env = "RBEE_HF_ENDPOINT")]
    pub hf_endpoint: Option<String>,
    /// Hugging Face token [default: HF_TOKEN, else the token file]
    #[arg(long, env = "RBEE_HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,
    /// Connections per download
    #[arg(long, env = "RBEE_DOWNLOAD_CONNECTIONS", default_value_t = 8)]
    pub download_connections: usize,
    /// Cap on download bandwidth for all downloads together, bytes per second
    #[arg(long, env = "RBEE_BANDWIDTH_LIMIT")]
    pub bandwidth_limit: Option<u64>,
    /// Downloads running at once; more wait their turn
    #[arg(long, env = "RBEE_MAX_CONCURRENT_DOWNLOADS", default_value_t = 2)]
    pub max_concurrent_downloads: usize,
}

impl Config {
    /// The home folder.
    pub fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
                .join(".cache/rbee")
        })
    }

    /// Refuses what cannot be run safely.
    pub fn check(&self) -> Result<(), String> {
        if !self.host.is_loopback() && self.api_token.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "refusing to listen on {} without an API token: set --api-token or RBEE_API_TOKEN, or listen on 127.0.0.1",
                self.host
            ));
        }
        if self.download_connections == 0 || self.max_concurrent_downloads == 0 {
            return Err(
                "--download-connections and --max-concurrent-downloads must be at least 1".into(),
            );
        }
        Ok(())
    }
}
