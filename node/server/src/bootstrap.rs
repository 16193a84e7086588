//! Initialising a fresh cluster's membership exactly once.
//!
//! Only the configured peer with the lowest node id ever calls
//! `Raft::initialize`, and only when (a) its own log and vote are empty
//! (openraft refuses otherwise with NotAllowed, which is fine), (b) a majority
//! of the configured peers, itself included, answer on their Raft port, and
//! (c) none of those reports an existing membership. The others wait to be
//! contacted by the leader. So three nodes started at the same moment produce
//! one cluster, and a restarted node never re-initialises.

use crate::config::PeerConfig;
use crate::limits::CONNECT_TIMEOUT;
use crate::state::Shared;
use flagraft_proto::raft::v1::raft_client::RaftClient;
use flagraft_proto::raft::v1::ProbeRequest;
use flagraft_store::{NodeAddr, NodeId};
use openraft::error::{InitializeError, RaftError};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

const PROBE_INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

pub fn members(peers: &[PeerConfig]) -> BTreeMap<NodeId, NodeAddr> {
    peers
        .iter()
        .map(|p| {
            (
                p.node_id,
                NodeAddr {
                    raft: p.raft_addr.clone(),
                    admin: p.admin_addr.clone(),
                    http: p.http_addr.clone(),
                },
            )
        })
        .collect()
}

/// What a probe of the other peers found.
enum Probe {
    /// This many peers answered (self excluded), none initialised.
    Reachable(usize),
    /// Some peer already has a membership: a cluster exists.
    AlreadyInitialised(NodeId),
}

/// A client of a peer's Raft port (probes are rare: a fresh lazy channel each).
fn raft_client(addr: &str) -> Option<RaftClient<tonic::transport::Channel>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?;
    Some(RaftClient::new(
        endpoint.connect_timeout(CONNECT_TIMEOUT).connect_lazy(),
    ))
}

async fn probe(node: &Shared, peers: &[PeerConfig]) -> Probe {
    let mut reachable = 0;
    for p in peers.iter().filter(|p| p.node_id != node.id) {
        let Some(mut client) = raft_client(&p.raft_addr) else {
            continue;
        };
        let mut req = tonic::Request::new(ProbeRequest {});
        req.set_timeout(PROBE_TIMEOUT);
        if let Ok(Ok(status)) = tokio::time::timeout(PROBE_TIMEOUT, client.probe(req)).await {
            let status = status.into_inner();
            if !status.voters.is_empty() {
                return Probe::AlreadyInitialised(p.node_id);
            }
            reachable += 1;
        }
    }
    Probe::Reachable(reachable)
}

/// Runs until the node is part of an initialised cluster or shutdown starts.
pub async fn run(node: Shared, peers: Vec<PeerConfig>, mut shutdown: watch::Receiver<bool>) {
    let lowest = peers.iter().map(|p| p.node_id).min();
    if lowest != Some(node.id) {
        tracing::info!("waiting for node {lowest:?} to initialise the cluster");
        return;
    }
    let majority = peers.len() / 2 + 1;
    let mut attempts: u64 = 0;
    loop {
        match node.raft.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("bootstrap: raft stopped: {e}");
                return;
            }
        }
        match probe(&node, &peers).await {
            Probe::AlreadyInitialised(by) => {
                tracing::info!("bootstrap: node {by} already has a membership; not initialising");
                return;
            }
            Probe::Reachable(n) if n + 1 >= majority => {
                match node.raft.initialize(members(&peers)).await {
                    Ok(()) => {
                        tracing::info!("initialised the cluster with {} voters", peers.len());
                        return;
                    }
                    Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return,
                    Err(e) => tracing::warn!("bootstrap: initialize failed: {e}"),
                }
            }
            Probe::Reachable(n) => {
                attempts += 1;
                if attempts % 25 == 1 {
                    tracing::info!(
                        "bootstrap: {} of {} peers reachable; need {majority}",
                        n + 1,
                        peers.len()
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}
