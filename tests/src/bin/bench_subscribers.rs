//! `bench_subscribers`: many `flagraft.v1` WebSocket subscribers spread over a
//! three-node release cluster. Measures the time from a commit's
//! acknowledgement until the last subscriber has it (first with commits at a
//! steady rate, `--rate` per second, then with each commit right after the
//! previous one reached everyone), the idle memory per subscriber on a node,
//! and how long the subscribers of a killed node take to be back and current.
//!
//! ```text
//! bench_subscribers [--quick] [--tsv] [--subscribers 10000] [--commits 200] [--rate 5]
//! ```
//! Everything shares the machine's two cores, and every delta is two loopback
//! packets (the delta and its subscriber's ACK) that this kernel carries end
//! to end, for the nodes and for the subscribers. With commits at a steady rate
//! the subscribers' ACKs go out as the delta arrives (after a quiet gap longer
//! than the RTO, TCP acknowledges at once), within the node's send. Back to
//! back they go out from the subscribers' reads (about a third of this
//! process's CPU). With the CPUs never idle, profiles also show more of the
//! kernel's network work left to `ksoftirqd`, which waits for a CPU while the
//! loopback backlog fills. Remote subscribers' kernels would do their half
//! elsewhere.
//! Needs about subscribers + 1000 file descriptors (`ulimit -n`).

use anyhow::{anyhow, Context};
use clap::Parser;
use flagraft_cluster_tests::bench::commits::{
    commit_once, gate_upsert, request_id, sized_gate_json,
};
use flagraft_cluster_tests::bench::report::{Row, Target};
use flagraft_cluster_tests::bench::stats::{ms, Samples};
use flagraft_cluster_tests::bench::subscribers::{Fleet, FleetHandle};
use flagraft_cluster_tests::bench::{self, cluster, CommonArgs};
use flagraft_cluster_tests::{progress, Cluster};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const KEY: &str = "srv-bench";
/// Longest one commit may take to reach every subscriber before the run stops.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the subscribers of a killed node may take to come back.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Lets a node's memory settle (buffers of the ramp-up released) before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(
    name = "bench_subscribers",
    about = "flagraft update stream with many subscribers"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Subscribers over the three nodes (default 10000; quick 1000).
    #[arg(long)]
    subscribers: Option<usize>,
    /// Measured commits, one at a time (default 200; quick 50).
    #[arg(long)]
    commits: Option<usize>,
    /// JSON size of each committed entity.
    #[arg(long, default_value_t = 2048)]
    entity_bytes: usize,
    /// Print every commit's fan-out time (to stderr), with when it happened.
    #[arg(long)]
    print_samples: bool,
    /// Commits per second in the paced phase (a second phase runs them back to back).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
}

fn main() {
    let args = Args::parse();
    let common = args.common.clone();
    bench::main(&common, || run(args))
}

fn rss_all(c: &Cluster) -> anyhow::Result<BTreeMap<u64, u64>> {
    c.ids()
        .into_iter()
        .map(|id| {
            let pid = c
                .pid(id)
                .ok_or_else(|| anyhow!("node {id} is not running"))?;
            Ok((id, cluster::rss_bytes(pid)?))
        })
        .collect()
}

/// Per node: (subscribers, RSS growth per subscriber in KiB).
fn per_subscriber_kib(
    before: &BTreeMap<u64, u64>,
    after: &BTreeMap<u64, u64>,
    counts: &BTreeMap<u64, usize>,
) -> Vec<(u64, usize, f64)> {
    before
        .iter()
        .filter_map(|(id, b)| {
            let a = after.get(id)?;
            let n = *counts.get(id)?;
            (n > 0).then(|| (*id, n, (*a as f64 - *b as f64) / n as f64 / 1024.0))
        })
        .collect()
}

