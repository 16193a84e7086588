//! `bench_commit`: commit latency (one committer) and throughput (many
//! committers) on a fresh three-node release cluster with fsync on, first on
//! an empty project, then on one already holding 10,000 entities. The
//! throughput of the loaded project is measured once the load has settled:
//! after its versions left the history (see `warm_up`).
//!
//! ```text
//! bench_commit [--quick] [--tsv] [--only latency|throughput] [--entities 10000]
//! ```

use clap::Parser;
use flagraft_cluster_tests::bench::commits::{self, Throughput};
use flagraft_cluster_tests::bench::report::{Row, Target};
use flagraft_cluster_tests::bench::stats::{ms, Samples};
use flagraft_cluster_tests::bench::{self, cluster, CommonArgs};
use flagraft_cluster_tests::{progress, Cluster};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "bench_commit",
    about = "flagraft commit latency and throughput"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Run only this part (default: both).
    #[arg(long, value_parser = ["latency", "throughput"])]
    only: Option<String>,
    /// Measured commits of the latency run (default 1000; quick 200).
    #[arg(long)]
    commits: Option<usize>,
    /// Unmeasured commits first (default 100; quick 20).
    #[arg(long)]
    warmup: Option<usize>,
    /// Concurrent committers of the throughput run.
    #[arg(long, default_value_t = 64)]
    committers: usize,
    /// HTTP/2 connections the committers share.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Measured seconds of the throughput run (default 10; quick 3).
    #[arg(long)]
    seconds: Option<u64>,
    /// Entities loaded before the second round (0: skip it).
    #[arg(long, default_value_t = 10_000)]
    entities: usize,
    /// Entities per loading commit.
    #[arg(long, default_value_t = 500)]
    load_batch: usize,
    /// JSON size of each committed (and loaded) entity.
    #[arg(long, default_value_t = 2048)]
    entity_bytes: usize,
}

/// What one round (one project size) measured.
struct Round {
    latency: Option<Samples>,
    throughput: Option<Throughput>,
}

fn main() {
    let args = Args::parse();
    let common = args.common.clone();
    bench::main(&common, || run(args))
}

