//! A Hugging Face hub on `127.0.0.1:0`, for tests: the tree API, `resolve` with the
//! hub's headers (`X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Linked-Size`), ranges
//! clamped like the hub's CDN, an optional redirect of LFS files to a second "CDN"
//! server, gated and missing repos with the hub's `X-Error-Code`s, and faults on
//! demand: dropped connections, 500s, 429 with `Retry-After`, stalls, corrupt bytes, a
//! lying `Content-Length`, no range support, a mirror that sends no length and ignores
//! ranges, throttling. It counts the bytes it sends. [`registry`] starts Debian's
//! `docker-registry` on loopback for the OCI tests.
#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::result_large_err,
    clippy::unwrap_used
)]

pub mod registry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream;
use sha2::{Digest, Sha256};

/// One file of a repo.
#[derive(Clone)]
pub struct RepoFile {
    pub path: String,
    pub data: Bytes,
    /// Stored with LFS: it has a sha256 oid and may be redirected to the CDN.
    pub lfs: bool,
}

impl RepoFile {
    pub fn lfs(path: &str, data: impl Into<Bytes>) -> Self {
        Self {
            path: path.into(),
            data: data.into(),
            lfs: true,
        }
    }

    pub fn plain(path: &str, data: impl Into<Bytes>) -> Self {
        Self {
            path: path.into(),
            data: data.into(),
            lfs: false,
        }
    }

    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.data))
    }

    fn git_oid(&self) -> String {
        // a stand-in for the git blob id: 40 hex digits derived from the content
        hex::encode(&Sha256::digest([b"blob ".as_slice(), &self.data].concat())[..20])
    }
}

/// A model repository.
#[derive(Clone)]
pub struct Repo {
    pub id: String,
    pub commit: String,
    pub files: Vec<RepoFile>,
    /// Needs `Authorization: Bearer <token>`.
    pub gated: bool,
}

impl Repo {
    pub fn new(id: &str, files: Vec<RepoFile>) -> Self {
        let commit = hex::encode(&Sha256::digest(id.as_bytes())[..20]);
        Self {
            id: id.into(),
            commit,
            files,
            gated: false,
        }
    }

    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }
}

/// Faults for the next data responses; each counter is used up as it fires.
#[derive(Default)]
pub struct Faults {
    /// Answer this many data requests with 500.
    pub fail_500: AtomicU64,
    /// Answer this many data requests with 429 and `Retry-After: retry_after_secs`.
    pub too_many: AtomicU64,
    pub retry_after_secs: AtomicU64,
    /// Cut this many data responses after `drop_after_bytes` bytes.
    pub drop_count: AtomicU64,
    pub drop_after_bytes: AtomicU64,
    /// Stall this many data responses after `stall_after_bytes` bytes: the
    /// connection stays open and sends nothing more.
    pub stall_count: AtomicU64,
    pub stall_after_bytes: AtomicU64,
    /// Flip the byte at this file offset in everything served (u64::MAX: off).
    pub corrupt_offset: AtomicU64,
    /// Announce this many bytes more in `Content-Length` than are sent, this many times.
    pub lie_count: AtomicU64,
    /// Ignore `Range` and send every file whole, without `Accept-Ranges`.
    pub no_ranges: AtomicBool,
    /// Answer like a plain mirror of the hub: `Range` ignored, the whole file in a
    /// chunked body with no `Content-Length`, and no `X-Linked-*` headers.
    pub mirror: AtomicBool,
    /// Send at most this many bytes per second on each response (0: unlimited).
    pub throttle_bytes_per_sec: AtomicU64,
}

