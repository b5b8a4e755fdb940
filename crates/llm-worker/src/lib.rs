//! `llm-worker-rbee`: loads one GGUF model with candle and serves it over
//! OpenAI-style HTTP (`/v1/completions`, `/v1/chat/completions`, streaming over
//! SSE), with a fixed number of slots and a bounded queue. The hive spawns it;
//! it knows nothing of catalogs or the hive's internals.

pub mod api;
pub mod model;
pub mod sampler;
pub mod server;
pub mod template;
pub mod tokenizer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

pub use model::{LoadError, LoadOptions, Model, SUPPORTED_ARCHITECTURES};
pub use server::Worker;

/// The worker's command line, as the hive passes it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llm-worker-rbee",
    version,
    about = "Serves one GGUF model over OpenAI-style HTTP"
)]
pub struct Args {
    /// The id the hive gave this worker (in heartbeats and logs).
    #[arg(long)]
    pub worker_id: String,
    /// The GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// The port to listen on (0 picks a free one and prints it).
    #[arg(long)]
    pub port: u16,
    /// The device: 0 on a CPU build; the CUDA ordinal on a CUDA build.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// The hive to send heartbeats to, such as `http://127.0.0.1:7835`.
    #[arg(long)]
    pub hive_url: Option<url::Url>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Threads for the matrix work (default: the physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Sequences generated at once; each has its own KV cache.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub slots: u16,
    /// Requests that may wait for a slot; more get 429.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Seconds that requests in flight get to finish after SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub grace_secs: u64,
    /// Keep Q4_1, Q5_0 and Q5_1 weights as they are; by default they are converted to
    /// Q8_0 at load on the CPU, which candle computes faster (1.3x generation, 1.5x prompt on AVX2; about 1.7x the memory for those weights).
    #[arg(long)]
    pub keep_quantization: bool,
    /// Seconds between heartbeats to the hive.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// Seconds a generation may run without producing a token before `/health`
    /// says `stalled` (503), so the hive restarts the worker (0: never)
    #[arg(long, default_value_t = 300)]
    pub stall_secs: u64,
    /// The key every request but `/health` must carry (`Authorization: Bearer KEY`),
    /// and that heartbeats carry to the hive; the hive sets it in the environment,
    /// never on the command line
    #[arg(long, env = "RBEE_WORKER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Serves until SIGTERM or SIGINT (exit 0) or until the model fails to load (an error).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    tracing::info!(worker_id = %args.worker_id, %addr, model = %args.model.display(), "listening; loading the model");
    println!("listening on http://{addr}");

    let worker = Arc::new(Worker::new(
        args.worker_id.clone(),
        usize::from(args.slots),
        args.queue,
    ));
    worker.set_stall_secs(args.stall_secs);
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<LoadError>();
    {
        let worker = worker.clone();
        let path = args.model.clone();
        let device = args.device;
        let options = model::LoadOptions {
            keep_quantization: args.keep_quantization,
        };
        tokio::task::spawn_blocking(move || {
            let loaded = model::open_device(device)
                .and_then(|d| Model::load(&path, d, &options))
                .and_then(|model| worker.set_ready(model));
            match loaded {
                Ok(()) => tracing::info!("ready"),
                Err(e) => {
                    let _ = failed_tx.send(e);
                }
            }
        });
    }
    if let Some(hive) = args.hive_url.clone() {
        tokio::spawn(heartbeats(
            worker.clone(),
            hive,
            Duration::from_secs(args.heartbeat_secs.max(1)),
            args.api_key.clone().filter(|k| !k.is_empty()),
        ));
    }

    let load_error = Arc::new(std::sync::Mutex::new(None));
    let shutdown = {
        let worker = worker.clone();
        let load_error = load_error.clone();
        let grace = Duration::from_secs(args.grace_secs);
        async move {
            tokio::select! {
                () = terminate() => tracing::info!("stopping: requests in flight get {grace:?}"),
                Ok(e) = failed_rx => {
                    if let Ok(mut slot) = load_error.lock() {
                        *slot = Some(e);
                    }
                    worker.cut.cancel();
                }
            }
            worker.draining.cancel();
            let cut = worker.cut.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if !cut.is_cancelled() {
                    tracing::warn!("grace period over: cutting requests in flight");
                    cut.cancel();
                }
            });
        }
    };
    let app = server::router(
        worker.clone(),
        args.api_key.clone().filter(|k| !k.is_empty()),
    );
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    // Connections that outlive the grace period (a client that never reads) do not
    // keep the process alive.
    let deadline = {
        let worker = worker.clone();
        let grace = Duration::from_secs(args.grace_secs);
        async move {
            worker.cut.cancelled().await;
            tokio::time::sleep(grace.min(Duration::from_secs(5)) + Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        r = serve => r?,
        () = deadline => tracing::warn!("connections still open after the grace period; exiting"),
    }
    let error = load_error.lock().ok().and_then(|mut e| e.take());
    if let Some(e) = error {
        return Err(e.into());
    }
    tracing::info!("stopped");
    Ok(())
}

async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Posts the worker's state to the hive every `every`, and at once when it becomes
/// ready. A hive that is down or slow is retried at the next beat.
async fn heartbeats(worker: Arc<Worker>, hive: url::Url, every: Duration, key: Option<String>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("no heartbeats: {e}");
            return;
        }
    };
    let path = format!("v1/workers/{}/heartbeat", urlencode(&worker.worker_id));
    let Ok(url) = hive.join(&path) else {
        tracing::warn!(%hive, "no heartbeats: bad hive URL");
        return;
    };
    let mut was_ready = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_sent = tokio::time::Instant::now() - every;
    loop {
        tick.tick().await;
        if worker.draining.is_cancelled() {
            return;
        }
        let ready = worker.is_ready();
        if last_sent.elapsed() < every && ready == was_ready {
            continue;
        }
        was_ready = ready;
        last_sent = tokio::time::Instant::now();
        let mut request = client.post(url.clone()).json(&worker.health());
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::debug!(status = %r.status(), "heartbeat refused"),
            Err(e) => tracing::debug!("heartbeat failed: {e}"),
        }
    }
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
