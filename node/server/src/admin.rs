//! The `flagraft.admin.v1.Admin` gRPC service.
//!
//! Every call is authenticated first (`auth::AdminInterceptor`). Writes run on
//! the leader: a follower forwards them with the caller's credentials (see
//! `forward`). Reads run locally, after waiting for `min_version` when given;
//! linearizable reads confirm leadership with a quorum first and wait until the
//! leader has applied everything committed (`NodeState::linearizable_barrier`).
//!
//! Submodules: `write` (commit and rollback: validation, pinning, retries),
//! `read` (rulesets, entities, history, diff), `keys` (projects and API
//! keys), `members` (cluster status collected from every member).

mod batch;
mod keys;
mod members;
mod read;
mod write;

use crate::forward::is_forwarded;
use crate::limits::MAX_LEADER_WAIT;
use crate::state::{role_name, Shared};
use flagraft_proto::admin::v1 as pb;
use flagraft_proto::admin::v1::admin_client::AdminClient;
use flagraft_proto::admin::v1::admin_server::Admin;
use flagraft_store::{Command, CommandOutcome, NodeAddr, NodeId, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub struct AdminService {
    node: Shared,
    batcher: batch::CommitBatcher,
}

impl AdminService {
    /// Must be called inside a tokio runtime: it starts the group-commit task.
    pub fn new(node: Shared) -> Self {
        let batcher = batch::CommitBatcher::spawn(node.clone());
        AdminService { node, batcher }
    }
}

/// Where a leader-only call runs.
enum Route {
    Local,
    Leader(AdminClient<Channel>),
}

/// Runs a leader-only call here, or relays it (with the caller's metadata)
/// to the leader and returns its answer.
macro_rules! on_leader {
    ($self:ident, $request:ident, $method:ident, |$req:ident| $local:expr) => {{
        let forwarded = is_forwarded(&$request);
        let (meta, _, $req) = $request.into_parts();
        match $self.route(forwarded).await? {
            Route::Leader(mut leader) => {
                leader
                    .$method($self.node.forwarder.relay(&meta, $req))
                    .await
            }
            Route::Local => $local.await.map(Response::new),
        }
    }};
}

impl AdminService {
    /// Runs here if this node leads, else at the leader (one hop at most),
    /// waiting a bounded time for a leader to be known.
    async fn route(&self, already_forwarded: bool) -> Result<Route, Status> {
        let leader = match self.node.leader() {
            Some(l) => l,
            None => self
                .node
                .wait_for_leader(MAX_LEADER_WAIT)
                .await
                .ok_or_else(|| Status::unavailable("no leader known; retry"))?,
        };
        if leader.0 == self.node.id {
            return Ok(Route::Local);
        }
        if already_forwarded {
            return Err(Status::unavailable(format!(
                "node {} is not the leader (node {} is); retry",
                self.node.id, leader.0
            )));
        }
        Ok(Route::Leader(self.node.forwarder.client(&leader.1.admin)?))
    }

    /// Proposes one command on this node (the leader) and returns its outcome
    /// once applied here.
    async fn propose(&self, cmd: Command) -> Result<CommandOutcome, Status> {
        self.node
            .raft
            .client_write(cmd)
            .await
            .map(|resp| resp.data)
            .map_err(write_error)
    }

    fn membership_response(resp: ClientWriteResponse<TypeConfig>) -> pb::MembershipResponse {
        let (voters, learners) = match &resp.membership {
            Some(m) => (m.voter_ids().collect(), m.learner_ids().collect()),
            None => (Vec::new(), Vec::new()),
        };
        pb::MembershipResponse {
            log_index: resp.log_id.index,
            voters,
            learners,
        }
    }

    fn local_status(&self) -> pb::ClusterStatus {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        pb::ClusterStatus {
            node_id: self.node.id,
            cluster: self.node.cluster.clone(),
            role: role_name(m.state).to_string(),
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map_or(0, |l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, n)| pb::NodeAddress {
                    node_id: *id,
                    raft_addr: n.raft.clone(),
                    admin_addr: n.admin.clone(),
                    http_addr: n.http.clone(),
                })
                .collect(),
            members: Vec::new(),
        }
    }

    async fn add_learner_local(
        &self,
        req: pb::AddLearnerRequest,
    ) -> Result<pb::MembershipResponse, Status> {
        let node = req
            .node
            .ok_or_else(|| Status::invalid_argument("node is required"))?;
        let addr = NodeAddr {
            raft: node.raft_addr,
            admin: node.admin_addr,
            http: node.http_addr,
        };
        let resp = self
            .node
            .raft
            .add_learner(node.node_id, addr, req.blocking)
            .await
            .map_err(write_error)?;
        Ok(Self::membership_response(resp))
    }

    async fn change_membership_local(
        &self,
        req: pb::ChangeMembershipRequest,
    ) -> Result<pb::MembershipResponse, Status> {
        let voters: BTreeSet<NodeId> = req.voters.iter().copied().collect();
        let resp = self
            .node
            .raft
            .change_membership(voters, req.retain)
            .await
            .map_err(write_error)?;
        Ok(Self::membership_response(resp))
    }

    async fn remove_node_local(
        &self,
        req: pb::RemoveNodeRequest,
    ) -> Result<pb::MembershipResponse, Status> {
        let id = req.node_id;
        let is_voter = {
            let m = self.node.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            if membership.get_node(&id).is_none() {
                return Err(Status::not_found(format!("node {id} is not a member")));
            }
            membership.voter_ids().any(|v| v == id)
        };
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let resp = self
            .node
            .raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        Ok(Self::membership_response(resp))
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A refused command as a gRPC status (see the .proto for the codes).
/// `expected`: the version the commit expected, for the conflict message.
fn outcome_error(outcome: CommandOutcome, expected: Option<u64>) -> Status {
    match outcome {
        CommandOutcome::Conflict {
            project,
            current_version,
        } => conflict(&project, current_version, expected),
        CommandOutcome::UnknownProject { project } => {
            Status::not_found(format!("no project '{project}'"))
        }
        CommandOutcome::UnknownKey { id } => Status::not_found(format!("no key '{id}'")),
        CommandOutcome::ProjectExists { project } => {
            Status::already_exists(format!("project '{project}' already exists"))
        }
        CommandOutcome::Rejected { reason } => Status::failed_precondition(reason),
        other => Status::internal(format!("unexpected outcome {other:?}")),
    }
}

/// FAILED_PRECONDITION "conflict: ..." naming the current version, which is
/// also in the metadata `flagraft-current-version`.
fn conflict(project: &str, current: u64, expected: Option<u64>) -> Status {
    let mut meta = tonic::metadata::MetadataMap::new();
    if let Ok(v) = current.to_string().parse() {
        meta.insert("flagraft-current-version", v);
    }
    let expected = expected.map_or(String::new(), |e| format!(", expected {e}"));
    Status::with_metadata(
        tonic::Code::FailedPrecondition,
        format!("conflict: project '{project}' is at version {current}{expected}"),
        meta,
    )
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Status::unavailable(format!(
            "leadership moved (leader: {:?}); retry",
            f.leader_id
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Status::failed_precondition(c.to_string())
        }
        RaftError::Fatal(f) => Status::unavailable(format!("raft stopped: {f}")),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let (meta, _, req) = request.into_parts();
        match self.route(forwarded).await? {
            Route::Leader(mut leader) => {
                self.node
                    .metrics
                    .commits_forwarded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                leader.commit(self.node.forwarder.relay(&meta, req)).await
            }
            Route::Local => self.commit_local(req).await.map(Response::new),
        }
    }

    async fn get_ruleset(
        &self,
        request: Request<pb::GetRulesetRequest>,
    ) -> Result<Response<pb::GetRulesetResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let (meta, _, req) = request.into_parts();
        if req.consistency == pb::ReadConsistency::Linearizable as i32 {
            match self.route(forwarded).await? {
                Route::Leader(mut leader) => {
                    return leader
                        .get_ruleset(self.node.forwarder.relay(&meta, req))
                        .await
                }
                Route::Local => self.node.linearizable_barrier().await?,
            }
        }
        self.get_ruleset_here(req).await.map(Response::new)
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        self.list_history_here(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_entity(
        &self,
        request: Request<pb::GetEntityRequest>,
    ) -> Result<Response<pb::GetEntityResponse>, Status> {
        self.get_entity_here(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn diff(
        &self,
        request: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        self.diff_here(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        on_leader!(self, request, rollback, |req| self.rollback_local(req))
    }

    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::ProjectInfo>, Status> {
        on_leader!(self, request, create_project, |req| self
            .create_project_local(req))
    }

    async fn list_projects(
        &self,
        _request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        Ok(Response::new(self.list_projects_here()))
    }

    async fn delete_project(
        &self,
        request: Request<pb::DeleteProjectRequest>,
    ) -> Result<Response<pb::DeleteProjectResponse>, Status> {
        on_leader!(self, request, delete_project, |req| self
            .delete_project_local(req))
    }

    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        on_leader!(self, request, create_key, |req| self.create_key_local(req))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.list_keys_here(request.into_inner()).map(Response::new)
    }

    async fn revoke_key(
        &self,
        request: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        on_leader!(self, request, revoke_key, |req| self.revoke_key_local(req))
    }

    async fn get_cluster_status(
        &self,
        _request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        Ok(Response::new(self.local_status()))
    }

    async fn get_cluster_members(
        &self,
        _request: Request<pb::GetClusterMembersRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let mut status = self.local_status();
        status.members = members::collect(&status).await;
        Ok(Response::new(status))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let node = request
            .get_ref()
            .node
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("node is required"))?;
        if node.raft_addr.is_empty() || node.admin_addr.is_empty() || node.http_addr.is_empty() {
            return Err(Status::invalid_argument(
                "node needs raft, admin and http addresses",
            ));
        }
        on_leader!(self, request, add_learner, |req| self
            .add_learner_local(req))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        if request.get_ref().voters.is_empty() {
            return Err(Status::invalid_argument("voters must not be empty"));
        }
        on_leader!(self, request, change_membership, |req| self
            .change_membership_local(req))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        on_leader!(self, request, remove_node, |req| self
            .remove_node_local(req))
    }

    async fn transfer_leader(
        &self,
        _request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        Err(Status::unimplemented(
            "leader transfer is not available: openraft 0.9.25 has no transfer API \
             (Raft::trigger offers elect, heartbeat, snapshot and purge_log only); \
             to move leadership, remove the leader from the voters and add it back",
        ))
    }
}