fn take(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

pub struct ServerState {
    repos: Mutex<HashMap<String, Repo>>,
    pub token: Option<String>,
    pub faults: Faults,
    pub bytes_sent: AtomicU64,
    pub data_requests: AtomicU64,
    /// Requests the CDN got with an `Authorization` header: must stay 0.
    pub cdn_saw_authorization: AtomicU64,
    /// Requests the hub got with the right token.
    pub hub_saw_token: AtomicU64,
    cdn_url: Mutex<Option<String>>,
}

/// A running hub (and CDN, when asked for). Stops when dropped.
pub struct HfServer {
    pub addr: SocketAddr,
    pub cdn_addr: Option<SocketAddr>,
    pub state: Arc<ServerState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for HfServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl HfServer {
    /// Starts a hub serving `repos`; `token` opens the gated ones; `cdn` sends LFS
    /// downloads through a redirect to a second server.
    pub async fn start(repos: Vec<Repo>, token: Option<&str>, cdn: bool) -> Self {
        let state = Arc::new(ServerState {
            repos: Mutex::new(repos.into_iter().map(|r| (r.id.clone(), r)).collect()),
            token: token.map(str::to_owned),
            faults: Faults {
                corrupt_offset: AtomicU64::new(u64::MAX),
                ..Faults::default()
            },
            bytes_sent: AtomicU64::new(0),
            data_requests: AtomicU64::new(0),
            cdn_saw_authorization: AtomicU64::new(0),
            hub_saw_token: AtomicU64::new(0),
            cdn_url: Mutex::new(None),
        });
        let mut tasks = Vec::new();
        let mut cdn_addr = None;
        if cdn {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            *state.cdn_url.lock().unwrap() = Some(format!("http://{addr}"));
            let app = Router::new()
                .route("/lfs/{sha}", get(cdn_file))
                .with_state(Arc::clone(&state));
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
            cdn_addr = Some(addr);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/api/models/{org}/{name}/tree/{rev}", get(tree))
            .route("/api/models/{org}/{name}/revision/{rev}", get(revision))
            .route(
                "/{org}/{name}/resolve/{rev}/{*path}",
                get(resolve).head(resolve),
            )
            .with_state(Arc::clone(&state));
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        Self {
            addr,
            cdn_addr,
            state,
            tasks,
        }
    }

    /// The hub's base URL, for `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }

    pub fn add_repo(&self, repo: Repo) {
        self.state
            .repos
            .lock()
            .unwrap()
            .insert(repo.id.clone(), repo);
    }

    pub fn repo(&self, id: &str) -> Repo {
        self.state.repos.lock().unwrap()[id].clone()
    }

    /// The URL of a file through `resolve`.
    pub fn resolve_url(&self, repo: &str, rev: &str, path: &str) -> String {
        format!("{}/{repo}/resolve/{rev}/{path}", self.url())
    }
}

fn hub_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    r.headers_mut()
        .insert("x-error-code", HeaderValue::from_str(code).unwrap());
    r.headers_mut()
        .insert("x-error-message", HeaderValue::from_str(message).unwrap());
    r
}

/// The repo, if it exists and this request may see it; else the hub's answer.
fn find_repo(state: &ServerState, headers: &HeaderMap, id: &str) -> Result<Repo, Response> {
    let repo = state.repos.lock().unwrap().get(id).cloned();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let authorized = state
        .token
        .as_ref()
        .is_some_and(|t| auth == Some(&format!("Bearer {t}")));
    if authorized {
        state.hub_saw_token.fetch_add(1, Ordering::SeqCst);
    }
    match repo {
        // the hub answers 401 for repos that do not exist, as for private ones
        None => Err(hub_error(
            StatusCode::UNAUTHORIZED,
            "RepoNotFound",
            "Repository Not Found for url. Please make sure you specified the correct `repo_id`.",
        )),
        Some(r) if r.gated && !authorized => Err(hub_error(
            StatusCode::UNAUTHORIZED,
            "GatedRepo",
            &format!(
                "Access to model {} is restricted. You must have access to it and be authenticated to access it.",
                r.id
            ),
        )),
        Some(r) => Ok(r),
    }
}

/// The repo at a revision, or the hub's answer when it cannot be had.
fn repo_at(
    state: &ServerState,
    headers: &HeaderMap,
    org: &str,
    name: &str,
    rev: &str,
) -> Result<Repo, Response> {
    let repo = find_repo(state, headers, &format!("{org}/{name}"))?;
    check_rev(&repo, rev)?;
    Ok(repo)
}

fn check_rev(repo: &Repo, rev: &str) -> Result<(), Response> {
    if rev == "main" || rev == repo.commit {
        Ok(())
    } else {
        Err(hub_error(
            StatusCode::NOT_FOUND,
            "RevisionNotFound",
            &format!("Invalid rev id: {rev}"),
        ))
    }
}

async fn tree(
    State(state): State<Arc<ServerState>>,
    Path((org, name, rev)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = match repo_at(&state, &headers, &org, &name, &rev) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut entries = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for f in &repo.files {
        let mut parts: Vec<&str> = f.path.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            dirs.insert(parts[..i].join("/"));
        }
    }
    for d in dirs {
        entries.push(serde_json::json!({"type": "directory", "oid": "0000000000000000000000000000000000000000", "size": 0, "path": d}));
    }
    for f in &repo.files {
        let mut e = serde_json::json!({"type": "file", "oid": f.git_oid(), "size": f.data.len(), "path": f.path});
        if f.lfs {
            e["lfs"] =
                serde_json::json!({"oid": f.sha256(), "size": f.data.len(), "pointerSize": 134});
        }
        entries.push(e);
    }
    axum::Json(entries).into_response()
}

async fn revision(
    State(state): State<Arc<ServerState>>,
    Path((org, name, rev)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = match repo_at(&state, &headers, &org, &name, &rev) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let siblings: Vec<_> = repo
        .files
        .iter()
        .map(|f| serde_json::json!({"rfilename": f.path}))
        .collect();
    axum::Json(serde_json::json!({"id": repo.id, "sha": repo.commit, "siblings": siblings}))
        .into_response()
}

async fn resolve(
    State(state): State<Arc<ServerState>>,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let repo = match repo_at(&state, &headers, &org, &name, &rev) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(file) = repo.files.iter().find(|f| f.path == path).cloned() else {
        return hub_error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            &format!("{path} does not exist on \"{rev}\""),
        );
    };
    let cdn = state.cdn_url.lock().unwrap().clone();
    let etag = if file.lfs {
        file.sha256()
    } else {
        file.git_oid()
    };
    let mut common = HeaderMap::new();
    common.insert(
        "x-repo-commit",
        HeaderValue::from_str(&repo.commit).unwrap(),
    );
    common.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{etag}\"")).unwrap(),
    );
    if file.lfs {
        common.insert(
            "x-linked-etag",
            HeaderValue::from_str(&format!("\"{}\"", file.sha256())).unwrap(),
        );
        common.insert("x-linked-size", HeaderValue::from(file.data.len() as u64));
    }
    if let (true, Some(cdn)) = (file.lfs, cdn) {
        let mut r = StatusCode::FOUND.into_response();
        r.headers_mut().extend(common);
        let location = format!("{cdn}/lfs/{}?expires=never", file.sha256());
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
        return r;
    }
    serve(&state, &file.data, &headers, &method, common, &etag)
}

