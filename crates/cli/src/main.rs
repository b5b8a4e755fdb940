//! `rbee`: the command line for people. It talks to a hive over HTTP, and inspects
//! model files on its own.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// rbee: manage the models, worker binaries and workers of a machine's hive
#[derive(Debug, Parser)]
#[command(name = "rbee", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    hive: commands::client::HiveArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Models in the hive's catalog
    #[command(subcommand)]
    Models(commands::models::ModelsCommand),
    /// Worker processes
    #[command(subcommand)]
    Workers(commands::workers::WorkersCommand),
    /// Installed worker binaries
    #[command(subcommand, name = "worker-binaries")]
    WorkerBinaries(commands::workers::WorkerBinariesCommand),
    /// The hive itself
    #[command(subcommand)]
    Hive(commands::models::HiveCommand),
    /// The lab's hives, with `rbee-hive --etcd`: `fleet ls`, `fleet models`
    #[command(subcommand)]
    Fleet(commands::fleet::FleetCommand),
    /// Read GGUF model files, without a hive
    #[command(subcommand)]
    Gguf(commands::gguf::GgufCommand),
    /// What is loaded now: each worker, its model, its memory, until when (`workers ls`)
    Ps,
    /// Chat with a model, as `ollama run`: pulled first if need be, then loaded; with
    /// a PROMPT (or piped input) it answers once, else it asks turn after turn
    Run {
        /// The model: its id, its alias, the start of either, or a reference to pull
        model: String,
        /// A parameter, as `/set parameter` takes it (repeatable):
        /// --parameter num_predict=64 --parameter temperature=0
        #[arg(long = "parameter", value_name = "NAME=VALUE")]
        parameters: Vec<String>,
        /// What to ask, once; flags may come after it, as `ollama run` takes them
        /// (a word of the prompt that starts with `--` goes after a `--`)
        prompt: Vec<String>,
    },
    /// Stop serving a model: every worker of it stops (`models unload`)
    Stop {
        /// The model: its id, its alias, or the start of either
        model: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Gguf(cmd) = cli.command {
        return commands::gguf::run(cmd);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Models(cmd) => commands::models::run(cmd, &cli.hive).await,
            Command::Workers(cmd) => commands::workers::workers(cmd, &cli.hive).await,
            Command::WorkerBinaries(cmd) => commands::workers::binaries(cmd, &cli.hive).await,
            Command::Hive(cmd) => commands::models::hive(cmd, &cli.hive).await,
            Command::Fleet(cmd) => commands::fleet::run(cmd, &cli.hive).await,
            Command::Gguf(_) => Ok(()),
            Command::Ps => {
                commands::workers::workers(commands::workers::WorkersCommand::Ls, &cli.hive).await
            }
            Command::Run {
                model,
                parameters,
                prompt,
            } => commands::run::run(&model, &parameters, &prompt, &cli.hive).await,
            Command::Stop { model } => {
                let unload = commands::models::ModelsCommand::Unload { id: model };
                commands::models::run(unload, &cli.hive).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli.hive.json => {
            // the one document a --json call prints, on stdout, whether it worked or not
            let (code, status) = e
                .downcast_ref::<commands::client::HiveError>()
                .map_or(("error", None), |h| (h.code.as_str(), Some(h.status)));
            let error = serde_json::json!({"error": {"code": code, "message": format!("{e:#}"), "status": status}});
            println!("{error}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
