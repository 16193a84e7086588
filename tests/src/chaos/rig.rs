//! One chaos run: cluster up, workload on, faults on a seeded schedule for the
//! requested duration, faults off, workload off, convergence measured, final
//! history read, everything stopped and removed.

use super::cluster::{ChaosCluster, PROJECT};
use super::faults::{inject, Schedule};
use super::history::*;
use super::netns::{self, Netns};
use super::recorder::Recorder;
use super::workload::{self, Clients, Subscriber, WorkloadOptions};
use flagraft_proto::admin::v1 as pb;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct RigOptions {
    pub seed: u64,
    /// How long faults are injected.
    pub duration: Duration,
    pub workload: WorkloadOptions,
    /// Where configs, data, logs, the history and the report go.
    pub dir: PathBuf,
    pub node_binary: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RigError(pub String);

fn err(what: &str) -> impl Fn(String) -> RigError + '_ {
    move |e| RigError(format!("{what}: {e}"))
}

/// The cluster must be healthy this soon after start and after each fault.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// After the faults stop, every node and subscriber must hold the final version within this.
pub const CONVERGENCE_LIMIT: Duration = Duration::from_secs(10);
/// Quiet time before the first fault.
const WARMUP: Duration = Duration::from_secs(2);

/// Runs everything and returns the history (the caller checks it).
pub async fn run(opts: &RigOptions) -> Result<History, RigError> {
    let run_id = std::process::id();
    netns::available(run_id).map_err(|e| {
        RigError(format!(
            "cannot create network namespaces ({e}); the chaos rig needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
        ))
    })?;
    std::fs::create_dir_all(&opts.dir).map_err(|e| err("run dir")(e.to_string()))?;
    let net = Netns::create(&[1, 2, 3], run_id).map_err(|e| err("network")(e.to_string()))?;
    // For the outer script, should this process die before it removes them.
    let _ = std::fs::write(opts.dir.join("netns"), net.namespaces().join("\n") + "\n");
    let cluster = ChaosCluster::create(&opts.dir, &opts.node_binary, net)
        .map_err(|e| err("cluster")(e.to_string()))?;
    let result = drive(&cluster, opts).await;
    cluster.stop_all();
    // Dropping the cluster removes the namespaces.
    drop(cluster);
    result
}

