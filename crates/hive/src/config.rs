//! The daemon's configuration: flags, each also read from an `RBEE_*` variable.

use std::net::IpAddr;
use std::path::PathBuf;

use artifact_catalog::Backend;
use clap::Parser;

/// What an image URL in a request may reach (`--allow-remote-images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RemoteImages {
    /// Addresses on the internet only: not this machine, nor a private, link-local
    /// or shared network.
    Public,
    /// Any address, this machine's and its networks' included.
    Any,
}

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
    /// A file holding the bearer token (mode 0600; the token never shows in `ps`); the
    /// CLI reads the same file
    #[arg(long, env = "RBEE_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,
    /// More names a request's Host may give besides localhost, 127.0.0.1, ::1, this
    /// machine's name and the address the hive listens on (DNS rebinding); `*` allows any
    #[arg(long, env = "RBEE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Web origins allowed to call the API from a browser besides the hive's own
    /// (globs, as OLLAMA_ORIGINS: http://localhost:3000, https://*.example.com)
    #[arg(long, env = "RBEE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Seconds open requests and streams get at shutdown before they are ended
    #[arg(long, env = "RBEE_SHUTDOWN_GRACE", default_value_t = 8)]
    pub shutdown_grace_secs: u64,
    /// Hugging Face endpoint [default: HF_ENDPOINT, else the public hub]
    #[arg(long, env = "RBEE_HF_ENDPOINT")]
    pub hf_endpoint: Option<String>,
    /// Hugging Face token [default: HF_TOKEN, else the token file]
    #[arg(long, env = "RBEE_HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,
    /// A registry that keeps the fleet's copies of Hugging Face files,
    /// oci://HOST/PREFIX (or oci://HOST:PORT/PREFIX): hf: pulls look there first and
    /// copy there after
    #[arg(long, env = "RBEE_MODEL_MIRROR")]
    pub model_mirror: Option<String>,
    /// Pulls of `hf:` models land in the Hugging Face hub cache (HF_HUB_CACHE, else
    /// HF_HOME/hub, else ~/.cache/huggingface/hub), in its own layout, so that
    /// huggingface_hub and llama.cpp find them
    #[arg(long, env = "RBEE_HF_CACHE_LAYOUT")]
    pub hf_cache_layout: bool,
    /// At start, adopt the models the Hugging Face and llama.cpp caches, Ollama's
    /// store and LM Studio's folder hold, where they lie
    #[arg(long, env = "RBEE_SCAN")]
    pub scan: bool,
    /// At start, when no worker binary is installed, do not register the engines
    /// this machine already has (an llm-worker-rbee beside rbee-hive, a llama-server
    /// named by LLAMA_SERVER or on PATH)
    #[arg(long, env = "RBEE_NO_FIND_ENGINES", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_find_engines: bool,
    /// More folders adopted at start (implies --scan)
    #[arg(long, env = "RBEE_SCAN_DIRS", value_delimiter = ',')]
    pub scan_dirs: Vec<String>,
    /// Registries (HOST or HOST:PORT) reached over plain HTTP, not HTTPS
    #[arg(long, env = "RBEE_OCI_INSECURE", value_delimiter = ',')]
    pub oci_insecure: Vec<String>,
    /// The registry (HOST or HOST:PORT) that ollama:NAME:TAG pulls from, and bare
    /// NAME:TAG names at Ollama's /api/pull and on the one endpoint
    #[arg(long, env = "RBEE_OLLAMA_REGISTRY", default_value = model_provisioner::oci::OLLAMA_REGISTRY)]
    pub ollama_registry: String,
    /// Connections per download
    #[arg(long, env = "RBEE_DOWNLOAD_CONNECTIONS", default_value_t = 8)]
    pub download_connections: usize,
    /// Cap on download bandwidth for all downloads together, bytes per second
    #[arg(long, env = "RBEE_BANDWIDTH_LIMIT")]
    pub bandwidth_limit: Option<u64>,
    /// Downloads running at once; more wait their turn
    #[arg(long, env = "RBEE_MAX_CONCURRENT_DOWNLOADS", default_value_t = 2)]
    pub max_concurrent_downloads: usize,
    /// The rbee-hive source tree `worker-binaries install --source local` builds from [default: the tree this hive was built from]
    #[arg(long, env = "RBEE_WORKER_SOURCE_DIR")]
    pub worker_source_dir: Option<PathBuf>,
    /// The cargo profile local worker builds use
    #[arg(long, env = "RBEE_WORKER_BUILD_PROFILE", default_value = "release")]
    pub worker_build_profile: String,
    /// Ports for workers, such as 9300-9399 (taken ones are skipped) [default: any free port]
    #[arg(long, env = "RBEE_WORKER_PORTS", value_parser = parse_port_range)]
    pub worker_ports: Option<(u16, u16)>,
    /// Seconds a worker may take to load its model and answer ready
    #[arg(long, env = "RBEE_WORKER_READY_TIMEOUT", default_value_t = 300)]
    pub worker_ready_timeout_secs: u64,
    /// Seconds between health checks of each worker
    #[arg(long, env = "RBEE_HEALTH_INTERVAL", default_value_t = 5)]
    pub health_interval_secs: u64,
    /// Failed health checks in a row after which a worker is restarted
    #[arg(long, env = "RBEE_MAX_FAILED_HEALTH_CHECKS", default_value_t = 3)]
    pub max_failed_health_checks: u32,
    /// Restarts of a dying worker before it is marked failed
    #[arg(long, env = "RBEE_MAX_RESTARTS", default_value_t = 5)]
    pub max_restarts: u32,
    /// The first restart backoff in milliseconds; it doubles at each restart, up to 60 s
    #[arg(long, env = "RBEE_RESTART_BACKOFF_MS", default_value_t = 1000)]
    pub restart_backoff_ms: u64,
    /// Seconds a worker may generate without progress (no token) before it counts as
    /// unhealthy and is restarted like any sick worker (0: never)
    #[arg(long, env = "RBEE_WORKER_STALL_SECS", default_value_t = 300)]
    pub worker_stall_secs: u64,
    /// Seconds a worker gets between SIGTERM and SIGKILL (at most 2 while the hive
    /// itself stops)
    #[arg(long, env = "RBEE_WORKER_STOP_GRACE", default_value_t = 10)]
    pub worker_stop_grace_secs: u64,
    /// Seconds without a request after which a worker is stopped, unless its spawn says otherwise (0: never)
    #[arg(long, env = "RBEE_WORKER_IDLE_TTL", default_value_t = 0)]
    pub worker_idle_ttl_secs: u64,
    /// Whether a request through the one endpoint that names a reference not in the
    /// catalog (hf:ORG/REPO:QUANT, https://..., file:/...) pulls it first
    #[arg(long, env = "RBEE_GATEWAY_PULL", default_value_t = true, action = clap::ArgAction::Set)]
    pub gateway_pull: bool,
    /// Images a request names by http(s) URL are fetched by the hive (each at most
    /// 10 MiB, 15 s, 3 redirects): `public` reaches internet addresses only, `any`
    /// this machine and its networks too. Off: only images in the request itself
    #[arg(long, env = "RBEE_ALLOW_REMOTE_IMAGES", value_enum, num_args = 0..=1, default_missing_value = "public")]
    pub allow_remote_images: Option<RemoteImages>,
    /// Requests to one model through the one endpoint beyond its workers' slots that
    /// wait their turn; more are answered 429 with Retry-After
    #[arg(long, env = "RBEE_GATEWAY_QUEUE", default_value_t = 16)]
    pub gateway_queue: u64,
    /// Bytes of RAM the workers of the one endpoint may hold together (default: the
    /// machine's RAM less --ram-margin-bytes)
    #[arg(long, env = "RBEE_RAM_BUDGET")]
    pub ram_budget_bytes: Option<u64>,
    /// RAM kept free for everything else when the budget is the machine's RAM
    #[arg(long, env = "RBEE_RAM_MARGIN", default_value_t = 1 << 30)]
    pub ram_margin_bytes: u64,
    /// Memory kept free on each GPU; a GPU's budget is its total less this
    #[arg(long, env = "RBEE_VRAM_MARGIN", default_value_t = 512 << 20)]
    pub vram_margin_bytes: u64,
    /// Seconds between checks that every model's files are there, whole (0: only at start)
    #[arg(long, env = "RBEE_INTEGRITY_INTERVAL", default_value_t = 3600)]
    pub integrity_interval_secs: u64,
    /// Seconds between full sha256 checks of every model (0: never on a schedule; `rbee models verify --rehash` asks for one)
    #[arg(long, env = "RBEE_REHASH_INTERVAL", default_value_t = 0)]
    pub rehash_interval_secs: u64,
    /// The most the hive's own models may take on disk (bytes, or with a unit: 200G,
    /// 1.5T); a pull past it first evicts least recently used models
    #[arg(long, env = "RBEE_MODELS_MAX_BYTES", value_parser = parse_bytes)]
    pub models_max_bytes: Option<u64>,
    /// Disk space a pull leaves free (bytes, or with a unit: 20G)
    #[arg(long, env = "RBEE_MIN_FREE_DISK", value_parser = parse_bytes)]
    pub min_free_disk: Option<u64>,
    /// Seconds a partial download with no catalog entry is kept before cleanup removes it
    #[arg(long, env = "RBEE_GC_GRACE", default_value_t = 3600)]
    pub gc_grace_secs: u64,
    /// Bytes a live worker's log may reach before it is rotated (its last part kept
    /// as `<worker>.log.1`)
    #[arg(long, env = "RBEE_WORKER_LOG_MAX_BYTES", value_parser = parse_bytes, default_value = "64M")]
    pub worker_log_max_bytes: u64,
    /// Bytes the logs of stopped workers may take before cleanup removes the oldest
    #[arg(long, env = "RBEE_WORKER_LOGS_MAX_BYTES", value_parser = parse_bytes, default_value = "256M")]
    pub worker_logs_max_bytes: u64,
    /// Bytes the KV caches of unloaded llama.cpp workers may take on disk, restored
    /// when their model loads again (the least recently used go first; 0: none kept)
    #[arg(long, env = "RBEE_KV_CACHE_MAX_BYTES", value_parser = parse_bytes, default_value = "2G")]
    pub kv_cache_max_bytes: u64,
    /// An orchestrator to announce this hive to, with its reachable URL
    #[arg(long, env = "RBEE_QUEEN_URL")]
    pub queen_url: Option<url::Url>,
    /// etcd endpoints of the lab (`http://HOST:2379`, comma-separated): the hive joins
    /// its fleet there and routes requests for models it cannot serve to its peers
    #[arg(long, env = "RBEE_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// The etcd user (its password from `RBEE_ETCD_PASSWORD`)
    #[arg(long, env = "RBEE_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// The etcd user's password
    #[arg(
        long,
        env = "RBEE_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_username"
    )]
    pub etcd_password: Option<String>,
    /// A CA (PEM) to check etcd's TLS certificate with (https:// endpoints)
    #[arg(long, env = "RBEE_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for etcd, with `--etcd-key-file`
    #[arg(long, env = "RBEE_ETCD_CERT_FILE", requires = "etcd_key_file")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM)
    #[arg(long, env = "RBEE_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    pub etcd_key_file: Option<PathBuf>,
    /// The fleet this hive joins on etcd
    #[arg(long, env = "RBEE_FLEET", default_value = "default", value_parser = parse_fleet_name)]
    pub fleet: String,
    /// Seconds the hive's fleet record outlives the hive (its etcd lease)
    #[arg(long, env = "RBEE_FLEET_TTL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub fleet_ttl_secs: u64,
    /// The URL the other hives reach this one at (default: the listen address, or
    /// this machine's address toward etcd when it listens on all of them)
    #[arg(long, env = "RBEE_ADVERTISE_URL")]
    pub advertise_url: Option<url::Url>,
    /// A file holding the fleet's shared token (mode 0600): sent with every request
    /// between hives, and required of a peer's
    #[arg(long, env = "RBEE_FLEET_TOKEN_FILE")]
    pub fleet_token_file: Option<PathBuf>,
    /// The fleet token, read from `--fleet-token-file`
    #[arg(skip)]
    pub fleet_token: Option<String>,
}