async fn wait_synced(h: &FleetHandle, version: u64, timeout: Duration) -> anyhow::Result<()> {
    let f = &h.fleet;
    let start = Instant::now();
    let mut reported = Instant::now();
    while f.connected() < f.total() || f.at_least(version) < f.total() {
        if start.elapsed() > timeout {
            return Err(anyhow!(
                "after {timeout:?}: {} of {} subscribers synced, {} at version {version}",
                f.connected(),
                f.total(),
                f.at_least(version)
            ));
        }
        if reported.elapsed() > Duration::from_secs(5) {
            progress!("{} of {} subscribers synced", f.connected(), f.total());
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Vec<Row>> {
    let quick = args.common.quick;
    let total = args
        .subscribers
        .unwrap_or(if quick { 1000 } else { 10_000 });
    let commits = args.commits.unwrap_or(if quick { 50 } else { 200 });
    progress!("subscribers: fresh 3-node cluster with a stream key, {total} subscribers");
    let pace = Duration::try_from_secs_f64(1.0 / args.rate)
        .ok()
        .filter(|p| !p.is_zero())
        .ok_or_else(|| anyhow!("--rate must be a positive number of commits per second"))?;
    let c = cluster::start(Some(KEY)).await?;
    let ids = c.ids();
    let leader = c
        .wait_for_leader(&ids, cluster::START_TIMEOUT)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut admin = cluster::admin_connection(&c, leader)?;
    let commit = |i: usize| {
        let rid = request_id("sub");
        gate_upsert(
            &format!("sub-{}", i % 16),
            sized_gate_json(&rid, args.entity_bytes),
            rid,
        )
    };
    let (first, _) = commit_once(&mut admin, commit(0))
        .await
        .context("first commit")?;
    tokio::time::sleep(SETTLE).await;
    let rss_before = rss_all(&c)?;

    let endpoints = ids.iter().map(|&id| (id, c.ports(id).http)).collect();
    let connect_started = Instant::now();
    let mut fleet = Fleet::spawn(total, KEY, endpoints).context("subscriber threads")?;
    let run = measure(
        &c,
        &mut fleet,
        &mut admin,
        leader,
        first.version,
        commits,
        total,
        &rss_before,
        connect_started,
        &commit,
        args.print_samples,
        pace,
    )
    .await;
    let f = fleet.fleet.clone();
    fleet.stop().await;
    let mut rows = run?;
    rows.push(
        Row::new(
            "subscribers",
            "protocol violations",
            f.violations.load(Ordering::Relaxed) as f64,
            "",
        )
        .target(Target::AtMost(0.0))
        .note(format!(
            "skipped/duplicated/backward versions; {} reconnects, {} snapshots in total",
            f.reconnects.load(Ordering::Relaxed),
            f.snapshots.load(Ordering::Relaxed)
        )),
    );
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    c: &Cluster,
    fleet: &mut FleetHandle,
    admin: &mut flagraft_cluster_tests::Admin,
    leader: u64,
    first_version: u64,
    commits: usize,
    total: usize,
    rss_before: &BTreeMap<u64, u64>,
    connect_started: Instant,
    commit: &dyn Fn(usize) -> flagraft_proto::admin::v1::CommitRequest,
    print_samples: bool,
    pace: Duration,
) -> anyhow::Result<Vec<Row>> {
    let bench = format!("{total} subscribers");
    let mut rows = Vec::new();
    let connect_timeout = Duration::from_secs(120) + Duration::from_millis(total as u64 * 20);
    wait_synced(fleet, first_version, connect_timeout).await?;
    let connect_time = connect_started.elapsed();
    let counts = fleet.fleet.per_node();
    progress!("all {total} synced in {connect_time:.1?}: per node {counts:?}");
    rows.push(
        Row::new(
            &bench,
            "connect + initial sync",
            connect_time.as_secs_f64(),
            "s",
        )
        .note(format!(
            "per node {counts:?}; at most 256 handshakes in flight"
        )),
    );
    tokio::time::sleep(SETTLE).await;
    let rss_idle = rss_all(c)?;
    let idle = per_subscriber_kib(rss_before, &rss_idle, &counts);
    let mean = idle.iter().map(|x| x.2).sum::<f64>() / idle.len().max(1) as f64;
    let detail: Vec<String> = idle
        .iter()
        .map(|(id, n, kib)| format!("node{id}: {n} subs {kib:.1} KiB"))
        .collect();
    rows.push(
        Row::new(&bench, "idle memory per subscriber", mean, "KiB")
            .target(Target::AtMost(16.0))
            .note(format!(
                "RSS growth / subscribers, mean of nodes; {}",
                detail.join(", ")
            )),
    );

    let phases = [
        (Pace::Rate(pace), bench.clone()),
        (Pace::BackToBack, format!("{bench}, back to back")),
    ];
    for (n, (pace, label)) in phases.into_iter().enumerate() {
        rows.extend(
            fan_out(
                c,
                fleet,
                admin,
                leader,
                &label,
                pace,
                commits,
                1 + n * commits,
                commit,
                print_samples,
            )
            .await?,
        );
    }

    tokio::time::sleep(SETTLE).await;
    let rss_after = rss_all(c)?;
    let after = per_subscriber_kib(rss_before, &rss_after, &counts);
    let mean_after = after.iter().map(|x| x.2).sum::<f64>() / after.len().max(1) as f64;
    rows.push(
        Row::new(
            &bench,
            "memory per subscriber after the commits",
            mean_after,
            "KiB",
        )
        .note("RSS growth since before connecting / subscribers"),
    );

    // Kill a follower that holds subscribers; they must reconnect elsewhere
    // and resume. One commit right after the kill is what "current" means.
    let counts = fleet.fleet.per_node();
    let victim = c
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .max_by_key(|id| counts.get(id).copied().unwrap_or(0))
        .ok_or_else(|| anyhow!("no follower"))?;
    let moved = counts.get(&victim).copied().unwrap_or(0);
    progress!("killing follower node {victim} with {moved} subscribers");
    let overflows = cluster::listen_overflows();
    let killed_at = Instant::now();
    c.kill9(victim);
    let (resp, _) = commit_once(admin, commit(2 * commits + 1))
        .await
        .map_err(|s| anyhow!("commit after the kill: {s}"))?;
    let reached = fleet
        .all_reached(resp.version, RECOVERY_TIMEOUT)
        .await
        .ok_or_else(|| {
            anyhow!(
                "after killing node {victim}: {} of {total} subscribers reached version {} in {RECOVERY_TIMEOUT:?}",
                fleet.fleet.at_least(resp.version),
                resp.version
            )
        })?;
    wait_synced(fleet, resp.version, RECOVERY_TIMEOUT).await?;
    let back = killed_at.elapsed();
    let overflowed = cluster::listen_overflows()
        .zip(overflows)
        .map_or("?".to_string(), |(a, b)| a.saturating_sub(b).to_string());
    let current = reached.saturating_duration_since(killed_at);
    progress!("all current after {current:.0?}, all reconnected and synced after {back:.0?}");
    rows.push(
        Row::new(&bench, "follower killed: all back and current", ms(back.max(current)), "ms").note(format!(
            "{moved} subscribers of node {victim} moved; all at the post-kill version after {:.0} ms; {overflowed} connections dropped by full listen queues meanwhile",
            ms(current)
        )),
    );
    Ok(rows)
}

/// How the fan-out phase spaces its commits.
#[derive(Clone, Copy, Debug)]
enum Pace {
    /// Open loop: one commit per period, whatever the previous one's fan-out took.
    Rate(Duration),
    /// Each commit right after the previous one reached every subscriber.
    BackToBack,
}

impl Pace {
    fn describe(self) -> String {
        match self {
            Pace::Rate(p) => format!("one commit every {} ms", p.as_millis()),
            Pace::BackToBack => "commits back to back".to_string(),
        }
    }
}

/// One fan-out phase: `commits` commits through the leader, each timed from its
/// ack until the last subscriber has it.
#[allow(clippy::too_many_arguments)]
async fn fan_out(
    c: &Cluster,
    fleet: &mut FleetHandle,
    admin: &mut flagraft_cluster_tests::Admin,
    leader: u64,
    bench: &str,
    pace: Pace,
    commits: usize,
    first_commit: usize,
    commit: &dyn Fn(usize) -> flagraft_proto::admin::v1::CommitRequest,
    print_samples: bool,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    progress!(
        "fan-out, {}: {commits} commits through leader {leader}",
        pace.describe()
    );
    let mut fanout = Samples::with_capacity(commits);
    // Per node: ack -> its last subscriber has it. And ack -> the later follower's first
    // subscriber has it (the commit has reached, and been applied on, both followers).
    let mut node_last: BTreeMap<u64, Samples> = BTreeMap::new();
    let mut followers_start = Samples::with_capacity(commits);
    let mut before_ack = 0usize;
    let nodes_cpu = cluster::cluster_cpu_time(c);
    let own_cpu = cluster::cpu_time(std::process::id())?;
    let nodes_wait = cluster::cluster_run_queue_wait(c);
    let drops = cluster::backlog_drops();
    let probes = cluster::tcp_loss_probes();
    let fanout_started = Instant::now();
    let mut next_start = tokio::time::Instant::now();
    for i in 0..commits {
        if let Pace::Rate(period) = pace {
            // Open loop: commit i starts at i periods (or at once when fan-out ran late).
            tokio::time::sleep_until(next_start).await;
            next_start += period;
        }
        let (resp, rtt) = commit_once(admin, commit(first_commit + i))
            .await
            .map_err(|s| anyhow!("commit {i}: {s}"))?;
        let acked = Instant::now();
        let all = fleet
            .all_reached(resp.version, FANOUT_TIMEOUT)
            .await
            .ok_or_else(|| {
                anyhow!(
                    "version {} did not reach every subscriber within {FANOUT_TIMEOUT:?} ({} of {})",
                    resp.version,
                    fleet.fleet.at_least(resp.version),
                    fleet.fleet.total()
                )
            })?;
        if all < acked {
            before_ack += 1;
        }
        fanout.push(all.saturating_duration_since(acked));
        let spans = fleet.fleet.node_spans(resp.version);
        for span in &spans {
            node_last
                .entry(span.node)
                .or_insert_with(|| Samples::with_capacity(commits))
                .push(span.last.saturating_duration_since(acked));
        }
        if let Some(start) = spans
            .iter()
            .filter(|s| s.node != leader)
            .map(|s| s.first)
            .max()
        {
            followers_start.push(start.saturating_duration_since(acked));
        }
        if print_samples {
            // One line per commit, to see when slow ones happen (e.g. periodic stalls).
            let after_ack = |t: Instant| ms(t.saturating_duration_since(acked));
            let per_node: Vec<String> = spans
                .iter()
                .map(|s| {
                    format!(
                        "node{} {:.1}..{:.1}",
                        s.node,
                        after_ack(s.first),
                        after_ack(s.last)
                    )
                })
                .collect();
            eprintln!(
                "sample {i}: fan-out {:.1} ms, commit round trip {:.2} ms, at {:.3} s; first..last subscriber per node (ms after the ack, 0 if before): {}",
                ms(all.saturating_duration_since(acked)),
                ms(rtt),
                fanout_started.elapsed().as_secs_f64(),
                per_node.join(", ")
            );
        }
    }
    let fanout_elapsed = fanout_started.elapsed();
    let nodes_cpu = cluster::cluster_cpu_time(c).since(nodes_cpu);
    let own_cpu = cluster::cpu_time(std::process::id())?.since(own_cpu);
    let nodes_wait = cluster::cluster_run_queue_wait(c).saturating_sub(nodes_wait);
    let drops = cluster::backlog_drops()
        .zip(drops)
        .map(|(a, b)| a.saturating_sub(b));
    let probes = cluster::tcp_loss_probes()
        .zip(probes)
        .map(|(a, b)| a.saturating_sub(b));
    let p = |s: &mut Samples, q: f64| s.percentile(q).map_or(f64::NAN, ms);
    let what = "commit ack -> last subscriber has it";
    let note = format!(
        "n={commits}, ~2 KiB entity per commit, {}; {before_ack} reached all before the ack (counted as 0)",
        pace.describe()
    );
    rows.push(Row::new(bench, &format!("{what} p50"), p(&mut fanout, 50.0), "ms").note(note));
    rows.push(
        Row::new(bench, &format!("{what} p99"), p(&mut fanout, 99.0), "ms")
            .target(Target::AtMost(100.0)),
    );
    rows.push(Row::new(
        bench,
        &format!("{what} max"),
        p(&mut fanout, 100.0),
        "ms",
    ));
    rows.push(
        Row::new(
            bench,
            "ack -> both followers delivering p50",
            p(&mut followers_start, 50.0),
            "ms",
        )
        .note(format!(
            "the later follower's first subscriber has it (commit index reached it, applied, first frame out); p99 {:.1} ms",
            p(&mut followers_start, 99.0)
        )),
    );
    for (node, last) in node_last.iter_mut() {
        let role = if *node == leader {
            "leader"
        } else {
            "follower"
        };
        rows.push(
            Row::new(
                bench,
                &format!("ack -> last subscriber of node {node} p50"),
                p(last, 50.0),
                "ms",
            )
            .note(format!("{role}; p99 {:.1} ms", p(last, 99.0))),
        );
    }
    let per_commit = |d: Duration| ms(d) / commits.max(1) as f64;
    let busy = |d: Duration| d.as_secs_f64() * 100.0 / fanout_elapsed.as_secs_f64().max(1e-9);
    rows.push(
        Row::new(
            bench,
            "fan-out CPU per commit: nodes",
            per_commit(nodes_cpu.total()),
            "ms",
        )
        .note(format!(
            "user+sys of the 3 nodes during the commits / commits ({:.0}% of one core; {:.0}% in the kernel)",
            busy(nodes_cpu.total()),
            nodes_cpu.system_percent()
        )),
    );
    rows.push(
        Row::new(
            bench,
            "fan-out CPU per commit: bench subscribers",
            per_commit(own_cpu.total()),
            "ms",
        )
        .note(format!(
            "this process (all subscribers, same 2 cores) ({:.0}% of one core; {:.0}% in the kernel)",
            busy(own_cpu.total()),
            own_cpu.system_percent()
        )),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    rows.push(
        Row::new(
            bench,
            "fan-out CPU floor on idle cores",
            per_commit(nodes_cpu.total() + own_cpu.total()) / cores as f64,
            "ms",
        )
        .note(format!(
            "(nodes + bench) CPU per commit / {cores} cores: back to back, no schedule delivers to all faster on this machine; paced, the heartbeats and ACKs between commits count too"
        )),
    );

    rows.push(
        Row::new(
            bench,
            "fan-out: node threads waiting for a CPU",
            busy(nodes_wait),
            "%",
        )
        .note(
            "run-queue wait of all node threads / wall time (schedstat): delay from CPU contention",
        ),
    );
    // With the CPUs busy, the kernel leaves more network work to ksoftirqd, which waits for a
    // CPU; meanwhile the loopback backlog (netdev_max_backlog packets per CPU) can fill. A delta
    // dropped there reaches its subscriber only after a TCP loss probe, 200 ms or more later.
    let count = |n: Option<u64>| n.map_or(f64::NAN, |n| n as f64);
    rows.push(
        Row::new(
            bench,
            "fan-out: packets dropped by a full loopback backlog",
            count(drops),
            "",
        )
        .note(format!(
            "machine-wide (/proc/net/softnet_stat) during the commits; TCP loss probes meanwhile: {}; a dropped delta shows as a max of 200+ ms",
            probes.map_or("?".to_string(), |n| n.to_string())
        )),
    );
    Ok(rows)
}
