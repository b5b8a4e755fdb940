//! rbee-hive: the daemon that owns this machine's models, worker binaries and
//! worker processes, over one HTTP API.
//!
//! `main.rs` only parses the configuration and runs [`serve`]; [`app`] builds the
//! router from each resource's own `router()`.
#![deny(missing_docs)]

pub mod api;
pub mod audit;
pub mod batch;
pub mod capabilities;
pub mod config;
pub mod dashboard;
pub mod engines;
pub mod error;
pub mod fleet;
pub mod gateway;
pub mod jobs;
pub mod membership;
pub mod metrics;
pub mod ops;
pub mod sampling;
pub mod secret;
pub mod shutdown;
pub mod state;
pub mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use artifact_catalog::ArtifactStatus;
use axum::Router;
use axum::middleware::{self};
use axum::serve::ListenerExt as _;
use model_catalog::ModelCatalog;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::ApiError;
use crate::jobs::Jobs;
use crate::state::{AppState, SharedState};

/// How long shutdown waits, after the workers are stopped, for jobs (cancelled at the
/// signal) to finish stopping.
const JOBS_GRACE: Duration = Duration::from_secs(2);
/// How long the streams ended at the grace's end get to send their last event.
const STREAMS_FLUSH: Duration = Duration::from_secs(2);

/// The API.
pub fn app(state: SharedState) -> Router {
    let gateway = Arc::new(gateway::Gateway::new(Arc::clone(&state)));
    app_with(state, gateway)
}

