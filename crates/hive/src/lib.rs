//! rbee-hive: the daemon that owns this machine's models (and, to come, worker
//! binaries and worker processes), over one HTTP API.
//!
//! `main.rs` only parses the configuration and runs [`serve`]; [`app`] builds the
//! router from each resource's own `router()`.
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod routes;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use artifact_catalog::ArtifactStatus;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use model_catalog::ModelCatalog;
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::ApiError;
use crate::jobs::Jobs;
use crate::state::{AppState, SharedState};

/// The most a request body may be.
const MAX_BODY: usize = 1 << 20;
/// How long shutdown waits for jobs to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// The API.
pub fn app(state: SharedState) -> Router {
    Router::new()
        .merge(routes::system::router())
        .merge(routes::models::router())
        .merge(routes::jobs::router())
        .route("/metrics", axum::routing::get(metrics::render))
        .route("/openapi.json", axum::routing::get(openapi::document))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::track,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .with_state(state)
}

/// With a token, every route but `/health` needs `Authorization: Bearer <token>`.
async fn auth(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let Some(token) = state.config.api_token.as_deref().filter(|t| !t.is_empty()) else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // constant time, and the same for a wrong length
    let (a, b) = (sha(given), sha(token));
    if bool::from(a.ct_eq(&b)) {
        return next.run(request).await;
    }
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

fn sha(s: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).into()
}

/// Opens the home folder (one daemon per home, held by a lock file), the catalog and
/// the provisioner.
pub fn build_state(config: Config) -> anyhow::Result<(SharedState, std::fs::File)> {
    let home = config.home();
    fs_err::create_dir_all(&home)?;
    let lock_path = home.join("hive.lock");
    let lock = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?
        .into_parts()
        .0;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another rbee-hive is running with home {}", home.display())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).context(format!("cannot lock {}", lock_path.display()));
        }
    }
    let catalog = ModelCatalog::open(&home, config.catalog_backend)
        .with_context(|| format!("cannot open the model catalog in {}", home.display()))?;
    let mut hub = model_provisioner::HubConfig::from_env().map_err(anyhow::Error::msg)?;
    if let Some(e) = &config.hf_endpoint {
        hub.endpoint = url::Url::parse(e.trim_end_matches('/'))
            .with_context(|| format!("bad --hf-endpoint {e:?}"))?;
    }
    if let Some(t) = config.hf_token.clone() {
        hub.token = Some(t);
    }
    let downloader = download::Downloader::new(download::DownloadConfig {
        connections: config.download_connections,
        bandwidth_limit: config.bandwidth_limit,
        ..download::DownloadConfig::default()
    })?;
    let provisioner = model_provisioner::model_provisioner(&home, hub, downloader);
    let state = Arc::new(AppState {
        download_slots: Arc::new(Semaphore::new(config.max_concurrent_downloads)),
        config,
        home,
        catalog: Arc::new(catalog),
        provisioner: Arc::new(provisioner),
        jobs: Jobs::default(),
        started: Instant::now(),
        metrics: metrics::Metrics::default(),
        models_cache: state::ModelsCache::default(),
    });
    Ok((state, lock))
}

/// Models left `Downloading` by a daemon that died: each gets a job that resumes it
/// from its partial file.
pub async fn resume_downloads(state: &SharedState) -> anyhow::Result<usize> {
    let catalog = Arc::clone(&state.catalog);
    let pending: Vec<_> = tokio::task::spawn_blocking(move || catalog.list())
        .await??
        .into_iter()
        .filter(|r| r.artifact.status == ArtifactStatus::Downloading)
        .map(|r| r.artifact)
        .collect();
    for entry in &pending {
        tracing::info!(id = %entry.id, "resuming a download the last run left unfinished");
        ops::fetch_job(state, "model_download", entry.clone());
    }
    Ok(pending.len())
}

/// Serves until SIGTERM or SIGINT, then cancels the jobs (keeping partials) and returns.
pub async fn serve(state: SharedState, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let shutdown = state.jobs.shutdown.clone();
    let app = app(Arc::clone(&state));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: cancelling jobs, keeping partial downloads");
            shutdown.cancel();
        })
        .await?;
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while state.jobs.any_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