async fn cdn_file(
    State(state): State<Arc<ServerState>>,
    Path(sha): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        state.cdn_saw_authorization.fetch_add(1, Ordering::SeqCst);
    }
    let file = state
        .repos
        .lock()
        .unwrap()
        .values()
        .flat_map(|r| r.files.clone())
        .find(|f| f.lfs && f.sha256() == sha);
    let Some(file) = file else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut common = HeaderMap::new();
    common.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{sha}\"")).unwrap(),
    );
    serve(
        &state,
        &file.data,
        &headers,
        &method,
        common,
        &format!("\"{sha}\""),
    )
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against `size`, clamped like the CDN does.
fn parse_range(v: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || start > end {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

fn serve(
    state: &Arc<ServerState>,
    data: &Bytes,
    headers: &HeaderMap,
    method: &Method,
    mut out: HeaderMap,
    etag: &str,
) -> Response {
    let size = data.len() as u64;
    let f = &state.faults;
    let mirror = f.mirror.load(Ordering::SeqCst);
    let no_ranges = mirror || f.no_ranges.load(Ordering::SeqCst);
    if mirror {
        out.remove("x-linked-etag");
        out.remove("x-linked-size");
    }
    if method == Method::HEAD {
        if !mirror {
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        if !no_ranges {
            out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        let mut r = StatusCode::OK.into_response();
        r.headers_mut().extend(out);
        return r;
    }
    state.data_requests.fetch_add(1, Ordering::SeqCst);
    if take(&f.fail_500) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if take(&f.too_many) {
        let mut r = StatusCode::TOO_MANY_REQUESTS.into_response();
        let secs = f.retry_after_secs.load(Ordering::SeqCst);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let if_range_ok = headers.get(header::IF_RANGE).is_none_or(|v| {
        v.to_str().ok().map(|s| s.trim_matches('"')) == Some(etag.trim_matches('"'))
    });
    let range = (!no_ranges && if_range_ok)
        .then(|| {
            headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_range(v, size))
        })
        .flatten();
    let (status, start, end) = match range {
        Some(Err(())) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).unwrap(),
            );
            return r;
        }
        Some(Ok((s, e))) => {
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{e}/{size}")).unwrap(),
            );
            (StatusCode::PARTIAL_CONTENT, s, e + 1)
        }
        None => (StatusCode::OK, 0, size),
    };
    if !no_ranges {
        out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    let mut len = end - start;
    let mut body = data.slice(usize::try_from(start).unwrap()..usize::try_from(end).unwrap());
    let corrupt = f.corrupt_offset.load(Ordering::SeqCst);
    if (start..end).contains(&corrupt) {
        let mut v = body.to_vec();
        let i = usize::try_from(corrupt - start).unwrap();
        v[i] ^= 0xFF;
        body = Bytes::from(v);
    }
    if take(&f.lie_count) {
        len += 100;
    }
    if !mirror {
        // without it, the body goes out chunked
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let cut = take(&f.drop_count).then(|| f.drop_after_bytes.load(Ordering::SeqCst));
    let stall = take(&f.stall_count).then(|| f.stall_after_bytes.load(Ordering::SeqCst));
    let throttle = f.throttle_bytes_per_sec.load(Ordering::SeqCst);
    let mut r = Response::new(Body::from_stream(body_stream(
        Arc::clone(state),
        body,
        cut,
        stall,
        throttle,
    )));
    *r.status_mut() = status;
    r.headers_mut().extend(out);
    r
}

const CHUNK: usize = 64 * 1024;

fn body_stream(
    state: Arc<ServerState>,
    body: Bytes,
    cut: Option<u64>,
    stall: Option<u64>,
    throttle: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    stream::unfold((0usize, body), move |(at, body)| {
        let state = Arc::clone(&state);
        async move {
            if at >= body.len() {
                return None;
            }
            let mut n = CHUNK.min(body.len() - at);
            if throttle > 0 {
                n = n.min(usize::try_from(throttle / 10).unwrap_or(CHUNK).max(1));
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / throttle as f64)).await;
            }
            let sent = at as u64;
            if let Some(limit) = stall.filter(|&l| sent + n as u64 > l) {
                let allowed = usize::try_from(limit.saturating_sub(sent)).unwrap();
                if allowed == 0 {
                    // stall: keep the connection open, send nothing
                    std::future::pending::<()>().await;
                }
                n = allowed;
            }
            if let Some(limit) = cut.filter(|&l| sent + n as u64 > l) {
                let allowed = usize::try_from(limit.saturating_sub(sent)).unwrap();
                if allowed == 0 {
                    return Some((
                        Err(std::io::Error::other("connection dropped on purpose")),
                        (body.len(), body),
                    ));
                }
                n = allowed;
            }
            let chunk = body.slice(at..at + n);
            state.bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
            Some((Ok(chunk), (at + n, body)))
        }
    })
}