async fn run(args: Args) -> anyhow::Result<Vec<Row>> {
    let quick = args.common.quick;
    let count = args.commits.unwrap_or(if quick { 200 } else { 1000 });
    let warmup = args.warmup.unwrap_or(if quick { 20 } else { 100 });
    let seconds = args.seconds.unwrap_or(if quick { 3 } else { 10 });
    let do_latency = args.only.as_deref() != Some("throughput");
    let do_throughput = args.only.as_deref() != Some("latency");

    let mut sizes = vec![0];
    if args.entities > 0 {
        sizes.push(args.entities);
    }
    let mut rows = Vec::new();
    let mut rounds = Vec::new();
    // Finished rounds' clusters, nodes stopped, data kept until the end: deleting gigabytes of
    // sled files makes this disk (mounted with `discard`) trim them, and one run logged 656
    // discards during the next round's latency phase.
    let mut finished = Vec::new();
    for &size in &sizes {
        let label = if size == 0 {
            "empty project".to_string()
        } else {
            format!("{size} entities")
        };
        progress!("round '{label}': starting a fresh 3-node cluster");
        let c = cluster::start(None).await?;
        let leader = c
            .wait_for_leader(&c.ids(), cluster::START_TIMEOUT)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut admin = cluster::admin_connection(&c, leader)?;
        // The version the load ended at (a loaded round only).
        let mut loaded_at = None;
        if size > 0 {
            progress!("loading {size} entities of ~{} B", args.entity_bytes);
            let started = std::time::Instant::now();
            loaded_at = Some(
                commits::load_entities(&mut admin, size, args.load_batch, args.entity_bytes)
                    .await?,
            );
            let held = commits::entity_count(&mut admin).await?;
            progress!(
                "loaded in {:.1?}: project holds {held} entities",
                started.elapsed()
            );
            // A tiny commit after the load: once every node has applied it, none is still
            // applying the load when the measurements start (seen: they all have it within a
            // few milliseconds of the linearizable read above).
            let rid = commits::request_id("settle");
            let (settle, _) = commits::commit_once(
                &mut admin,
                commits::gate_upsert("settle", commits::sized_gate_json(&rid, 64), rid),
            )
            .await
            .map_err(|s| anyhow::anyhow!("commit after the load: {s}"))?;
            let mut every = c
                .ids()
                .into_iter()
                .map(|id| cluster::admin_connection(&c, id))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let waited =
                commits::wait_all_applied(&mut every, settle.version, SETTLE_TIMEOUT).await?;
            progress!(
                "every node applied the load {waited:.1?} after the last load commit returned"
            );
            rows.push(
                Row::new(
                    &format!("load ({label})"),
                    "duration",
                    started.elapsed().as_secs_f64(),
                    "s",
                )
                .note(format!(
                    "{} commits of {} entities",
                    size.div_ceil(args.load_batch),
                    args.load_batch
                )),
            );
        }
        let mut round = Round {
            latency: None,
            throughput: None,
        };
        if do_latency {
            progress!("latency: {warmup} warm-up + {count} commits, one committer, to leader node {leader}");
            let mut s =
                commits::latency_run(&mut admin, "lat", warmup, count, args.entity_bytes).await?;
            let bench = format!("commit latency ({label})");
            let note = format!(
                "n={count}, 1 committer -> leader, ~{} B entity",
                args.entity_bytes
            );
            rows.push(
                p_row(&bench, "p50", &mut s, 50.0)
                    .target(Target::AtMost(2.0))
                    .note(note),
            );
            rows.push(p_row(&bench, "p99", &mut s, 99.0));
            rows.push(p_row(&bench, "max", &mut s, 100.0));
            // The same through a follower, which forwards to the leader.
            let follower = c
                .ids()
                .into_iter()
                .find(|&id| id != leader)
                .unwrap_or(leader);
            let mut via = cluster::admin_connection(&c, follower)?;
            let n = (count / 5).max(20);
            let mut f =
                commits::latency_run(&mut via, "fwd", warmup / 5, n, args.entity_bytes).await?;
            rows.push(
                p_row(
                    &format!("commit latency via follower ({label})"),
                    "p50",
                    &mut f,
                    50.0,
                )
                .note(format!("n={n}, forwarded one hop")),
            );
            round.latency = Some(s);
        }
        if do_throughput {
            let conns = (0..args.conns.max(1))
                .map(|_| cluster::admin_connection(&c, leader))
                .collect::<anyhow::Result<Vec<_>>>()?;
            progress!(
                "throughput: warm-up, then {seconds} s with {} committers over {} connections",
                args.committers,
                conns.len()
            );
            let warm = warm_up(&c, &conns, &mut admin, &args, loaded_at).await?;
            let cpu_before = cluster::cluster_cpu_time(&c);
            let own_before = cluster::cpu_time(std::process::id())?;
            let wait_before = cluster::cluster_run_queue_wait(&c);
            let mut t = commits::throughput_run(
                &conns,
                args.committers,
                Duration::from_secs(seconds),
                "tp",
                args.entity_bytes,
            )
            .await?;
            let bench = format!("commit throughput ({label})");
            let mut note = format!(
                "{} committers, {} commits in {:.1} s after {warm}",
                args.committers,
                t.commits,
                t.elapsed.as_secs_f64()
            );
            if t.errors > 0 {
                note.push_str(&format!(
                    "; {} ERRORS, first: {}",
                    t.errors,
                    t.first_error.as_deref().unwrap_or("?")
                ));
            }
            rows.push(
                Row::new(&bench, "commits/s", t.per_second(), "/s")
                    .target(Target::AtLeast(5000.0))
                    .note(note),
            );
            let cpu = cluster::cluster_cpu_time(&c).since(cpu_before).total();
            let own = cluster::cpu_time(std::process::id())?
                .since(own_before)
                .total();
            let waited = cluster::cluster_run_queue_wait(&c).saturating_sub(wait_before);
            rows.push(
                Row::new(
                    &bench,
                    "node CPU per commit",
                    cpu.as_secs_f64() * 1e6 / t.commits.max(1) as f64,
                    "us",
                )
                .note(format!(
                    "user+sys of all 3 nodes / commits ({:.0}% of one core); 2 cores => <= {:.0} commits/s",
                    cpu.as_secs_f64() * 100.0 / t.elapsed.as_secs_f64().max(1e-9),
                    2.0 * t.commits as f64 / cpu.as_secs_f64().max(1e-9)
                )),
            );
            rows.push(
                Row::new(
                    &bench,
                    "committers' CPU per commit",
                    own.as_secs_f64() * 1e6 / t.commits.max(1) as f64,
                    "us",
                )
                .note(format!(
                    "this process: gRPC clients on the same 2 cores ({:.0}% of one core)",
                    own.as_secs_f64() * 100.0 / t.elapsed.as_secs_f64().max(1e-9)
                )),
            );
            rows.push(
                Row::new(
                    &bench,
                    "node threads waiting for a CPU",
                    waited.as_secs_f64() * 100.0 / t.elapsed.as_secs_f64().max(1e-9),
                    "%",
                )
                .note("run-queue wait of all node threads / wall time (schedstat): delay from CPU contention"),
            );
            rows.push(p_row(&bench, "latency p50", &mut t.latencies, 50.0));
            rows.push(p_row(&bench, "latency p99", &mut t.latencies, 99.0));
            round.throughput = Some(t);
        }
        let metrics = c.http_get(leader, "/metrics").await.unwrap_or_default().1;
        progress!("leader metrics: {}", summary(&metrics));
        for id in c.ids() {
            c.kill9(id);
        }
        finished.push(c);
        rounds.push((label, round));
    }
    if let [(_, small), (label, big)] = rounds.as_mut_slice() {
        if let (Some(a), Some(b)) = (small.latency.as_mut(), big.latency.as_mut()) {
            if let (Some(pa), Some(pb)) = (a.p50(), b.p50()) {
                rows.push(
                    Row::new(
                        "ratio",
                        &format!("latency p50 {label} / empty"),
                        ratio(pb, pa),
                        "x",
                    )
                    .note("~1 means a commit's cost does not grow with the ruleset"),
                );
            }
        }
        if let (Some(a), Some(b)) = (small.throughput.as_ref(), big.throughput.as_ref()) {
            rows.push(
                Row::new(
                    "ratio",
                    &format!("throughput {label} / empty"),
                    b.per_second() / a.per_second().max(1e-9),
                    "x",
                )
                .note("~1 means a commit's cost does not grow with the ruleset"),
            );
        }
    }
    Ok(rows)
}

