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
    pub sm: StateMachineStore,
    pub forwarder: Forwarder,
    pub metrics: NodeMetrics,
}

pub type Shared = Arc<NodeState>;

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
