//! Cluster benchmarks run by `scripts/bench`: commit latency and throughput,
//! leader-loss unavailability, and the update stream with many subscribers.
//!
//! Each `bench_*` binary starts its own release clusters through the test
//! harness ([`crate::Cluster`], nodes killed by PID when it is dropped),
//! prints progress on stderr and its figures on stdout: an aligned table, or
//! tab-separated rows with `--tsv` for `scripts/bench` to merge.

pub mod cluster;
pub mod commits;
pub mod leader_loss;
pub mod report;
pub mod stats;
pub mod subscribers;

use report::Row;
use std::future::Future;

/// Options every bench binary takes.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Smaller counts and durations: a smoke run.
    #[arg(long)]
    pub quick: bool,
    /// Print rows as tab-separated lines (for scripts/bench) instead of a table.
    #[arg(long)]
    pub tsv: bool,
}

/// Progress on stderr, so stdout carries only results.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("[bench] {}", format_args!($($arg)*))
    };
}

/// Runs a bench: points the harness at the release node binary, runs `bench`
/// on a multi-threaded runtime until it ends or SIGINT/SIGTERM arrives
/// (dropping it then kills the nodes it started), prints its rows. Exit status
/// 0 when it ran (targets missed or not), 1 when it could not run.
pub fn main<F, Fut>(common: &CommonArgs, bench: F) -> !
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<Row>>>,
{
    let code = match run(bench) {
        Ok(rows) => {
            if common.tsv {
                print!("{}", report::tsv(&rows));
            } else {
                print!("{}", report::table(&rows));
            }
            0
        }
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn run<F, Fut>(bench: F) -> anyhow::Result<Vec<Row>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<Row>>>,
{
    let node = cluster::use_sibling_node_binary()?;
    progress!("node binary: {}", node.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let load_before = load_average();
    let mut rows = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            r = bench() => r,
            _ = term.recv() => Err(anyhow::anyhow!("interrupted (SIGTERM)")),
            _ = int.recv() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
        }
    })?;
    if let (Some(before), Some(after)) = (load_before, load_average()) {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let exe = std::env::args().next().unwrap_or_default();
        let name = std::path::Path::new(&exe)
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        rows.push(
            Row::new(&format!("machine during {name}"), "load (1-min avg) at the end", after, "").note(format!(
                "{before:.1} at the start; {cores} cores shared with every other process on the machine"
            )),
        );
    }
    Ok(rows)
}

/// The 1-minute load average (/proc/loadavg), to read the figures against.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