fn p_row(bench: &str, metric: &str, s: &mut Samples, p: f64) -> Row {
    Row::new(bench, metric, s.percentile(p).map_or(f64::NAN, ms), "ms")
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

/// Longest every node may take to apply the load once it is acknowledged.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the throughput warm-up may take.
const MAX_WARMUP: Duration = Duration::from_secs(60);

/// Throughput warm-up: 1 s of the measured load, and in a loaded round also until the load's
/// versions have left the history (`history_limit` versions later). Their compaction moves the
/// loaded bodies to the entities' own keys (~20 MB for 10,000 entities of 2 KiB), a one-time
/// cost of the bulk load that would otherwise land in the measured window (it cost that round
/// 5-10% of a 10 s window). Returns what it did, for the row's note.
async fn warm_up(
    c: &Cluster,
    conns: &[flagraft_cluster_tests::Admin],
    admin: &mut flagraft_cluster_tests::Admin,
    args: &Args,
    loaded_at: Option<u64>,
) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let settled_at = loaded_at.map(|v| v + c.options.history_limit);
    loop {
        commits::throughput_run(
            conns,
            args.committers,
            Duration::from_secs(1),
            "warm",
            args.entity_bytes,
        )
        .await?;
        let Some(target) = settled_at else {
            return Ok("a 1 s warm-up".into());
        };
        let rid = commits::request_id("warm-probe");
        let probe = commits::gate_upsert(
            "warm-probe",
            commits::sized_gate_json(&rid, args.entity_bytes),
            rid,
        );
        let (resp, _) = commits::commit_once(admin, probe)
            .await
            .map_err(|s| anyhow::anyhow!("warm-up probe: {s}"))?;
        let waited = started.elapsed();
        if resp.version > target {
            return Ok(format!(
                "a {:.1} s warm-up past the load's history (version {target})",
                waited.as_secs_f64()
            ));
        }
        if waited > MAX_WARMUP {
            progress!(
                "warm-up: version {} after {waited:.0?}, short of {target}",
                resp.version
            );
            return Ok(format!(
                "a {:.1} s warm-up that did NOT pass the load's history (version {} of {target})",
                waited.as_secs_f64(),
                resp.version
            ));
        }
    }
}

/// A few interesting lines of the leader's /metrics, for the log.
fn summary(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with("flagraft_raft_term")
                || l.starts_with("flagraft_raft_last_log_index")
                || l.starts_with("flagraft_raft_snapshot_index")
                || l.starts_with("flagraft_project_version")
                || l.starts_with("flagraft_project_entities")
                || l.starts_with("flagraft_commit_latency_seconds_sum")
                || l.starts_with("flagraft_commit_latency_seconds_count")
                || l.starts_with("flagraft_commit_proposals_total")
                || l.starts_with("flagraft_commits_proposed_total")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
