//! `llm-worker-rbee`: see the library's documentation.

use std::process::ExitCode;

use clap::Parser;
use llm_worker::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // candle sizes its thread pools from the environment when they are first used;
    // `--threads` is handed over that way, by starting again with it set.
    if let Some(threads) = args.threads {
        let wanted = threads.max(1).to_string();
        if std::env::var("CANDLE_NUM_THREADS").ok().as_deref() != Some(wanted.as_str()) {
            use std::os::unix::process::CommandExt;
            let exe = std::env::current_exe();
            let error = match exe {
                Ok(exe) => std::process::Command::new(exe)
                    .args(std::env::args_os().skip(1))
                    .env("CANDLE_NUM_THREADS", &wanted)
                    .env("RAYON_NUM_THREADS", &wanted)
                    .exec(),
                Err(e) => e,
            };
            eprintln!("llm-worker-rbee: cannot apply --threads: {error}");
            return ExitCode::from(2);
        }
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("llm-worker-rbee: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(llm_worker::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("llm-worker-rbee: {e:#}");
            ExitCode::FAILURE
        }
    }
}