/// Deterministic bytes that do not compress, for test files.
pub fn test_bytes(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        out.extend_from_slice(&Sha256::digest(
            [seed.to_le_bytes(), counter.to_le_bytes()].concat(),
        ));
        counter += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}

/// SmolLM2-135M-Instruct Q4_1, the real model the worker tests run, where
/// `scripts/fetch-test-model.sh` put it (`$RBEE_TEST_MODEL_DIR`, default
/// `~/.cache/rbee-test`). `None` means skip the test: the model is missing and
/// `RBEE_REQUIRE_MODEL_TESTS` is not set (with it, a missing model fails the test).
pub fn test_model() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("RBEE_TEST_MODEL_DIR").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/rbee-test")
        },
        std::path::PathBuf::from,
    );
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("RBEE_REQUIRE_MODEL_TESTS").is_none(),
        "{} is missing: run scripts/fetch-test-model.sh",
        path.display()
    );
    eprintln!(
        "skipped: {} is missing (scripts/fetch-test-model.sh fetches it)",
        path.display()
    );
    None
}

/// The Python that can `import modules` (`"openai, ollama"`): `RBEE_TEST_PYTHON`, else
/// the repo's `.venv` (made by `.ci/run`). `None` means skip the test: there is none
/// and `RBEE_REQUIRE_PYTHON_TESTS` is not set (with it, none fails the test).
pub fn python_with(modules: &str) -> Option<std::path::PathBuf> {
    let candidate = std::env::var_os("RBEE_TEST_PYTHON").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
        std::path::PathBuf::from,
    );
    let ok = std::process::Command::new(&candidate)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("RBEE_REQUIRE_PYTHON_TESTS").is_none(),
        "no python with {modules} at {}",
        candidate.display()
    );
    eprintln!(
        "skipped: no python with {modules} (python3 -m venv .venv && .venv/bin/pip install -r requirements-test.txt)"
    );
    None
}

/// Writes, under `dir`, a workspace shaped as this one is for the cargo vendor
/// (`[workspace.package]` version 0.1.0, a package `llm-worker` with a binary
/// `llm-worker-rbee`), whose only crate answers `--version` and exits: a cargo build
/// of it takes seconds, where the real worker's takes minutes. Its `Cargo.lock` is
/// cargo's own (`generate-lockfile --offline`: it has no dependency). The folder.
pub fn tiny_worker_source(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("tiny-worker");
    let krate = root.join("crates/llm-worker");
    fs_err::create_dir_all(krate.join("src")).expect("tiny workspace");
    let files = [
        (
            root.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/llm-worker\"]\nresolver = \"2\"\n\n[workspace.package]\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        (
            krate.join("Cargo.toml"),
            "[package]\nname = \"llm-worker\"\nversion.workspace = true\nedition.workspace = true\n\n[[bin]]\nname = \"llm-worker-rbee\"\npath = \"src/main.rs\"\n",
        ),
        (
            krate.join("src/main.rs"),
            "fn main() {\n    if std::env::args().any(|a| a == \"--version\") {\n        println!(\"llm-worker-rbee 0.1.0\");\n    }\n}\n",
        ),
    ];
    for (path, text) in files {
        fs_err::write(path, text).expect("tiny workspace");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["generate-lockfile", "--offline"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo generate-lockfile in {}",
        root.display()
    );
    root
}
