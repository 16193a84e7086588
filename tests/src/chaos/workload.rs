//! The workload: admin writers, linearizable readers and SDK subscribers, all
//! recording into the history.
//!
//! Writers commit one gate per commit (from a small pool of names, so gates
//! are overwritten and the digest changes every version) with a unique request
//! id; about a quarter of the commits carry an expected version (the highest
//! version any client has seen). An attempt that times out or fails in a way
//! that leaves the effect open is retried with the same request id on a random
//! node until a definite answer or the operation deadline.

use super::cluster::{ChaosCluster, PROJECT, SDK_KEY};
use super::history::*;
use super::recorder::Recorder;
use crate::Admin;
use flagraft_client::sdk::Client;
use flagraft_proto::admin::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub writers: usize,
    pub readers: usize,
    pub subscribers: usize,
    /// Fraction of commits that carry an expected version.
    pub expected_fraction: f64,
    /// Deadline of one gRPC attempt.
    pub attempt_timeout: Duration,
    /// A logical operation gives up (result unknown) after this long.
    pub op_deadline: Duration,
    /// Pause between a client's operations, uniformly in this range (ms): pacing, not sync.
    pub think_ms: (u64, u64),
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            writers: 4,
            readers: 2,
            subscribers: 3,
            expected_fraction: 0.25,
            attempt_timeout: Duration::from_secs(2),
            op_deadline: Duration::from_secs(20),
            think_ms: (20, 100),
        }
    }
}

/// The gates writers overwrite.
const GATE_POOL: u64 = 16;
/// At most this many attempts per operation (the deadline usually ends it first).
const MAX_ATTEMPTS: u32 = 200;
/// A probe commit is sent this often (the resolution of the unavailability figures).
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What writers and readers share: node clients and the highest version seen.
#[derive(Clone)]
pub struct Clients {
    nodes: Vec<(u64, Admin)>,
    latest: Arc<AtomicU64>,
    rec: Arc<Recorder>,
    opts: WorkloadOptions,
}

impl Clients {
    pub fn new(cluster: &ChaosCluster, rec: Arc<Recorder>, opts: WorkloadOptions) -> Clients {
        let nodes = cluster
            .ids
            .iter()
            .filter_map(|&id| cluster.admin(id).map(|a| (id, a)))
            .collect();
        Clients {
            nodes,
            latest: Arc::new(AtomicU64::new(0)),
            rec,
            opts,
        }
    }

    fn pick(&self, rng: &mut StdRng) -> (u64, Admin) {
        let i = rng.gen_range(0..self.nodes.len());
        self.nodes[i].clone()
    }

    fn saw(&self, version: u64) {
        self.latest.fetch_max(version, Ordering::Relaxed);
    }
}

fn status_outcome(s: &tonic::Status) -> AttemptOutcome {
    match s.code() {
        tonic::Code::FailedPrecondition => {
            let current = s
                .metadata()
                .get("flagraft-current-version")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            match current {
                Some(v) => AttemptOutcome::Conflict {
                    current_version: Some(v),
                },
                None => AttemptOutcome::Fail {
                    reason: format!("refused: {}", s.message()),
                },
            }
        }
        tonic::Code::InvalidArgument | tonic::Code::NotFound => AttemptOutcome::Fail {
            reason: format!("{}: {}", s.code(), s.message()),
        },
        // UNAVAILABLE (leader moved, forwarding failed, ...), DEADLINE_EXCEEDED,
        // CANCELLED, UNKNOWN, INTERNAL, transport errors: the commit may have happened.
        _ => AttemptOutcome::Unknown {
            reason: format!("{}: {}", s.code(), s.message()),
        },
    }
}

async fn commit_attempt(
    admin: &mut Admin,
    req: pb::CommitRequest,
    timeout: Duration,
) -> AttemptOutcome {
    let mut request = tonic::Request::new(req);
    request.set_timeout(timeout);
    match tokio::time::timeout(timeout, admin.commit(request)).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            AttemptOutcome::Ok {
                version: r.version,
                digest: r.digest,
                duplicate: r.duplicate,
            }
        }
        Ok(Err(s)) => status_outcome(&s),
        Err(_) => AttemptOutcome::Unknown {
            reason: "client deadline".into(),
        },
    }
}

/// How one logical commit is sent.
struct CommitPlan {
    expected_version: Option<u64>,
    /// Always this node (index into the node list); None: a random node per attempt.
    node: Option<usize>,
    max_attempts: u32,
    attempt_timeout: Duration,
}

