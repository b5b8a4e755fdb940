//! Talking to a registry: the distribution API over HTTPS (plain HTTP only for
//! registries marked insecure), with its three ways in: anonymous, basic, and the
//! Bearer token flow a `401` names in `WWW-Authenticate` (realm, service, scope),
//! the token asked for with the user's credentials when there are some.
//! Credentials come from `RBEE_OCI_USERNAME` / `RBEE_OCI_PASSWORD`, else from
//! `~/.docker/config.json` (`auths`, and credential helpers) as docker and oras
//! write it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde::Deserialize;

use super::OciReference;
use crate::ProvisionError;

/// How long one call to the registry's API (not a blob) may take.
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// Which registries are reached over plain HTTP, and the user's credentials.
#[derive(Clone, Default)]
pub struct OciConfig {
    /// `HOST[:PORT]`s reached over plain HTTP (`--oci-insecure`, `RBEE_OCI_INSECURE`).
    pub insecure: Vec<String>,
    /// A user name and password (`RBEE_OCI_USERNAME`, `RBEE_OCI_PASSWORD`) for the
    /// registries in `credential_hosts` alone, overriding docker's config there.
    pub credentials: Option<(String, String)>,
    /// The `HOST[:PORT]`s `credentials` are for (`RBEE_OCI_REGISTRIES`): no other
    /// registry is ever sent them.
    pub credential_hosts: Vec<String>,
    /// The registry `ollama:` names are pulled from (`RBEE_OLLAMA_REGISTRY`); empty
    /// for Ollama's own, [`OLLAMA_REGISTRY`].
    pub ollama_registry: String,
}

/// The registry of Ollama's library.
pub const OLLAMA_REGISTRY: &str = "registry.ollama.ai";

impl std::fmt::Debug for OciConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciConfig")
            .field("insecure", &self.insecure)
            .field("credentials", &self.credentials.as_ref().map(|(u, _)| u))
            .field("credential_hosts", &self.credential_hosts)
            .field("ollama_registry", &self.ollama_registry)
            .finish()
    }
}

/// What a registry is answered with when it asks.
#[derive(Clone)]
enum Secret {
    /// A user name and password: basic auth, or the token service's basic auth.
    Password(String, String),
    /// An identity token (`identitytoken` in docker's config, as ACR and others
    /// write it): a refresh token for the OAuth2 token service.
    IdentityToken(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password(u, _) => write!(f, "Password({u}, ...)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(...)"),
        }
    }
}

