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
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

// glibc's malloc spent about a third of the node's CPU under commit load
// (fragmentation, chunk consolidation); mimalloc is far cheaper for the many
// short-lived buffers of gRPC, JSON and sled.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

type LogFilter = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Logs go to stderr, silenced until the node has started: a node that cannot
/// start prints only its one-line error (sled, for one, logs its own
/// complaints about a bad data dir, which the error line already carries).
fn init_logging() -> LogFilter {
    let (filter, handle) = reload::Layer::new(EnvFilter::new("off"));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    handle
}

fn main() {
    let args = Args::parse();
    let log_filter = init_logging();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args, log_filter)));
    if let Err(e) = result {
        let line = format!("{e:#}").replace('\n', " ");
        eprintln!("flagraft-node: error: {line}");
        std::process::exit(1);
    }
}

async fn run(args: Args, log_filter: LogFilter) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut node = server::start(config.clone()).await?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into());
    // Cannot fail: the subscriber holding the layer lives for the whole process.
    let _ = log_filter.reload(filter);
    tracing::info!(
        node_id = config.node_id,
        cluster = %config.cluster,
        raft = %config.raft_addr,
        admin = %config.admin_addr,
        http = %config.http_addr,
        data_dir = %config.data_dir.display(),
        "node started"
    );
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
        e = node.failed() => return Err(e),
    }
    node.stop().await
}
