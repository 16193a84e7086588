//! `flagraft`: the command-line tool.
//!
//! Each subcommand lives in its own module with an `Args` type (clap) and a
//! `run(args) -> anyhow::Result<()>`; add admin and operator commands as
//! sibling modules and one variant of [`Command`] each.

mod eval;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "flagraft",
    version,
    about = "flagraft: feature flags, configs and experiments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Evaluate a ruleset (a download_config_specs document) for users, locally.
    Eval(eval::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