fn host_list(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

impl OciConfig {
    /// From `RBEE_OCI_INSECURE` (comma-separated hosts), `RBEE_OCI_USERNAME`,
    /// `RBEE_OCI_PASSWORD` and `RBEE_OCI_REGISTRIES` (the hosts those are for).
    pub fn from_env() -> Self {
        let credentials = match (
            std::env::var("RBEE_OCI_USERNAME"),
            std::env::var("RBEE_OCI_PASSWORD"),
        ) {
            (Ok(u), Ok(p)) if !u.is_empty() => Some((u, p)),
            _ => None,
        };
        Self {
            insecure: host_list("RBEE_OCI_INSECURE"),
            credentials,
            credential_hosts: host_list("RBEE_OCI_REGISTRIES"),
            ollama_registry: std::env::var("RBEE_OLLAMA_REGISTRY").unwrap_or_default(),
        }
    }

    /// The registry `ollama:` names come from.
    pub fn ollama_registry(&self) -> &str {
        match self.ollama_registry.trim() {
            "" => OLLAMA_REGISTRY,
            r => r,
        }
    }

    /// Whether `host` (`HOST[:PORT]`) is reached over plain HTTP.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// A warning for credentials set for no registry, to say at start.
    pub fn unscoped_credentials(&self) -> Option<String> {
        (self.credentials.is_some() && self.credential_hosts.is_empty()).then(|| {
            "RBEE_OCI_USERNAME and RBEE_OCI_PASSWORD are sent to no registry: name the registries they are for in RBEE_OCI_REGISTRIES (HOST[:PORT],...)".to_owned()
        })
    }

    /// The secret for `registry`: ours where it is one of `credential_hosts`, else
    /// docker's for that host.
    fn credentials_for(&self, registry: &str) -> Option<Secret> {
        if let Some((u, p)) = &self.credentials
            && self
                .credential_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(registry))
        {
            return Some(Secret::Password(u.clone(), p.clone()));
        }
        let keys = [
            registry.to_owned(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ];
        keys.iter()
            .find_map(|k| match docker_credential::get_credential(k).ok()? {
                docker_credential::DockerCredential::UsernamePassword(u, p) => {
                    Some(Secret::Password(u, p))
                }
                docker_credential::DockerCredential::IdentityToken(t) => {
                    Some(Secret::IdentityToken(t))
                }
            })
    }
}

/// How requests to one repository are authorized, once found out.
#[derive(Debug, Clone, Default)]
enum Auth {
    #[default]
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

/// A client for one repository on a registry.
#[derive(Debug, Clone)]
pub struct Repository {
    http: reqwest::Client,
    base: String,
    /// `org/model`.
    pub name: String,
    registry: String,
    credentials: Option<Secret>,
    /// Hosts reached over plain HTTP: a token realm there may be plain HTTP too.
    insecure: Vec<String>,
    auth: Arc<Mutex<Auth>>,
    push: bool,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge, after its scheme.
fn challenge_params(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_owned()));
        rest = next;
    }
    out
}

impl Repository {
    /// A client for `r`'s repository; `push` asks for push rights too.
    pub fn new(http: reqwest::Client, config: &OciConfig, r: &OciReference, push: bool) -> Self {
        let scheme = if config.is_insecure(&r.registry) {
            "http"
        } else {
            "https"
        };
        Self {
            http,
            base: format!("{scheme}://{}/v2/{}", r.registry, r.repository),
            name: r.repository.clone(),
            registry: r.registry.clone(),
            credentials: config.credentials_for(&r.registry),
            insecure: config.insecure.clone(),
            auth: Arc::default(),
            push,
        }
    }

