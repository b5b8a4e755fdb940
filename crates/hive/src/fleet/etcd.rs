//! How this hive reaches etcd, from its configuration, and its id in the fleet.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::config::Config;

/// A call to etcd that takes longer counts as a lost link.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd, from the configuration.
#[derive(Clone)]
pub struct EtcdAccess {
    /// The endpoints.
    pub endpoints: Vec<String>,
    /// Timeouts, user, TLS.
    pub options: ConnectOptions,
}

impl std::fmt::Debug for EtcdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAccess")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdAccess {
    /// The endpoints, user and TLS files the configuration names; `None` without
    /// `--etcd`. A file that cannot be read is an error at start.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        if config.etcd.is_empty() {
            return Ok(None);
        }
        let mut endpoints = Vec::new();
        for e in &config.etcd {
            let e = e.trim();
            let url = url::Url::parse(e).map_err(|err| format!("--etcd {e:?}: {err}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!("--etcd {e:?}: expected http(s)://HOST:PORT"));
            }
            endpoints.push(e.trim_end_matches('/').to_owned());
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(3), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(password)) = (&config.etcd_username, &config.etcd_password) {
            options = options.with_user(user.clone(), password.clone());
        }
        if config.etcd_ca_file.is_some() || config.etcd_cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.etcd_ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--etcd-ca-file")?));
            }
            if let (Some(cert), Some(key)) = (&config.etcd_cert_file, &config.etcd_key_file) {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "--etcd-cert-file")?,
                    read(key, "--etcd-key-file")?,
                ));
            }
            options = options.with_tls(tls);
        }
        Ok(Some(Self { endpoints, options }))
    }

    /// The first endpoint, to find the address this machine reaches the lab from.
    pub fn first(&self) -> Option<url::Url> {
        self.endpoints.first().and_then(|e| url::Url::parse(e).ok())
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    fs_err::read(path).map_err(|e| format!("{flag}: {e}"))
}

/// This hive's id in the fleet: kept in `home/hive-id`, made once (this machine's
/// name and a random suffix).
pub fn hive_id(home: &Path) -> std::io::Result<String> {
    let path = home.join("hive-id");
    if let Ok(text) = fs_err::read_to_string(&path) {
        let id = text.trim();
        if super::view::is_hive_id(id) {
            return Ok(id.to_owned());
        }
    }
    let machine: String = fs_err::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let machine = if machine.is_empty() {
        "hive".to_owned()
    } else {
        machine
    };
    let id = format!("{machine}-{:08x}", rand::random::<u32>());
    fs_err::write(&path, format!("{id}\n"))?;
    Ok(id)
}
