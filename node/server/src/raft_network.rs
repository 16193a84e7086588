//! Client side of the Raft transport: openraft's `RaftNetworkFactory` over tonic.
//!
//! One lazily-connected HTTP/2 channel per peer address, shared by every
//! replication stream to that peer (tonic multiplexes), so connections are
//! reused and re-established by tonic after a peer restarts.

use crate::codec;
use crate::limits::{CONNECT_TIMEOUT, RAFT_MAX_MESSAGE_BYTES};
use flagraft_proto::raft::v1::raft_client::RaftClient;
use flagraft_proto::raft::v1::{raft_reply, RaftReply, RaftRequest};
use flagraft_store::{NodeAddr, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::RPCTypes;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>>;

/// Creates per-target clients; channels are cached by address.
#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Network {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad raft address {addr}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            client: self.channel(&node.raft).map(|c| {
                RaftClient::new(c)
                    .max_decoding_message_size(RAFT_MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(RAFT_MAX_MESSAGE_BYTES)
            }),
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl PeerClient {
    /// Sends one envelope and decodes the reply into the openraft result type.
    async fn call<T, E>(
        &mut self,
        action: RPCTypes,
        request: RaftRequest,
        option: &RPCOption,
    ) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.hard_ttl();
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    e.clone(),
                ))))
            }
        };
        let rpc = async {
            match action {
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply: RaftReply = match tokio::time::timeout(ttl, rpc).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: 0,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) => return Err(status_to_rpc_error(status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let network = |e: codec::CodecError| RPCError::Network(NetworkError::new(&e));
        match reply.result {
            Some(raft_reply::Result::Ok(bytes)) => {
                codec::decode(&bytes, RAFT_MAX_MESSAGE_BYTES).map_err(network)
            }
            Some(raft_reply::Result::RaftError(bytes)) => {
                let err: RaftError<NodeId, E> =
                    codec::decode(&bytes, RAFT_MAX_MESSAGE_BYTES).map_err(network)?;
                Err(RPCError::RemoteError(RemoteError::new(self.target, err)))
            }
            None => Err(RPCError::Network(NetworkError::new(&TransportError(
                "empty raft reply".into(),
            )))),
        }
    }
}

/// Connection failures make openraft back off; other failures are retried.
fn status_to_rpc_error<E: std::error::Error>(
    status: tonic::Status,
) -> RPCError<NodeId, NodeAddr, RaftError<NodeId, E>> {
    let err = TransportError(format!("{}: {}", status.code(), status.message()));
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => {
            RPCError::Unreachable(Unreachable::new(&err))
        }
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

fn envelope<T: serde::Serialize>(
    value: &T,
    data: Vec<u8>,
) -> Result<RaftRequest, codec::CodecError> {
    Ok(RaftRequest {
        payload: codec::encode(value)?,
        data,
    })
}

fn encode_error<E: std::error::Error>(
    e: codec::CodecError,
) -> RPCError<NodeId, NodeAddr, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let req = envelope(&rpc, Vec::new()).map_err(encode_error)?;
        self.call(RPCTypes::AppendEntries, req, &option).await
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let data = std::mem::take(&mut rpc.data);
        let req = envelope(&rpc, data).map_err(encode_error)?;
        self.call(RPCTypes::InstallSnapshot, req, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let req = envelope(&rpc, Vec::new()).map_err(encode_error)?;
        let mut resp: VoteResponse<NodeId> = self.call(RPCTypes::Vote, req, &option).await?;
        // openraft 0.9 answers a refusal that names a longer log with a sticky penalty: this node's
        // election timeout grows by 2 x election_timeout_max until it next campaigns, even once it
        // has caught up, and leader loss took 0.7-1.7 s whenever both followers carried it. The
        // voter with the longer log campaigns at once instead (campaign.rs), so the penalty is not
        // needed: the refusal is passed on without the longer log id.
        if !resp.vote_granted && resp.last_log_id > rpc.last_log_id {
            resp.last_log_id = rpc.last_log_id;
        }
        Ok(resp)
    }
}