/// One logical commit: attempts until a definite answer, the attempt cap or the deadline.
async fn commit_op(
    c: &Clients,
    client: &str,
    rng: &mut StdRng,
    request_id: String,
    plan: CommitPlan,
) {
    let expected_version = plan.expected_version;
    let gate = format!("g{}", rng.gen_range(0..GATE_POOL));
    let req = pb::CommitRequest {
        project: PROJECT.into(),
        upserts: vec![pb::Entity {
            kind: "gate".into(),
            name: gate,
            json: crate::gate_json(&request_id),
        }],
        deletes: vec![],
        author: client.into(),
        message: format!("chaos {request_id}"),
        expected_version,
        request_id: Some(request_id.clone()),
    };
    let id = c.rec.next_op_id();
    let started = Instant::now();
    let invoke_ns = c.rec.now_ns();
    let mut attempts = Vec::new();
    let mut result = None;
    for _ in 0..plan.max_attempts {
        if started.elapsed() >= c.opts.op_deadline {
            break;
        }
        let (node, mut admin) = match plan.node {
            Some(i) => c.nodes[i % c.nodes.len()].clone(),
            None => c.pick(rng),
        };
        let a_invoke = c.rec.now_ns();
        let outcome = commit_attempt(&mut admin, req.clone(), plan.attempt_timeout).await;
        let a_complete = c.rec.now_ns();
        let definite = match &outcome {
            AttemptOutcome::Ok {
                version, digest, ..
            } => {
                c.saw(*version);
                Some(OpResult::Ok {
                    version: *version,
                    digest: digest.clone(),
                })
            }
            AttemptOutcome::Conflict { current_version } => {
                if let Some(v) = current_version {
                    c.saw(*v);
                }
                Some(OpResult::Conflict {
                    current_version: *current_version,
                })
            }
            AttemptOutcome::Fail { reason } => {
                // After an attempt with an open outcome, a refusal does not close it.
                let open = attempts
                    .iter()
                    .any(|a: &Attempt| matches!(a.outcome, AttemptOutcome::Unknown { .. }));
                Some(if open {
                    OpResult::Unknown {
                        reason: format!("refused after an open attempt: {reason}"),
                    }
                } else {
                    OpResult::Fail {
                        reason: reason.clone(),
                    }
                })
            }
            AttemptOutcome::Unknown { .. } => None,
        };
        attempts.push(Attempt {
            node,
            invoke_ns: a_invoke,
            complete_ns: a_complete,
            outcome,
        });
        if let Some(r) = definite {
            result = Some((r, a_complete));
            break;
        }
        if attempts.len() as u32 >= plan.max_attempts {
            break;
        }
        // Back off a little before the retry (pacing, not synchronisation).
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..120))).await;
    }
    let (result, complete_ns) = match result {
        Some((r @ OpResult::Unknown { .. }, _)) => (r, None),
        Some((r, t)) => (r, Some(t)),
        None => (
            OpResult::Unknown {
                reason: format!("no definite answer in {} attempts", attempts.len()),
            },
            None,
        ),
    };
    c.rec.operation(Operation {
        id,
        client: client.into(),
        op: OpKind::Commit {
            request_id,
            expected_version,
        },
        invoke_ns,
        complete_ns,
        result,
        attempts,
    });
}

async fn read_op(c: &Clients, client: &str, rng: &mut StdRng) {
    let (node, mut admin) = c.pick(rng);
    let id = c.rec.next_op_id();
    let invoke_ns = c.rec.now_ns();
    let mut request = tonic::Request::new(crate::linearizable_read(PROJECT));
    request.set_timeout(c.opts.attempt_timeout);
    let answer = tokio::time::timeout(c.opts.attempt_timeout, admin.get_ruleset(request)).await;
    let complete_ns = c.rec.now_ns();
    let outcome = match answer {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            c.saw(r.version);
            AttemptOutcome::Ok {
                version: r.version,
                digest: r.digest,
                duplicate: false,
            }
        }
        Ok(Err(s)) => AttemptOutcome::Unknown {
            reason: format!("{}: {}", s.code(), s.message()),
        },
        Err(_) => AttemptOutcome::Unknown {
            reason: "client deadline".into(),
        },
    };
    let (result, done) = match &outcome {
        AttemptOutcome::Ok {
            version, digest, ..
        } => (
            OpResult::Ok {
                version: *version,
                digest: digest.clone(),
            },
            Some(complete_ns),
        ),
        other => (
            OpResult::Unknown {
                reason: format!("{other:?}"),
            },
            None,
        ),
    };
    c.rec.operation(Operation {
        id,
        client: client.into(),
        op: OpKind::Read,
        invoke_ns,
        complete_ns: done,
        result,
        attempts: vec![Attempt {
            node,
            invoke_ns,
            complete_ns,
            outcome,
        }],
    });
}

async fn think(c: &Clients, rng: &mut StdRng, stop: &mut watch::Receiver<bool>) {
    let (lo, hi) = c.opts.think_ms;
    let pause = Duration::from_millis(rng.gen_range(lo..=hi.max(lo)));
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Commits until `stop`; the operation in progress when it comes is finished.
pub async fn writer(c: Clients, k: usize, seed: u64, mut stop: watch::Receiver<bool>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5752_0000 + k as u64));
    let client = format!("w{k}");
    let mut n: u64 = 0;
    while !*stop.borrow() {
        n += 1;
        let plan = CommitPlan {
            expected_version: rng
                .gen_bool(c.opts.expected_fraction)
                .then(|| c.latest.load(Ordering::Relaxed)),
            node: None,
            max_attempts: MAX_ATTEMPTS,
            attempt_timeout: c.opts.attempt_timeout,
        };
        commit_op(&c, &client, &mut rng, format!("{seed}-{client}-{n}"), plan).await;
        think(&c, &mut rng, &mut stop).await;
    }
}

