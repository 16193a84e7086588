//! `flagraft`: the command-line tool.
//!
//! * `eval`: evaluate a ruleset file locally (no cluster).
//! * `commit`, `get`, `history`, `diff`, `rollback`: a project's rules.
//! * `projects`, `keys`, `cluster`: projects, API keys, membership.
//!
//! Cluster commands share `--endpoints` (every node's admin address; any
//! node answers and forwards writes to the leader), `--admin-key` (or
//! `FLAGRAFT_ADMIN_KEY`), `--project` and `--json` (one JSON document on
//! stdout instead of tables). Every error is one line on stderr and exit
//! status 1 (2 for bad usage).

mod connect;
mod entity_files;
mod eval;
mod manage;
mod rules;
mod table;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "flagraft",
    version,
    about = "flagraft: feature flags, configs and experiments"
)]
struct Cli {
    #[command(flatten)]
    cluster: connect::ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Evaluate a ruleset (a download_config_specs document) for users, locally.
    Eval(eval::Args),
    /// Commit entity files (and deletes) to a project as one new version.
    Commit(rules::CommitArgs),
    /// Print a project's ruleset (a DCS document) or one entity.
    Get(rules::GetArgs),
    /// List a project's versions.
    History(rules::HistoryArgs),
    /// What changed between two versions, entity by entity.
    Diff(rules::DiffArgs),
    /// Commit a new version whose ruleset equals an earlier version's.
    Rollback(rules::RollbackArgs),
    /// List, create or delete projects.
    #[command(subcommand)]
    Projects(manage::ProjectsCmd),
    /// List, create or revoke API keys.
    #[command(subcommand)]
    Keys(manage::KeysCmd),
    /// Cluster status and membership changes.
    #[command(subcommand)]
    Cluster(manage::ClusterCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let c = &cli.cluster;
    let result = match cli.command {
        Command::Eval(args) => eval::run(args),
        Command::Commit(args) => rules::commit(args, c),
        Command::Get(args) => rules::get(args, c),
        Command::History(args) => rules::history(args, c),
        Command::Diff(args) => rules::diff(args, c),
        Command::Rollback(args) => rules::rollback(args, c),
        Command::Projects(cmd) => manage::projects(cmd, c),
        Command::Keys(cmd) => manage::keys(cmd, c),
        Command::Cluster(cmd) => manage::cluster(cmd, c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
