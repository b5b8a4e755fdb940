//! `rbee`: the command line for people. It talks to a hive over HTTP, and inspects
//! model files on its own.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// rbee: manage the models and workers of a machine's hive
#[derive(Debug, Parser)]
#[command(name = "rbee", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read GGUF model files, without a hive
    #[command(subcommand)]
    Gguf(commands::gguf::GgufCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Gguf(cmd) => commands::gguf::run(cmd),
    }
}
