//! `flagraft-node --config FILE`: runs one cluster member until SIGTERM/SIGINT.
//!
//! Exit status: 0 after a graceful stop; 1 with one line on stderr naming the
//! problem when the node cannot start (bad config, port in use, data dir of
//! another node or cluster, store that cannot be opened) or fails.

use clap::Parser;
use flagraft_node::config::NodeConfig;
use flagraft_node::server;
use std::io::IsTerminal;
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "flagraft-node",
    version,
    about = "One member of a flagraft cluster"
)]
struct Args {
    /// The node's TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        let line = format!("{e:#}").replace('\n', " ");
        eprintln!("flagraft-node: error: {line}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut node = server::start(config).await?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
        e = node.failed() => return Err(e),
    }
    node.stop().await
}
