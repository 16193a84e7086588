//! `bench_leader_loss`: with commits flowing, `kill -9` the leader of a
//! three-node release cluster and measure how long commits are unavailable;
//! restart the node and let it catch up between kills.
//!
//! ```text
//! bench_leader_loss [--quick] [--tsv] [--kills 20] [--committers 8]
//! ```

use clap::Parser;
use flagraft_cluster_tests::bench::leader_loss::{self, Options};
use flagraft_cluster_tests::bench::report::{Row, Target};
use flagraft_cluster_tests::bench::stats::{ms, Samples};
use flagraft_cluster_tests::bench::{self, cluster, CommonArgs};
use flagraft_cluster_tests::progress;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "bench_leader_loss",
    about = "flagraft unavailability after a leader kill"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Leader kills (default 20, so that the max means something; quick 2).
    #[arg(long)]
    kills: Option<usize>,
    /// Committers keeping commits flowing (each retries on any node).
    #[arg(long, default_value_t = 8)]
    committers: usize,
    #[arg(long, default_value_t = 2048)]
    entity_bytes: usize,
}

fn main() {
    let args = Args::parse();
    let common = args.common.clone();
    bench::main(&common, || run(args))
}

async fn run(args: Args) -> anyhow::Result<Vec<Row>> {
    let opts = Options {
        kills: args
            .kills
            .unwrap_or(if args.common.quick { 2 } else { 20 })
            .max(1),
        committers: args.committers.max(1),
        entity_bytes: args.entity_bytes,
    };
    progress!(
        "leader loss: fresh 3-node cluster, {} committers, {} kills",
        opts.committers,
        opts.kills
    );
    let c = Arc::new(cluster::start(None).await?);
    let out = leader_loss::run(c.clone(), &opts).await?;
    let mut unavailable = Samples::new();
    let mut agreed = Samples::new();
    let mut catch_up = Samples::new();
    for k in &out.kills {
        unavailable.push(k.unavailable);
        agreed.push(k.leader_agreed);
        catch_up.push(k.catch_up);
    }
    let each: Vec<String> = out
        .kills
        .iter()
        .map(|k| format!("{:.0}", ms(k.unavailable)))
        .collect();
    let bench = "leader loss";
    let mut note = format!(
        "{} kills, each ms: {}; {} committers; {} commits, {} failed attempts",
        out.kills.len(),
        each.join(" "),
        opts.committers,
        out.commits,
        out.failed_attempts
    );
    if out.fatal_errors > 0 {
        note.push_str(&format!(
            "; {} NON-RETRYABLE errors, first: {}",
            out.fatal_errors,
            out.first_fatal.as_deref().unwrap_or("?")
        ));
    }
    let v = |s: &mut Samples, p: f64| s.percentile(p).map_or(f64::NAN, ms);
    Ok(vec![
        Row::new(bench, "unavailable p50", v(&mut unavailable, 50.0), "ms")
            .target(Target::AtMost(1000.0))
            .note(note),
        Row::new(bench, "unavailable max", v(&mut unavailable, 100.0), "ms")
            .target(Target::AtMost(1000.0)),
        Row::new(bench, "leader agreed p50", v(&mut agreed, 50.0), "ms")
            .note("all live nodes name the new leader (20 ms polls)"),
        Row::new(
            bench,
            "restarted node caught up p50",
            v(&mut catch_up, 50.0),
            "ms",
        )
        .note("restart to ready with the head version applied"),
    ])
}
