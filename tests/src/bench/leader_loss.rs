//! Leader loss: with commits flowing from several committers, `kill -9` the
//! leader and measure how long commits stay unavailable; restart the node and
//! wait for it to catch up before the next kill.

use super::cluster::{admin_connection, START_TIMEOUT};
use super::commits::{gate_upsert, request_id, sized_gate_json};
use crate::Admin;
use crate::Cluster;
use anyhow::{anyhow, Context};
use flagraft_proto::admin::v1 as pb;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound on one commit attempt while a leader may be dead.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed attempt before the next (a client's retry delay).
const RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Longest the cluster may stay unavailable before the run is declared broken.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Options {
    pub kills: usize,
    pub committers: usize,
    pub entity_bytes: usize,
}

/// What one kill measured.
#[derive(Clone, Debug)]
pub struct Kill {
    pub killed: u64,
    pub new_leader: u64,
    /// From the kill until a commit attempted after the kill was acknowledged.
    pub unavailable: Duration,
    /// From the kill until every live node named the same new leader (polled every 20 ms).
    pub leader_agreed: Duration,
    /// From the restart until the node was ready and had applied the head version.
    pub catch_up: Duration,
}

#[derive(Debug)]
pub struct Outcome {
    pub kills: Vec<Kill>,
    pub commits: u64,
    pub failed_attempts: u64,
    /// Errors a client would not retry (bugs): count and first message.
    pub fatal_errors: u64,
    pub first_fatal: Option<String>,
}

/// Successful commits as (attempt start, acknowledgement, version).
#[derive(Default)]
struct Log {
    acks: Mutex<Vec<(Instant, Instant, u64)>>,
    failed: AtomicU64,
    fatal: AtomicU64,
    first_fatal: Mutex<Option<String>>,
}

impl Log {
    fn acks(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, Instant, u64)>> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first acknowledgement of an attempt started at or after `t`.
    fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.acks()
            .iter()
            .filter(|(start, _, _)| *start >= t)
            .map(|&(_, ack, _)| ack)
            .min()
    }

    fn acked_after(&self, t: Instant) -> usize {
        self.acks()
            .iter()
            .filter(|(start, _, _)| *start >= t)
            .count()
    }

    fn head(&self) -> u64 {
        self.acks().iter().map(|&(_, _, v)| v).max().unwrap_or(0)
    }
}

/// One committer: retries each commit (same request id) on any node until it
/// is acknowledged, moving to the next node after a failure.
async fn committer(
    nodes: Vec<Admin>,
    first: usize,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
    name: String,
    entity_bytes: usize,
) {
    let mut at = first;
    while !stop.load(Ordering::Relaxed) {
        let rid = request_id(&name);
        let req = gate_upsert(&name, sized_gate_json(&rid, entity_bytes), rid);
        while !stop.load(Ordering::Relaxed) {
            let mut client = nodes[at % nodes.len()].clone();
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(ATTEMPT_TIMEOUT);
            let start = Instant::now();
            match client.commit(r).await {
                Ok(resp) => {
                    let v = resp.into_inner().version;
                    log.acks().push((start, Instant::now(), v));
                    break;
                }
                Err(s) => {
                    log.failed.fetch_add(1, Ordering::Relaxed);
                    if !is_retryable(&s) {
                        log.fatal.fetch_add(1, Ordering::Relaxed);
                        let mut first = log.first_fatal.lock().unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert_with(|| s.to_string());
                        break;
                    }
                    at += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}

/// Failures a client retries with the same request id (as the cluster tests
/// do): no leader, leader gone, transport errors.
fn is_retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
    )
}

/// Waits (bounded) until `f` holds, polling every 10 ms.
async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            return Err(anyhow!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Node `id` has applied at least `version` of project default (bounded wait).
async fn applied(c: &Cluster, id: u64, version: u64, timeout: Duration) -> anyhow::Result<()> {
    let mut client = admin_connection(c, id)?;
    let mut r = tonic::Request::new(pb::ListHistoryRequest {
        project: "default".into(),
        from_version: version,
        limit: 1,
        min_version: Some(version),
    });
    r.set_timeout(timeout);
    client
        .list_history(r)
        .await
        .map_err(|s| anyhow!("node {id} did not apply version {version}: {s}"))?;
    Ok(())
}

pub async fn run(c: Arc<Cluster>, opts: &Options) -> anyhow::Result<Outcome> {
    let ids = c.ids();
    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..opts.committers {
        let nodes = ids
            .iter()
            .map(|&id| admin_connection(&c, id))
            .collect::<anyhow::Result<Vec<_>>>()?;
        tasks.push(tokio::spawn(committer(
            nodes,
            i,
            log.clone(),
            stop.clone(),
            format!("ll-{i}"),
            opts.entity_bytes,
        )));
    }
    let result = kills(&c, opts, &log).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        // Each attempt is bounded by ATTEMPT_TIMEOUT, so this ends.
        t.await.context("a committer task failed")?;
    }
    let kills = result?;
    let commits = log.acks().len() as u64;
    let first_fatal = log
        .first_fatal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Outcome {
        kills,
        commits,
        failed_attempts: log.failed.load(Ordering::Relaxed),
        fatal_errors: log.fatal.load(Ordering::Relaxed),
        first_fatal,
    })
}

async fn kills(c: &Cluster, opts: &Options, log: &Log) -> anyhow::Result<Vec<Kill>> {
    let ids = c.ids();
    let mut out = Vec::new();
    for k in 0..opts.kills {
        // Steady state: every node ready, one leader, commits flowing.
        for &id in &ids {
            c.wait_ready(id, START_TIMEOUT)
                .await
                .map_err(|e| anyhow!("{e}"))?;
        }
        let leader = c
            .wait_for_leader(&ids, START_TIMEOUT)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let steady = Instant::now();
        until("commits to flow", RECOVERY_TIMEOUT, || {
            log.acked_after(steady) >= 50
        })
        .await?;

        let killed_at = Instant::now();
        c.kill9(leader);
        let live: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
        let new_leader = c
            .wait_for_leader(&live, RECOVERY_TIMEOUT)
            .await
            .map_err(|e| anyhow!("after killing leader {leader}: {e}"))?;
        let leader_agreed = killed_at.elapsed();
        until("a commit after the kill", RECOVERY_TIMEOUT, || {
            log.first_ack_after(killed_at).is_some()
        })
        .await
        .map_err(|e| anyhow!("after killing leader {leader}: {e}"))?;
        let unavailable = log.first_ack_after(killed_at).map_or(Duration::MAX, |ack| {
            ack.saturating_duration_since(killed_at)
        });

        let restarted = Instant::now();
        c.spawn(leader);
        c.wait_ready(leader, START_TIMEOUT)
            .await
            .map_err(|e| anyhow!("restarted node {leader}: {e}"))?;
        applied(c, leader, log.head(), RECOVERY_TIMEOUT).await?;
        let kill = Kill {
            killed: leader,
            new_leader,
            unavailable,
            leader_agreed,
            catch_up: restarted.elapsed(),
        };
        crate::progress!(
            "kill {}/{}: leader {} killed; commits back after {:.0?} (leader {} agreed after {:.0?}); restarted node caught up in {:.0?}",
            k + 1,
            opts.kills,
            kill.killed,
            kill.unavailable,
            kill.new_leader,
            kill.leader_agreed,
            kill.catch_up
        );
        out.push(kill);
    }
    Ok(out)
}
