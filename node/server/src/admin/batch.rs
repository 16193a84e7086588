//! Group commit on the leader.
//!
//! Each Raft entry costs an append, a flush, a replication message to every
//! follower and a trip through openraft on every node, whatever it carries.
//! Commits that arrive while earlier proposals are still in flight are
//! therefore proposed together as one entry (`Command::CommitBatch`), which the
//! state machine applies one by one, each as its own version with its own
//! outcome. A lone commit is proposed at once, by itself: batching adds no wait
//! when there is nothing to batch.

use super::write_error;
use crate::state::Shared;
use flagraft_store::{Command, CommandOutcome, CommitCommand};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Proposals in flight at once; later commits wait in the queue and go
/// together in the next proposal. One is best on the 2-core bench machine:
/// with 64 committers it makes entries of ~32 commits instead of ~12 (3 in
/// flight), which cut node CPU per commit by ~10% and raised throughput by
/// 5-7% (`bench_commit --only throughput`). The cost: a commit that arrives
/// while a proposal is out waits for it, at most one extra round.
const MAX_IN_FLIGHT: usize = 1;
/// Commits and body bytes in one batch: keeps an entry well under a Raft
/// message (`limits::RAFT_MAX_MESSAGE_BYTES`) and a follower's apply short.
/// A commit bigger than the byte bound goes alone.
const MAX_BATCH_COMMITS: usize = 256;
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Commits waiting for a proposal; callers wait (async) beyond it.
const QUEUE: usize = 4096;
/// Longest a proposal holds its in-flight slot. A leader that loses its term
/// may never hear the fate of what it proposed (the entry can be truncated by
/// the next leader); without a bound, such proposals would hold every slot and
/// stall all later commits on this node (seen in chaos runs: 15 s without a
/// commit after a partition healed). Past it the callers get UNAVAILABLE
/// ("outcome unknown") and retry with their request id.
const PROPOSAL_WAIT: Duration = Duration::from_secs(3);

struct Pending {
    cmd: CommitCommand,
    bytes: usize,
    reply: oneshot::Sender<Result<CommandOutcome, Status>>,
}

/// Hands commits to the group-commit task of this node.
pub(crate) struct CommitBatcher {
    tx: mpsc::Sender<Pending>,
}

impl CommitBatcher {
    /// Starts the task (it ends when the batcher is dropped).
    pub fn spawn(node: Shared) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(node, rx));
        CommitBatcher { tx }
    }

    /// Proposes `cmd` (its bodies about `bytes` long) and returns its outcome
    /// once applied on this node.
    pub async fn propose(
        &self,
        cmd: CommitCommand,
        bytes: usize,
    ) -> Result<CommandOutcome, Status> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { cmd, bytes, reply })
            .await
            .map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())?
    }
}

fn stopping() -> Status {
    Status::unavailable("node is shutting down; retry")
}

async fn run(node: Shared, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Waiting here is what lets the queue fill while proposals are in flight.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMITS {
            let Ok(next) = rx.try_recv() else { break };
            if bytes.saturating_add(next.bytes) > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        node.metrics
            .commit_proposals
            .fetch_add(1, Ordering::Relaxed);
        node.metrics
            .commits_proposed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        tokio::spawn(propose(node.clone(), batch, permit));
    }
}

fn outcome_unknown() -> Status {
    Status::unavailable(format!(
        "no outcome within {} s (leadership may have changed); retry with the same request id",
        PROPOSAL_WAIT.as_secs()
    ))
}

async fn propose(node: Shared, mut batch: Vec<Pending>, _permit: OwnedSemaphorePermit) {
    let raft = &node.raft;
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let outcome = match tokio::time::timeout(
                PROPOSAL_WAIT,
                raft.client_write(Command::Commit(p.cmd)),
            )
            .await
            {
                Ok(written) => written.map(|r| r.data).map_err(write_error),
                Err(_) => Err(outcome_unknown()),
            };
            let _ = p.reply.send(outcome);
        }
        return;
    }
    let (cmds, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    let written =
        match tokio::time::timeout(PROPOSAL_WAIT, raft.client_write(Command::CommitBatch(cmds)))
            .await
        {
            Ok(written) => written,
            Err(_) => {
                let status = outcome_unknown();
                for reply in replies {
                    let _ = reply.send(Err(status.clone()));
                }
                return;
            }
        };
    match written {
        Ok(resp) => match resp.data {
            CommandOutcome::Batch(outcomes) if outcomes.len() == n => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            other => {
                tracing::error!("a batch of {n} commits was answered with {other:?}");
                let status = Status::internal(format!(
                    "a batch of {n} commits was answered with an unexpected outcome"
                ));
                for reply in replies {
                    let _ = reply.send(Err(status.clone()));
                }
            }
        },
        Err(e) => {
            let status = write_error(e);
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}