/// The API, with the one endpoint's state made by the caller.
fn app_with(state: SharedState, gateway: gateway::SharedGateway) -> Router {
    let edge = Arc::new(api::guard::Edge::new(&state.config));
    Router::new()
        .merge(api::system::router())
        .merge(api::fleet::router())
        .merge(api::models::router())
        .merge(api::jobs::router())
        .merge(api::workers::router())
        .route("/metrics", axum::routing::get(api::metrics::render))
        .route("/openapi.json", axum::routing::get(api::openapi::document))
        .merge(dashboard::router())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(api::MAX_BODY))
        // the one endpoint takes longer bodies (long chats) and answers a body too
        // large in its own families' shapes
        .merge(
            Router::new()
                .merge(gateway::openai::router())
                .merge(gateway::ollama::router())
                .merge(gateway::modelfile::router())
                .merge(gateway::anthropic::router())
                .layer(middleware::from_fn_with_state(
                    Arc::clone(&gateway),
                    gateway::peers::to_a_peer,
                ))
                .layer(axum::extract::DefaultBodyLimit::max(gateway::MAX_BODY))
                .with_state(gateway),
        )
        .fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError::not_found(format!(
                "no such route: {method} {}; the hive serves its API under /v1 (GET /openapi.json lists every route), OpenAI's at /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses and under /openai/v1, Anthropic's at /v1/messages, reranking at /v1/rerank, Ollama's under /api, and the dashboard at /",
                uri.path()
            ))
        })
        .layer(middleware::from_fn(api::plain_errors::as_json))
        .layer(middleware::from_fn(jobs::deadline))
        // outermost last: the edge's checks, then CORS, then the token, and only a
        // request let in is audited
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            api::audit::record,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            api::auth::auth,
        ))
        .layer(api::guard::cors(Arc::clone(&edge)))
        .layer(middleware::from_fn(move |request, next| {
            api::guard::guard(Arc::clone(&edge), request, next)
        }))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            api::metrics::track,
        ))
        .with_state(state)
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
    let catalog_health = state::SharedHealth::default();
    let catalog =
        ops::repair::open_or_set_aside(&home, config.catalog_backend, &catalog_health, || {
            ModelCatalog::open(&home, config.catalog_backend)
        })
        .with_context(|| format!("cannot open the model catalog in {}", home.display()))?;
    let mut oci = model_provisioner::oci::OciConfig::from_env();
    oci.insecure.clone_from(&config.oci_insecure);
    model_provisioner::oci::OciReference::parse(&format!(
        "oci://{}/library/check",
        config.ollama_registry
    ))
    .map_err(|_| {
        anyhow::anyhow!(
            "bad --ollama-registry {:?}: expected HOST or HOST:PORT",
            config.ollama_registry
        )
    })?;
    oci.ollama_registry.clone_from(&config.ollama_registry);
    if let Some(warning) = oci.unscoped_credentials() {
        tracing::warn!("{warning}");
    }
    let mut hub = model_provisioner::HubConfig::from_env().map_err(anyhow::Error::msg)?;
    if let Some(m) = &config.model_mirror {
        hub.mirror = Some(
            model_provisioner::oci::Mirror::parse(m, oci.clone())
                .map_err(|e| anyhow::anyhow!("bad --model-mirror: {e}"))?,
        );
    }
    if let Some(e) = &config.hf_endpoint {
        hub.endpoint = url::Url::parse(e.trim_end_matches('/'))
            .with_context(|| format!("bad --hf-endpoint {e:?}"))?;
    }
    if let Some(t) = config.hf_token.clone() {
        hub.token = Some(t);
    }
    if config.hf_cache_layout {
        let cache = model_provisioner::hf_cache::hub_cache_dir().ok_or_else(|| {
            anyhow::anyhow!(
                "--hf-cache-layout: set HF_HUB_CACHE, HF_HOME or HOME to say where the hub cache is"
            )
        })?;
        fs_err::create_dir_all(&cache)
            .with_context(|| format!("--hf-cache-layout: cannot make {}", cache.display()))?;
        hub.cache_layout = Some(cache);
    }
    let downloader = download::Downloader::new(download::DownloadConfig {
        connections: config.download_connections,
        bandwidth_limit: config.bandwidth_limit,
        ..download::DownloadConfig::default()
    })?;
    let worker_catalog =
        ops::repair::open_or_set_aside(&home, config.catalog_backend, &catalog_health, || {
            worker_catalog::WorkerCatalog::open(&home, config.catalog_backend)
        })
        .with_context(|| format!("cannot open the worker catalog in {}", home.display()))?;
    check_worker_binaries(&worker_catalog);
    let worker_provisioner = worker_provisioner::worker_provisioner(
        worker_provisioner::LocalBuildVendor {
            source_dir: config.worker_source_dir(),
            profile: config.worker_build_profile.clone(),
            target_dir: None,
            workers_dir: worker_catalog.workers_dir().to_path_buf(),
        },
        worker_provisioner::ReleaseVendor {
            downloader: downloader.clone(),
            workers_dir: worker_catalog.workers_dir().to_path_buf(),
            downloads_dir: home.join("downloads"),
        },
    );
    let http = downloader.client().clone();
    let provisioner = model_provisioner::model_provisioner(&home, hub, oci.clone(), downloader);
    let metrics = metrics::Metrics::default();
    let shutdown = shutdown::Shutdown::default();
    let workers = Arc::new(workers::Registry::new(
        &home,
        workers::Supervision {
            ready_timeout: Duration::from_secs(config.worker_ready_timeout_secs.max(1)),
            health_interval: Duration::from_secs(config.health_interval_secs.max(1)),
            max_failed_checks: config.max_failed_health_checks.max(1),
            max_restarts: config.max_restarts,
            backoff: Duration::from_millis(config.restart_backoff_ms),
            max_backoff: Duration::from_secs(60),
            stop_grace: Duration::from_secs(config.worker_stop_grace_secs),
            ports: config.worker_ports,
            log_max_bytes: config.worker_log_max_bytes.max(1 << 20),
            stall: Duration::from_secs(config.worker_stall_secs),
            kv_cache_max_bytes: config.kv_cache_max_bytes,
        },
        metrics.worker.clone(),
        shutdown.clone(),
    ));
    let reaped = workers.run.reap_leftovers();
    if !reaped.is_empty() {
        tracing::warn!(?reaped, "stopped workers the last run left behind");
    }
    let audit = Arc::new(audit::AuditLog::new(&home));
    let etcd = fleet::etcd::EtcdAccess::from_config(&config).map_err(anyhow::Error::msg)?;
    let fleet = match &etcd {
        Some(_) => {
            let id = fleet::etcd::hive_id(&home)
                .with_context(|| format!("cannot keep this hive's id in {}", home.display()))?;
            Some(Arc::new(fleet::view::Fleet::new(
                config.fleet.clone(),
                id,
                config.fleet_token.clone(),
            )))
        }
        None => None,
    };
    let state = Arc::new(AppState {
        download_slots: Arc::new(Semaphore::new(config.max_concurrent_downloads)),
        config,
        home,
        catalog: Arc::new(catalog),
        provisioner: Arc::new(provisioner),
        jobs: Jobs::new(shutdown.clone()),
        shutdown,
        started: Instant::now(),
        metrics,
        models_cache: state::ModelsCache::default(),
        worker_catalog: Arc::new(worker_catalog),
        worker_provisioner: Arc::new(worker_provisioner),
        workers,
        audit,
        oci,
        http,
        storage_lock: tokio::sync::Mutex::new(()),
        catalog_health,
        fleet,
        etcd,
    });
    Ok((state, lock))
}