    /// `.../v2/REPO/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// The credential a download of a blob sends, as found out so far.
    pub fn credential(&self) -> Option<download::Credential> {
        match &*self.auth.lock().unwrap_or_else(PoisonError::into_inner) {
            Auth::Anonymous => None,
            Auth::Basic(u, p) => Some(download::Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            }),
            Auth::Bearer(t) => Some(download::Credential::Bearer(t.clone())),
        }
    }

    fn authorize(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &*self.auth.lock().unwrap_or_else(PoisonError::into_inner) {
            Auth::Anonymous => rb,
            Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Auth::Bearer(t) => rb.bearer_auth(t),
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> ProvisionError {
        let hint = if e.is_connect() {
            "; is it running, and is it plain HTTP (then mark it insecure: --oci-insecure HOST)?"
        } else {
            ""
        };
        ProvisionError::download(
            "registry_unreachable",
            format!("registry {} did not answer: {e}{hint}", self.registry),
            e,
        )
    }

    /// Sends a request built by `build`, answering a `401` once by the challenge
    /// it carries; the `401` after that is the caller's (an `Unauthorized`).
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProvisionError> {
        let attempt = || async {
            self.authorize(build(&self.http))
                .timeout(API_TIMEOUT)
                .send()
                .await
                .map_err(|e| self.unreachable(e))
        };
        let r = attempt().await?;
        if r.status() != StatusCode::UNAUTHORIZED {
            return Ok(r);
        }
        let challenge = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.answer(&challenge).await?;
        let r = attempt().await?;
        if r.status() == StatusCode::UNAUTHORIZED {
            return Err(ProvisionError::Unauthorized(format!(
                "registry {} refused {} (401){}",
                self.registry,
                self.name,
                if self.credentials.is_some() {
                    ": check the credentials"
                } else {
                    ": it needs credentials (docker login / oras login, or RBEE_OCI_USERNAME and RBEE_OCI_PASSWORD with the registry in RBEE_OCI_REGISTRIES)"
                }
            )));
        }
        Ok(r)
    }

    /// Answers a challenge: basic with the credentials, or a token from the realm.
    async fn answer(&self, challenge: &str) -> Result<(), ProvisionError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let refused = |why: &str| {
            ProvisionError::Unauthorized(format!(
                "registry {} refused {} (401): {why}",
                self.registry, self.name
            ))
        };
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(Secret::Password(u, p)) = self.credentials.clone() else {
                return Err(refused(
                    "it needs a user name and password (docker login / oras login, or RBEE_OCI_USERNAME and RBEE_OCI_PASSWORD with the registry in RBEE_OCI_REGISTRIES)",
                ));
            };
            *self.auth.lock().unwrap_or_else(PoisonError::into_inner) = Auth::Basic(u, p);
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(refused(&format!(
                "it asks for {scheme:?} authentication, which is not supported"
            )));
        }
        let params = challenge_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let realm = get("realm").ok_or_else(|| refused("its Bearer challenge names no realm"))?;
        let mut url = url::Url::parse(&realm)
            .map_err(|e| refused(&format!("its token realm {realm:?} is not a URL: {e}")))?;
        // a token realm is HTTPS; plain HTTP only beside a registry named insecure,
        // and credentials over plain HTTP only to a host named insecure itself
        let realm_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => String::new(),
        };
        let send_secret = match url.scheme() {
            "https" => true,
            "http"
                if self
                    .insecure
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&self.registry)) =>
            {
                self.insecure
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&realm_host))
            }
            "http" => {
                return Err(refused(&format!(
                    "its token realm {realm} is plain HTTP; a realm must be HTTPS unless the registry is named in --oci-insecure"
                )));
            }
            other => {
                return Err(refused(&format!(
                    "its token realm {realm} is {other}:, not HTTPS"
                )));
            }
        };
        let secret = self.credentials.clone().filter(|_| send_secret);
        let actions = if self.push { "pull,push" } else { "pull" };
        let scope = get("scope").unwrap_or_else(|| format!("repository:{}:{actions}", self.name));
        let service = get("service");
        let rb = match &secret {
            // OAuth2: the identity token is a refresh token
            Some(Secret::IdentityToken(t)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", t.clone()),
                    ("client_id", "rbee-hive".to_owned()),
                    ("scope", scope.clone()),
                ];
                if let Some(s) = &service {
                    form.push(("service", s.clone()));
                }
                self.http.post(url).form(&form)
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &scope);
                }
                let rb = self.http.get(url);
                match &secret {
                    Some(Secret::Password(u, p)) => rb.basic_auth(u, Some(p)),
                    _ => rb,
                }
            }
        }
        .timeout(API_TIMEOUT);
        let r = rb.send().await.map_err(|e| self.unreachable(e))?;
        if !r.status().is_success() {
            return Err(refused(&format!(
                "its token server answered {}",
                r.status()
            )));
        }
        let answer: TokenAnswer = r
            .json()
            .await
            .map_err(|e| refused(&format!("its token server's answer is not a token: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| refused("its token server gave no token"))?;
        *self.auth.lock().unwrap_or_else(PoisonError::into_inner) = Auth::Bearer(token);
        Ok(())
    }

    /// `HEAD` or `GET` on a path under the repository, as `method`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
    ) -> Result<reqwest::Response, ProvisionError> {
        let url = self.url(path);
        self.send(|c| c.request(method.clone(), &url)).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn challenges() {
        let p = super::challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(p[1], ("service".into(), "registry.docker.io".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
        let p = super::challenge_params(r#"realm=http://x/t, service=reg"#);
        assert_eq!(p[0], ("realm".into(), "http://x/t".into()));
        assert_eq!(p[1], ("service".into(), "reg".into()));
    }
}
