//! Server side of the Raft transport: hands decoded requests to the local Raft.

use crate::campaign::PromptCampaign;
use crate::codec;
use crate::limits::RAFT_MAX_MESSAGE_BYTES;
use flagraft_proto::raft::v1::raft_server::Raft as RaftRpc;
use flagraft_proto::raft::v1::{raft_reply, ProbeReply, ProbeRequest, RaftReply, RaftRequest};
use flagraft_store::{NodeId, Raft, TypeConfig};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde::Serialize;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct RaftService {
    raft: Raft,
    campaign: Arc<PromptCampaign>,
}

impl RaftService {
    pub fn new(raft: Raft, campaign: Arc<PromptCampaign>) -> Self {
        RaftService { raft, campaign }
    }
}

fn bad_request(e: codec::CodecError) -> Status {
    Status::invalid_argument(format!("raft payload: {e}"))
}

/// Wraps the local Raft's answer: a value or the RaftError it returned.
fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    let result = match result {
        Ok(v) => raft_reply::Result::Ok(codec::encode(&v).map_err(internal)?),
        Err(e) => raft_reply::Result::RaftError(codec::encode(&e).map_err(internal)?),
    };
    Ok(Response::new(RaftReply {
        result: Some(result),
    }))
}

fn internal(e: codec::CodecError) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req: AppendEntriesRequest<TypeConfig> =
            codec::decode(&request.get_ref().payload, RAFT_MAX_MESSAGE_BYTES)
                .map_err(bad_request)?;
        let result = self.raft.append_entries(req).await;
        if matches!(
            result,
            Ok(AppendEntriesResponse::Success
                | AppendEntriesResponse::PartialSuccess(_)
                | AppendEntriesResponse::Conflict)
        ) {
            self.campaign.heard_from_leader();
        }
        reply(result)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req: VoteRequest<NodeId> =
            codec::decode(&request.get_ref().payload, RAFT_MAX_MESSAGE_BYTES)
                .map_err(bad_request)?;
        let result = self.raft.vote(req.clone()).await;
        if let Ok(resp) = &result {
            self.campaign.after_vote(&req, resp);
        }
        reply(result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let envelope = request.into_inner();
        let mut req: InstallSnapshotRequest<TypeConfig> =
            codec::decode(&envelope.payload, RAFT_MAX_MESSAGE_BYTES).map_err(bad_request)?;
        req.data = envelope.data;
        let leader_vote = req.vote;
        let result = self.raft.install_snapshot(req).await;
        if matches!(&result, Ok(resp) if resp.vote == leader_vote) {
            self.campaign.heard_from_leader();
        }
        reply(result)
    }

    async fn probe(&self, _request: Request<ProbeRequest>) -> Result<Response<ProbeReply>, Status> {
        let m = self.raft.metrics().borrow().clone();
        Ok(Response::new(ProbeReply {
            node_id: m.id,
            voters: m.membership_config.membership().voter_ids().collect(),
        }))
    }
}