async fn drive(cluster: &ChaosCluster, opts: &RigOptions) -> Result<History, RigError> {
    for &id in &cluster.ids {
        cluster.start(id).map_err(|e| err("start")(e.to_string()))?;
    }
    let leader = cluster
        .wait_healthy(Duration::from_secs(60))
        .await
        .map_err(err("startup"))?;
    eprintln!(
        "chaos: cluster up, node {leader} leads; namespaces {:?}",
        cluster.net.namespaces()
    );

    let rec = Arc::new(Recorder::new(opts.seed, cluster.ids.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Subscribers record until the very end (through the convergence phase).
    let (stop_subs_tx, stop_subs_rx) = watch::channel(false);
    let w = &opts.workload;
    let mut subscribers: Vec<Subscriber> = Vec::new();
    for k in 1..=w.subscribers {
        let s = workload::subscriber(cluster, rec.clone(), k, opts.seed, stop_subs_rx.clone())
            .await
            .map_err(RigError)?;
        subscribers.push(s);
    }
    let clients = Clients::new(cluster, rec.clone(), w.clone());
    let mut tasks = Vec::new();
    for k in 1..=w.writers {
        tasks.push(tokio::spawn(workload::writer(
            clients.clone(),
            k,
            opts.seed,
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(workload::prober(
        clients.clone(),
        opts.seed,
        stop_rx.clone(),
    )));
    for k in 1..=w.readers {
        tasks.push(tokio::spawn(workload::reader(
            clients.clone(),
            k,
            opts.seed,
            stop_rx.clone(),
        )));
    }

    let fault_result = run_faults(cluster, &rec, opts).await;
    // Faults off, whatever happened: links healed, every node running and continued.
    let _ = cluster.net.heal_all();
    for &id in &cluster.ids {
        if !cluster.is_running(id) {
            if let Err(e) = cluster.start(id) {
                rec.incident(format!("could not restart node {id} at the end: {e}"));
            }
        } else {
            let _ = cluster.resume(id);
        }
    }
    let faults_stopped_ns = rec.now_ns();
    eprintln!("chaos: faults stopped; finishing the operations in flight");
    stop_tx.send_replace(true);
    // Each task finishes its operation in progress, bounded by the operation deadline.
    let finish_by = w.op_deadline + w.attempt_timeout + Duration::from_secs(5);
    for t in tasks {
        if tokio::time::timeout(finish_by, t).await.is_err() {
            rec.incident("a workload task did not finish in time".into());
        }
    }
    if let Err(e) = fault_result {
        rec.rig_failure(format!("fault injection stopped early: {}", e.0));
    }
    match settle(cluster, &rec, &subscribers, faults_stopped_ns).await {
        Ok(f) => rec.set_final(f),
        Err(e) => rec.rig_failure(format!("could not read the final state: {}", e.0)),
    }
    stop_subs_tx.send_replace(true);
    for s in &mut subscribers {
        s.client.shutdown().await;
        if let Some(t) = s.recorder.take() {
            // Returns promptly: the recorder's loop ends on the stop signal.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
    Ok(rec.snapshot())
}

async fn run_faults(
    cluster: &ChaosCluster,
    rec: &Recorder,
    opts: &RigOptions,
) -> Result<(), RigError> {
    let start = Instant::now();
    tokio::time::sleep(WARMUP).await;
    let mut schedule = Schedule::new(opts.seed);
    let mut n = 0u64;
    // Bounded by the duration (each fault lasts a bounded time).
    while start.elapsed() < opts.duration {
        let planned = schedule.next_fault();
        n += 1;
        eprintln!(
            "chaos: [{:>6.1}s] fault {n}: {:?}",
            start.elapsed().as_secs_f64(),
            planned.fault
        );
        inject(cluster, rec, planned).await.map_err(err("fault"))?;
        if let Err(e) = cluster.wait_healthy(HEALTHY_TIMEOUT).await {
            rec.incident(format!("after fault {n} ({:?}): {e}", planned.fault));
        }
        let left = opts.duration.saturating_sub(start.elapsed());
        tokio::time::sleep(Duration::from_millis(planned.gap_ms).min(left)).await;
    }
    Ok(())
}

/// The head by a linearizable read, asking every node at once (the first answer wins:
/// a node that still believes it leads must not hold the measurement up).
/// The head from the first node that answers a linearizable read, or why the
/// last one did not.
async fn linearizable_head(cluster: &ChaosCluster) -> Result<(u64, String), String> {
    let asks = cluster
        .ids
        .iter()
        .filter_map(|&id| cluster.admin(id).map(|admin| (id, admin)))
        .map(|(id, mut admin)| {
            Box::pin(async move {
                let mut req = tonic::Request::new(crate::linearizable_read(PROJECT));
                req.set_timeout(Duration::from_secs(2));
                let r = tokio::time::timeout(Duration::from_secs(2), admin.get_ruleset(req)).await;
                match r {
                    Ok(Ok(r)) => {
                        let r = r.into_inner();
                        Ok((r.version, r.digest))
                    }
                    Ok(Err(s)) => Err(format!("node {id}: {}: {}", s.code(), s.message())),
                    Err(_) => Err(format!("node {id}: no answer within 2 s")),
                }
            })
        });
    // On failure select_ok gives the last node's reason.
    futures_util::future::select_ok(asks)
        .await
        .map(|(head, _)| head)
}

async fn local_head(cluster: &ChaosCluster, id: u64) -> Option<(u64, String)> {
    let mut admin = cluster.admin(id)?;
    let mut req = tonic::Request::new(pb::GetRulesetRequest {
        project: PROJECT.into(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(500));
    let r = tokio::time::timeout(Duration::from_millis(500), admin.get_ruleset(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some((r.version, r.digest))
}

/// Where each participant was seen, whenever it changed: (time, version, digest).
type Samples = Vec<Vec<(u64, u64, String)>>;

/// Measures convergence (from `started_ns`, when the faults stopped: the
/// operations still in flight then count against the limit) and reads the
/// final history.
async fn settle(
    cluster: &ChaosCluster,
    rec: &Recorder,
    subscribers: &[Subscriber],
    started_ns: u64,
) -> Result<FinalState, RigError> {
    let deadline_ns = started_ns + CONVERGENCE_LIMIT.as_nanos() as u64;
    let names: Vec<String> = cluster
        .ids
        .iter()
        .map(|id| format!("node {id}"))
        .chain(subscribers.iter().map(|s| format!("subscriber {}", s.name)))
        .collect();
    let mut samples: Samples = vec![Vec::new(); names.len()];
    let mut head: Option<(u64, String)> = None;
    let mut last_read_error = String::from("no read attempted");
    // Sampled every 50 ms until everyone holds the head, or a little past the limit so a
    // late arrival is measured rather than just missed. Workload tasks may take a while to
    // finish after the faults stop: the head is still read for at least 10 s from here
    // (convergence is measured from `started_ns` all the same).
    let give_up_ns = (deadline_ns + 5_000_000_000).max(rec.now_ns() + 10_000_000_000);
    while rec.now_ns() < give_up_ns {
        let seen_nodes =
            futures_util::future::join_all(cluster.ids.iter().map(|&id| local_head(cluster, id)))
                .await;
        let now = rec.now_ns();
        let seen = seen_nodes.into_iter().chain(
            subscribers
                .iter()
                .map(|s| Some((s.client.version(), s.client.digest().to_hex()))),
        );
        for (log, s) in samples.iter_mut().zip(seen) {
            if let Some((v, d)) = s {
                if log.last().is_none_or(|(_, lv, ld)| *lv != v || *ld != d) {
                    log.push((now, v, d));
                }
            }
        }
        if head.is_none() {
            // After the sampling, so a slow read does not skew the sample times.
            match linearizable_head(cluster).await {
                Ok(h) => head = Some(h),
                Err(e) => last_read_error = e,
            }
        }
        if let Some((hv, hd)) = &head {
            let all_there = samples
                .iter()
                .all(|log| log.last().is_some_and(|(_, v, d)| v == hv && d == hd));
            if all_there {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (head_version, head_digest) = head.ok_or_else(|| {
        RigError(format!(
            "no linearizable read of the head succeeded (last: {last_read_error})"
        ))
    })?;
    let participants = names
        .into_iter()
        .zip(&samples)
        .map(|(name, log)| {
            let (version, digest) = log
                .last()
                .map_or((0, String::new()), |(_, v, d)| (*v, d.clone()));
            Participant {
                name,
                version,
                digest,
                reached_ns: log
                    .iter()
                    .find(|(_, v, d)| *v == head_version && *d == head_digest)
                    .map(|(t, _, _)| *t),
            }
        })
        .collect();
    let (records, oldest_retained) = read_history(cluster, head_version).await?;
    Ok(FinalState {
        records,
        oldest_retained,
        head_version,
        head_digest,
        convergence: Convergence {
            started_ns,
            deadline_ns,
            participants,
        },
    })
}

/// Every record from version 1 to `head`, paged.
async fn read_history(
    cluster: &ChaosCluster,
    head: u64,
) -> Result<(Vec<RecordSummary>, u64), RigError> {
    let leader = cluster.leader().await.unwrap_or(cluster.ids[0]);
    let mut admin = cluster
        .admin(leader)
        .ok_or_else(|| RigError("no admin client".into()))?;
    let mut records = Vec::new();
    let mut oldest = 1;
    let mut from = 1;
    // At most head/1 pages; each page returns at least one record or ends the loop.
    let max_pages = head + 2;
    for _ in 0..max_pages {
        if from > head {
            break;
        }
        let mut req = tonic::Request::new(pb::ListHistoryRequest {
            project: PROJECT.into(),
            from_version: from,
            limit: 1000,
            min_version: Some(head),
        });
        req.set_timeout(Duration::from_secs(10));
        let page = admin
            .list_history(req)
            .await
            .map_err(|s| RigError(format!("ListHistory from {from}: {}", s.message())))?
            .into_inner();
        oldest = page.oldest_retained;
        let Some(last) = page.records.last().map(|r| r.version) else {
            break;
        };
        records.extend(page.records.into_iter().map(|r| RecordSummary {
            version: r.version,
            request_id: r.request_id,
            digest: r.digest,
        }));
        from = last + 1;
    }
    Ok((records, oldest))
}