/// The worker binaries folder, as found at start: an entry whose executable is gone,
/// changed size or (where recorded) was modified is marked failed (and never run); one left installing by a hive
/// that died is failed too (install it again).
fn check_worker_binaries(catalog: &worker_catalog::WorkerCatalog) {
    let Ok(records) = catalog.list() else { return };
    for r in records {
        let b = &r.artifact;
        let problem = if b.status == ArtifactStatus::Downloading {
            Some("the install was interrupted".to_owned())
        } else {
            b.file_changed()
        };
        if let Some(problem) = problem
            && !matches!(b.status, ArtifactStatus::Failed { .. })
        {
            tracing::warn!(id = %b.id, "{problem}");
            let _ = catalog.set_status(&b.id, ArtifactStatus::Failed { error: problem });
        }
    }
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
        ops::models::fetch_job(state, "model_download", entry.clone(), false);
    }
    Ok(pending.len())
}

/// Serves until SIGTERM or SIGINT, then, in bounded time: stops accepting and cancels
/// the jobs (keeping partials); gives open requests and streams
/// `--shutdown-grace-secs`; ends the streams still open with an error event that says
/// the hive is stopping; stops every worker; returns.
pub async fn serve(state: SharedState, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let signalled = state.shutdown.clone();
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let gateway = Arc::new(gateway::Gateway::new(Arc::clone(&state)));
    if let (Some(fleet), Some(access)) = (state.fleet.clone(), state.etcd.clone()) {
        let local = listener.local_addr()?;
        let url = match &state.config.advertise_url {
            Some(u) => u.as_str().trim_end_matches('/').to_owned(),
            None => access
                .first()
                .map_or_else(|| local_url(local), |etcd| reachable_url(local, &etcd)),
        };
        let loopback = |u: &url::Url| match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if url::Url::parse(&url).is_ok_and(|u| loopback(&u))
            && access.first().is_some_and(|e| !loopback(&e))
        {
            tracing::warn!(
                %url,
                "this hive tells its fleet it is at a loopback address, which other machines cannot reach: listen on another (--host) or say where (--advertise-url)"
            );
        }
        state
            .shutdown
            .spawn(membership::run(Arc::clone(&gateway), fleet, access, url));
    }
    let app = app_with(Arc::clone(&state), gateway);
    let server = {
        let signalled = signalled.clone();
        // streamed tokens are small writes: each goes out at once, not held back by
        // Nagle's algorithm until the previous one is acknowledged
        axum::serve(
            listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("TCP_NODELAY: {e}");
                }
            }),
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!(
                "shutting down: no new connections, jobs cancelled (partial downloads kept), open requests get {}s",
                grace.as_secs()
            );
            signalled.begin();
        })
        .into_future()
    };
    tokio::pin!(server);
    let grace_over = async {
        signalled.stopping().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = &mut server => served?,
        () = grace_over => {
            tracing::info!("grace period over: ending the streams still open");
            state.shutdown.end_grace();
            // their error events go out, then their connections close; one that
            // does not (a client that never reads) is left to the exit
            if tokio::time::timeout(STREAMS_FLUSH, &mut server).await.is_err() {
                tracing::warn!("connections still open after the grace period; exiting anyway");
            }
        }
    }
    tracing::info!("stopping every worker");
    state.workers.stop_all().await;
    if !state.shutdown.wait(JOBS_GRACE).await {
        tracing::warn!("background work still running after the grace period; exiting anyway");
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

/// The hive's URL as a worker on this machine reaches it.
pub fn local_url(local: std::net::SocketAddr) -> String {
    let ip = if local.ip().is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        local.ip()
    };
    format!("http://{}", std::net::SocketAddr::new(ip, local.port()))
}