/// A fleet's name: it is a key segment on etcd.
fn parse_fleet_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with('.');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?}: a fleet name is 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected START-END, such as 9300-9399"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?}: expected 0 < START <= END"));
    }
    Ok((a, b))
}

/// Bytes, plain or with a binary unit (`K`, `M`, `G`, `T`, with or without `iB`/`B`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use K, M, G or T)")),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes, such as 200G"))?;
    #[allow(clippy::cast_precision_loss)]
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?}: out of range"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
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

    /// Where local worker builds come from.
    pub fn worker_source_dir(&self) -> PathBuf {
        self.worker_source_dir.clone().unwrap_or_else(|| {
            let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            crate_dir
                .parent()
                .and_then(std::path::Path::parent)
                .unwrap_or(crate_dir)
                .to_path_buf()
        })
    }

    /// Reads `--api-token-file` into the token; a file others may read is refused.
    pub fn load_token_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.api_token_file else {
            return Ok(());
        };
        let token = read_token_file(path, "--api-token-file")?;
        self.api_token = Some(token);
        Ok(())
    }

    /// Reads `--fleet-token-file`; a file others may read is refused.
    pub fn load_fleet_token_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.fleet_token_file else {
            return Ok(());
        };
        self.fleet_token = Some(read_token_file(path, "--fleet-token-file")?);
        Ok(())
    }

    /// Refuses what cannot be run safely.
    pub fn check(&self) -> Result<(), String> {
        if !self.host.is_loopback() && self.api_token.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "refusing to listen on {} without an API token: set --api-token or RBEE_API_TOKEN, or listen on 127.0.0.1",
                self.host
            ));
        }
        if !self.etcd.is_empty()
            && self.api_token.as_deref().is_some_and(|t| !t.is_empty())
            && self.fleet_token.is_none()
        {
            return Err(
                "a hive with an API token in a fleet (--etcd) needs --fleet-token-file, the token its peers send it and it sends them (the same file on every hive, mode 0600)".into(),
            );
        }
        if self.download_connections == 0 || self.max_concurrent_downloads == 0 {
            return Err(
                "--download-connections and --max-concurrent-downloads must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// The token in a token file: its first line, trimmed. A file that group or others
/// may read, or an empty one, is refused.
pub fn read_token_file(path: &std::path::Path, flag: &str) -> Result<String, String> {
    let meta = fs_err::metadata(path).map_err(|e| format!("{flag}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{flag} {}: others may read it (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = fs_err::read_to_string(path).map_err(|e| format!("{flag}: {e}"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!("{flag} {} is empty", path.display()));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_take_plain_bytes_and_binary_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("256M"), Ok(256 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes(" 2 T "), Ok(2 << 40));
        for bad in ["", "G", "12X", "-1G", "1e400"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
