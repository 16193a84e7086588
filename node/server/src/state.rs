//! What every service of a node shares.

use crate::forward::Forwarder;
use crate::metrics::NodeMetrics;
use flagraft_store::{NodeAddr, NodeId, Raft, StateMachineStore};
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;

pub struct NodeState {
    pub id: NodeId,
    pub cluster: String,
    pub raft: Raft,
    /// The term and the last log index this node had when it started (see
    /// [`NodeState::linearizable_barrier`]).
    pub started_at: LogEnd,
    pub sm: StateMachineStore,
    pub forwarder: Forwarder,
    pub metrics: NodeMetrics,
}

pub type Shared = Arc<NodeState>;

/// A term and a log index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogEnd {
    pub term: u64,
    pub last_log_index: u64,
}

/// Longest a linearizable read or a commit waits for a leader restored after a restart to apply
/// the log it restarted with (it needs a follower to acknowledge it first).
const RESTORED_LEADER_CATCH_UP: Duration = Duration::from_secs(5);

/// Whether a leader in `term` that has applied up to `applied` must still wait before local
/// state is linearizable, having started with `started_at`: only in the term it started in (a
/// leader elected later commits its own first entry, which is after all of that log).
pub fn restored_leader_must_wait(started_at: LogEnd, term: u64, applied: u64) -> Option<u64> {
    (term == started_at.term && applied < started_at.last_log_index)
        .then_some(started_at.last_log_index)
}

pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl NodeState {
    /// Returns once local state may answer a linearizable read, or check a commit against the
    /// head: this node is leader, confirmed by a quorum after the call began
    /// (`Raft::ensure_linearizable`), and has applied everything committed before.
    ///
    /// openraft 0.9 waits for `max(first entry of the leader's term, committed)`. That is not
    /// enough for a leader it restored at startup (its saved vote was its own, committed):
    /// after kill -9 such a leader knows only the commit index it recovered, which can lag the
    /// commits it acknowledged before the crash, and the first entry of its term is older still.
    /// Chaos seed 146348810 read version V-1 for 0.5 s after V was acknowledged: the leader was
    /// back 457 ms after the kill, its followers still followed it and confirmed it, and it took
    /// 0.5 s to relearn the commit index from them. Every acknowledged entry is in the log the node
    /// restarted with, so in that term it also waits until it has applied all of that log.
    pub async fn linearizable_barrier(&self) -> Result<(), tonic::Status> {
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("confirming leadership: {e}")))?;
        let (term, applied) = {
            let m = self.raft.metrics().borrow().clone();
            (m.current_term, m.last_applied.map_or(0, |l| l.index))
        };
        let Some(index) = restored_leader_must_wait(self.started_at, term, applied) else {
            return Ok(());
        };
        self.raft
            .wait(Some(RESTORED_LEADER_CATCH_UP))
            .applied_index_at_least(Some(index), "restored leader applies its log")
            .await
            .map(|_| ())
            .map_err(|e| {
                tonic::Status::unavailable(format!(
                    "this leader restarted and has not yet applied the log it restarted with \
                     (index {index}): {e}; retry"
                ))
            })
    }

    /// The known leader and its addresses, from the latest Raft metrics.
    pub fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, addr))
    }

    /// Waits until some leader is known, at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(NodeId, NodeAddr)> {
        let mut rx = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(l) = self.leader() {
                    return Some(l);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leader_in_the_term_it_started_in_waits_for_the_log_it_started_with() {
        let started = LogEnd {
            term: 7,
            last_log_index: 100,
        };
        // Restored at startup as leader of term 7, applied only to 98: wait for 100.
        assert_eq!(restored_leader_must_wait(started, 7, 98), Some(100));
        // Caught up.
        assert_eq!(restored_leader_must_wait(started, 7, 100), None);
        assert_eq!(restored_leader_must_wait(started, 7, 130), None);
        // Elected in a later term: its own first entry comes after that log, and openraft
        // waits for it.
        assert_eq!(restored_leader_must_wait(started, 8, 98), None);
        // A node that started empty never waits.
        assert_eq!(restored_leader_must_wait(LogEnd::default(), 0, 0), None);
    }
}