/// The hive's URL as the orchestrator reaches it: the address it listens on, or,
/// listening on every address, the one this machine uses to reach the orchestrator
/// (a UDP socket "connected" to it says which; no packet is sent).
pub fn reachable_url(local: std::net::SocketAddr, queen: &url::Url) -> String {
    if !local.ip().is_unspecified() {
        return format!("http://{local}");
    }
    let ip = queen
        .socket_addrs(|| Some(80))
        .ok()
        .and_then(|addrs| addrs.into_iter().next())
        .and_then(|target| {
            let bind = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = std::net::UdpSocket::bind(bind).ok()?;
            socket.connect(target).ok()?;
            socket.local_addr().ok().map(|a| a.ip())
        })
        .unwrap_or(local.ip());
    format!("http://{}", std::net::SocketAddr::new(ip, local.port()))
}

/// Announces the hive to an orchestrator (`POST {queen}/v1/hives/announce`) until it
/// answers 2xx, with backoff (1 s doubling to 60 s); each try times out after 10 s.
pub async fn announce(state: SharedState, queen: url::Url, url: String) {
    let Ok(endpoint) = queen.join("v1/hives/announce") else {
        tracing::warn!(%queen, "bad orchestrator URL: not announcing");
        return;
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("not announcing: {e}");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    let shutdown = state.shutdown.clone();
    loop {
        let home = state.home.clone();
        let caps = tokio::task::spawn_blocking(move || capabilities::capabilities(&home))
            .await
            .unwrap_or_default();
        let body = serde_json::json!({
            "url": url,
            "version": env!("CARGO_PKG_VERSION"),
            "capabilities": caps,
        });
        let mut request = client.post(endpoint.clone()).json(&body);
        if let Some(t) = state.config.api_token.as_deref().filter(|t| !t.is_empty()) {
            request = request.bearer_auth(t);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%endpoint, %url, "announced to the orchestrator");
                return;
            }
            Ok(r) => {
                tracing::warn!(%endpoint, status = %r.status(), "announcement refused; retrying in {backoff:?}")
            }
            Err(e) => {
                tracing::warn!(%endpoint, "announcement failed: {e}; retrying in {backoff:?}")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.stopping() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_workers_and_orchestrators_reach() {
        let any: std::net::SocketAddr = "0.0.0.0:7835".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(local_url(any), "http://127.0.0.1:7835");
        let queen = url::Url::parse("http://127.0.0.1:9").unwrap_or_else(|_| unreachable!());
        // Listening everywhere, the address is the one that routes to the orchestrator.
        assert_eq!(reachable_url(any, &queen), "http://127.0.0.1:7835");
        let one: std::net::SocketAddr = "10.1.2.3:80".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(reachable_url(one, &queen), "http://10.1.2.3:80");
        assert_eq!(local_url(one), "http://10.1.2.3:80");
    }
}
