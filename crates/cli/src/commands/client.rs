//! Talking to a hive: JSON calls, errors as one line, SSE events.

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The token: `--token`, else `--token-file`, else, for a hive on this machine, the
/// token file in the default home when there is one.
fn token(args: &HiveArgs, base: &str) -> anyhow::Result<Option<String>> {
    if let Some(t) = args.token.clone().filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    let read = |path: &std::path::Path| -> anyhow::Result<String> {
        let text = fs_err::read_to_string(path)?;
        Ok(text.lines().next().unwrap_or("").trim().to_owned())
    };
    if let Some(path) = &args.token_file {
        return read(path).map(Some);
    }
    let local = url::Url::parse(base).ok().is_some_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    });
    let home = std::env::var_os("RBEE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/rbee"))
        });
    match home.map(|h| h.join("api-token")) {
        Some(path) if local && path.is_file() => Ok(Some(read(&path)?).filter(|t| !t.is_empty())),
        _ => Ok(None),
    }
}

/// Where the hive is and how to talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct HiveArgs {
    /// The hive's URL
    #[arg(
        long,
        env = "RBEE_HIVE_URL",
        default_value = "http://127.0.0.1:7835",
        global = true
    )]
    pub hive_url: String,
    /// The hive's API token
    #[arg(long, env = "RBEE_API_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A file holding the hive's API token, as the hive's --api-token-file [default:
    /// ~/.cache/rbee/api-token, for a hive on this machine, when it exists]
    #[arg(long, env = "RBEE_API_TOKEN_FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &HiveArgs) -> anyhow::Result<Self> {
        let base = args.hive_url.trim_end_matches('/').to_owned();
        Ok(Self {
            http: reqwest::Client::builder().build()?,
            token: token(args, &base)?,
            base,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a request; a hive error becomes one line naming its message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the hive at {}: {}", self.base, root_cause(&e))
        })?;
        let status = resp.status();
        let text = resp.text().await.context("reading the hive's answer")?;
        if status.is_success() {
            return serde_json::from_str(&text).context("the hive's answer is not JSON");
        }
        let mut e = HiveError::from_answer(status, &text);
        if status == StatusCode::UNAUTHORIZED {
            e.message = format!(
                "the hive refused the request: {} (set --token, RBEE_API_TOKEN or RBEE_API_TOKEN_FILE)",
                e.message
            );
        }
        Err(e.into())
    }

    /// POSTs `body` and hands back the answer to read as it comes (a stream); an
    /// error answer is a [`HiveError`].
    pub async fn post_streaming(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .request(Method::POST, path)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach the hive at {}: {}", self.base, root_cause(&e))
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(HiveError::from_answer(status, &text).into())
    }

    /// A text answer and its `x-log-offset` header (the length read up to).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<(String, u64)> {
        let resp = self.request(Method::GET, path).send().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the hive at {}: {}", self.base, root_cause(&e))
        })?;
        let status = resp.status();
        let offset = resp
            .headers()
            .get("x-log-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let text = resp.text().await.context("reading the hive's answer")?;
        if !status.is_success() {
            return Err(HiveError::from_answer(status, &text).into());
        }
        Ok((text, offset))
    }

    /// Follows a job's SSE stream, calling `on_event(kind, data)` until `done`.
    pub async fn follow(
        &self,
        job_id: &str,
        mut on_event: impl FnMut(&str, &Value),
    ) -> anyhow::Result<Value> {
        let resp = self
            .request(Method::GET, &format!("/v1/jobs/{job_id}/stream"))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach the hive at {}: {}", self.base, root_cause(&e))
            })?;
        if !resp.status().is_success() {
            bail!("cannot follow job {job_id}: {}", resp.status());
        }
        // bytes split anywhere (a character across two chunks), data on several
        // lines, comments: the one SSE decoder
        let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| anyhow::anyhow!("the event stream broke: {e}"))?;
            let v: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            on_event(&event.event, &v);
            if event.event == "done" {
                return Ok(v);
            }
        }
        bail!("the hive closed the event stream of job {job_id} before it finished")
    }
}

/// An error the hive answered: its status, its code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiveError {
    /// The HTTP status.
    pub status: u16,
    /// The hive's machine-readable code (`not_found`), or `http_<status>` for an
    /// answer that is not the hive's error shape.
    pub code: String,
    /// What the hive said.
    pub message: String,
}

impl HiveError {
    fn from_answer(status: StatusCode, text: &str) -> Self {
        let v = serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        let error = &v["error"];
        let message = error["message"]
            .as_str()
            .or_else(|| error.as_str())
            .map_or_else(|| text.trim().to_owned(), str::to_owned);
        let code = error["code"]
            .as_str()
            .map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned);
        Self {
            status: status.as_u16(),
            code,
            message,
        }
    }
}

impl std::fmt::Display for HiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HiveError {}

fn root_cause(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

/// Every byte but the unreserved ones (RFC 3986): an id as one URL path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// An id as one URL path segment.
pub fn encode_id(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}
