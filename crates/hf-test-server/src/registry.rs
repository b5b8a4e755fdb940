//! Debian's `docker-registry` (distribution 2.8) on loopback, for tests: filesystem
//! storage in a temporary folder, deletes allowed, plain HTTP, and optionally basic
//! authentication from an htpasswd file. Skips (None) where
//! the binary is missing, unless `RBEE_REQUIRE_REGISTRY_TESTS` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A registry process; killed when dropped.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    storage: tempfile::TempDir,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("RBEE_DOCKER_REGISTRY")
        .map_or_else(|| PathBuf::from("/usr/bin/docker-registry"), PathBuf::from);
    if candidate.is_file() {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("RBEE_REQUIRE_REGISTRY_TESTS").is_none(),
        "{} is missing: apt-get install docker-registry",
        candidate.display()
    );
    eprintln!("skipped: no docker-registry (apt-get install docker-registry)");
    None
}

impl Registry {
    /// Starts one; None (the test skips) without the binary.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// Starts one that lets in only this user name and password.
    pub fn start_with_password(user: &str, password: &str) -> Option<Self> {
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Option<Self> {
        let bin = binary()?;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap();
            let storage = tempfile::tempdir().unwrap();
            let config = storage.path().join("config.yml");
            let mut text = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            );
            if let Some((user, password)) = login {
                let file = storage.path().join("htpasswd");
                let hash = bcrypt::hash(password, 5).unwrap();
                fs_err::write(&file, format!("{user}:{hash}\n")).unwrap();
                text.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: rbee-test\n    path: {}\n",
                    file.display()
                ));
            }
            fs_err::write(&config, text).unwrap();
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut registry = Self {
                host: format!("127.0.0.1:{port}"),
                storage,
                child,
            };
            if registry.wait_ready() {
                return Some(registry);
            }
        }
        panic!("docker-registry did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            if let Ok(mut s) = std::net::TcpStream::connect(&self.host) {
                use std::io::{Read as _, Write as _};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(
                    s,
                    "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.host
                );
                let mut head = [0u8; 12];
                // 401 where it asks for a password: it is up
                if s.read_exact(&mut head).is_ok()
                    && (head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.1 401"))
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The file holding a blob in the registry's storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The storage folder.
    pub fn storage(&self) -> &Path {
        self.storage.path()
    }
}
