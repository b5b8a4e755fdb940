//! Downloads one URL with the engine, no daemon needed; prints what it did.
//!
//!     cargo run --release -p download --example fetch -- URL OUT [--sha256 HEX]
//!         [--connections N] [--no-hash] [--limit BYTES_PER_SEC]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use download::{DownloadConfig, DownloadRequest, Downloader, Progress, Reporter, human_bytes};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    url: url::Url,
    out: PathBuf,
    /// The sha256 the file must have
    #[arg(long)]
    sha256: Option<String>,
    /// Connections (parts at once)
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Do not compute a sha256 when none is given (to measure what hashing costs)
    #[arg(long)]
    no_hash: bool,
    /// Cap on bytes per second
    #[arg(long)]
    limit: Option<u64>,
}

struct Stderr;

impl Reporter for Stderr {
    fn progress(&self, p: &Progress) {
        eprint!(
            "\r{} / {} at {}/s    ",
            human_bytes(p.bytes_done),
            p.bytes_total.map_or_else(|| "?".into(), human_bytes),
            human_bytes(p.bytes_per_sec as u64)
        );
    }
    fn message(&self, m: &str) {
        eprintln!("\n{m}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = DownloadConfig {
        connections: args.connections,
        hash: !args.no_hash,
        bandwidth_limit: args.limit,
        ..DownloadConfig::default()
    };
    let dl = Downloader::new(config)?;
    let out = std::path::absolute(&args.out).context("bad output path")?;
    let work = out
        .parent()
        .context("no parent folder")?
        .join(".rbee-downloads");
    let req = DownloadRequest {
        url: args.url,
        dest: out,
        work_dir: work,
        sha256: args.sha256,
        size: None,
        credential: None,
    };
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        c.cancel();
    });
    let started = Instant::now();
    let o = dl.download(req, Arc::new(Stderr), cancel).await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!();
    println!(
        "{} {} in {secs:.2} s ({}/s) sha256 {} verified {}",
        o.path.display(),
        human_bytes(o.size),
        human_bytes((o.size as f64 / secs) as u64),
        o.sha256.as_deref().unwrap_or("-"),
        o.verified
    );
    Ok(())
}