/// Probe commits: one single-attempt commit every `PROBE_INTERVAL`, to each
/// node in turn, without waiting for the previous ones. Writers can all be
/// stuck on a paused or cut-off node at once; the probes keep sending to
/// every node, so the first acknowledgment after a fault measures the
/// cluster, not where the writers happened to be waiting. Their commits are
/// part of the history like any other.
pub async fn prober(c: Clients, seed: u64, mut stop: watch::Receiver<bool>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5052_0000);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        // Reap finished probes so the set stays small.
        while in_flight.try_join_next().is_some() {}
        n += 1;
        let node = (n % c.nodes.len() as u64) as usize;
        let probe_seed = rng.gen();
        let c = c.clone();
        in_flight.spawn(async move {
            let mut rng = StdRng::seed_from_u64(probe_seed);
            let plan = CommitPlan {
                expected_version: None,
                node: Some(node),
                max_attempts: 1,
                attempt_timeout: PROBE_TIMEOUT,
            };
            commit_op(&c, "probe", &mut rng, format!("{seed}-probe-{n}"), plan).await;
        });
    }
    // Each probe ends within its attempt timeout.
    while in_flight.join_next().await.is_some() {}
}

pub async fn reader(c: Clients, k: usize, seed: u64, mut stop: watch::Receiver<bool>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5244_0000 + k as u64));
    let client = format!("r{k}");
    while !*stop.borrow() {
        read_op(&c, &client, &mut rng).await;
        think(&c, &mut rng, &mut stop).await;
    }
}

/// An SDK client and the task recording every version it applies.
pub struct Subscriber {
    pub name: String,
    pub client: Client,
    /// The recorder's own thread (see [`subscriber`]); it ends on the stop signal.
    pub recorder: Option<std::thread::JoinHandle<()>>,
}

/// Starts subscriber `k` on the cluster's stream endpoints (in a seeded order).
pub async fn subscriber(
    cluster: &ChaosCluster,
    rec: Arc<Recorder>,
    k: usize,
    seed: u64,
    stop: watch::Receiver<bool>,
) -> Result<Subscriber, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5342_0000 + k as u64));
    let mut endpoints: Vec<String> = cluster
        .ids
        .iter()
        .map(|&id| cluster.http_endpoint(id))
        .collect();
    let first = rng.gen_range(0..endpoints.len());
    endpoints.rotate_left(first);
    let client = Client::builder()
        .endpoints(endpoints)
        .random_start(false)
        .sdk_key(SDK_KEY)
        .init_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(1))
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .build()
        .await
        .map_err(|e| format!("subscriber s{k}: {e}"))?;
    let name = format!("s{k}");
    // On a thread of its own the recorder drains its update queue at once
    // instead of queueing behind the rig's other tasks (no overflowed queue,
    // timestamps close to when the SDK applied each version).
    let (c, n) = (client.clone(), name.clone());
    let recorder = std::thread::Builder::new()
        .name(format!("chaos-rec-{name}"))
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt.block_on(record_updates(c, n, rec, stop)),
                Err(e) => rec.incident(format!("subscriber recorder runtime: {e}")),
            }
        })
        .map_err(|e| format!("subscriber s{k} recorder thread: {e}"))?;
    Ok(Subscriber {
        name,
        client,
        recorder: Some(recorder),
    })
}

async fn record_updates(
    client: Client,
    name: String,
    rec: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) {
    let mut updates = client.updates();
    // What the client holds now (its first snapshot arrived during build).
    // Subscribed first, so every later version is still queued: versions up to
    // this one that are queued too are skipped.
    let held = client.ruleset();
    let mut skip_up_to = None;
    if held.source == flagraft_client::sdk::StateSource::Network {
        skip_up_to = Some(held.version);
        rec.observation(Observation {
            subscriber: name.clone(),
            t_ns: rec.now_ns(),
            version: held.version,
            digest: Some(held.digest.to_hex()),
            snapshot: true,
            missed_before: 0,
        });
    }
    let mut missed: u64 = 0;
    // Ends when stopped or when the client is gone.
    loop {
        let update = tokio::select! {
            u = updates.recv() => u,
            _ = stop.wait_for(|s| *s) => return,
        };
        match update {
            Ok(u) => {
                if let Some(held) = skip_up_to {
                    if u.version <= held {
                        continue;
                    }
                    skip_up_to = None;
                }
                rec.observation(Observation {
                    subscriber: name.clone(),
                    t_ns: rec.now_ns(),
                    version: u.version,
                    digest: Some(u.digest.to_hex()),
                    snapshot: u.changed.is_none(),
                    missed_before: std::mem::take(&mut missed),
                });
            }
            Err(broadcast::error::RecvError::Lagged(n)) => missed += n,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
