//! `rbee-hive`: parse the configuration, open the home folder, serve.

use std::process::ExitCode;

use clap::Parser as _;
use hive::config::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Config::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut config: Config) -> anyhow::Result<()> {
    config.load_token_file().map_err(anyhow::Error::msg)?;
    config.load_fleet_token_file().map_err(anyhow::Error::msg)?;
    config.check().map_err(anyhow::Error::msg)?;
    let addr = std::net::SocketAddr::new(config.host, config.port);
    let (state, _lock) = hive::build_state(config)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let _ = state.workers.hive_url.set(hive::local_url(local));
    if let Some(queen) = state.config.queen_url.clone() {
        let reachable = hive::reachable_url(local, &queen);
        state.shutdown.spawn(hive::announce(
            std::sync::Arc::clone(&state),
            queen,
            reachable,
        ));
    }
    // cleanup before anything runs: what a crash left behind
    match hive::ops::gc::gc(&state, false).await {
        Ok(report) => {
            let freed = report["bytes_freed"].as_u64().unwrap_or(0);
            if freed > 0 {
                tracing::info!("cleanup at start freed {}", download::human_bytes(freed));
            }
        }
        Err(e) => tracing::warn!("cleanup at start did not run: {}", e.parts().1),
    }
    if let Ok(Some(warning)) = hive::ops::storage::pinned_over_quota(&state) {
        tracing::warn!("{warning}");
    }
    // a damaged catalog: unreadable rows set aside, the hive's own model folders that
    // no entry names re-adopted (loudly, in the log and in `hive status`)
    if let Err(e) = hive::ops::repair::repair(&state).await {
        tracing::error!("the catalog's check at start did not run: {}", e.parts().1);
    }
    let resumed = hive::resume_downloads(&state).await?;
    if state.config.scan || !state.config.scan_dirs.is_empty() {
        // a folder that is not there is said, and the hive starts anyway
        let dirs = state.config.scan_dirs.clone();
        if let Err(e) =
            hive::ops::dispatch::start(&state, hive::ops::dispatch::Operation::ModelScan { dirs })
                .await
        {
            tracing::warn!("the scan at start did not run: {}", e.parts().1);
        }
    }
    if !state.config.no_find_engines {
        let found = hive::ops::binaries::find_engines(&state).await;
        if !found.is_empty() {
            tracing::info!(?found, "worker binaries found on this machine");
        }
    }
    state
        .shutdown
        .spawn(hive::ops::storage::record_use(std::sync::Arc::clone(
            &state,
        )));
    let secs = |s: u64| (s > 0).then(|| std::time::Duration::from_secs(s));
    state.shutdown.spawn(hive::ops::models::integrity_schedule(
        std::sync::Arc::clone(&state),
        secs(state.config.integrity_interval_secs),
        secs(state.config.rehash_interval_secs),
    ));
    // stdout: the one line a script or test waits for
    println!("rbee-hive listening on http://{local}");
    tracing::info!(home = %state.home.display(), addr = %local, resumed, "rbee-hive started");
    hive::serve(state, listener).await
}
