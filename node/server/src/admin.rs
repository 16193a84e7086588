//! The `flagraft.admin.v1.Admin` gRPC service.
//!
//! Writes run on the leader: a follower forwards them (see `forward`). Reads
//! run locally, after waiting for `min_version` when given; linearizable reads
//! confirm leadership with a quorum first (`Raft::ensure_linearizable`).

use crate::dcs;
use crate::forward::is_forwarded;
use crate::limits::{MAX_HISTORY_PAGE, MAX_LEADER_WAIT, MAX_READ_WAIT};
use crate::reads::head_at_least;
use crate::state::{role_name, Shared};
use crate::validate::{self, project_name};
use flagraft_client::dcs::Dialect;
use flagraft_proto::admin::v1 as pb;
use flagraft_proto::admin::v1::admin_client::AdminClient;
use flagraft_proto::admin::v1::admin_server::Admin;
use flagraft_store::{Command, CommandOutcome, NodeAddr, NodeId, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub struct AdminService {
    node: Shared,
}

impl AdminService {
    pub fn new(node: Shared) -> Self {
        AdminService { node }
    }
}

/// Where a leader-only call runs.
enum Route {
    Local,
    Leader(AdminClient<Channel>),
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

    async fn commit_here(
        &self,
        mut cmd: flagraft_store::CommitCommand,
    ) -> Result<pb::CommitResponse, Status> {
        cmd.proposed_time_ms = now_ms();
        let started = Instant::now();
        let resp = self
            .node
            .raft
            .client_write(Command::Commit(cmd))
            .await
            .map_err(write_error)?;
        let m = &self.node.metrics;
        match resp.data {
            CommandOutcome::Committed {
                version,
                digest,
                commit_time_ms,
                duplicate,
                ..
            } => {
                m.commit_latency.observe(started.elapsed());
                m.commits_ok.fetch_add(1, Ordering::Relaxed);
                Ok(pb::CommitResponse {
                    version,
                    digest: digest.to_hex(),
                    commit_time_ms,
                    duplicate,
                })
            }
            other => {
                m.commits_refused.fetch_add(1, Ordering::Relaxed);
                Err(outcome_error(other))
            }
        }
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A refused commit as a gRPC status (see the .proto for the codes).
fn outcome_error(outcome: CommandOutcome) -> Status {
    match outcome {
        CommandOutcome::Conflict {
            project,
            current_version,
        } => {
            let mut meta = tonic::metadata::MetadataMap::new();
            if let Ok(v) = current_version.to_string().parse() {
                meta.insert("flagraft-current-version", v);
            }
            Status::with_metadata(
                tonic::Code::FailedPrecondition,
                format!(
                    "project '{project}' is at version {current_version}, not the expected one"
                ),
                meta,
            )
        }
        CommandOutcome::UnknownProject { project } => {
            Status::not_found(format!("no project '{project}'"))
        }
        CommandOutcome::Rejected { reason } => Status::failed_precondition(reason),
        other => Status::internal(format!("unexpected outcome {other:?}")),
    }
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

fn parse_dialect(d: i32) -> Result<Dialect, Status> {
    match pb::Dialect::try_from(d) {
        Ok(pb::Dialect::Unspecified | pb::Dialect::V1) => Ok(Dialect::V1),
        Ok(pb::Dialect::V2) => Ok(Dialect::V2),
        Err(_) => Err(Status::invalid_argument(format!("unknown dialect {d}"))),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let was_forwarded = is_forwarded(&request);
        let req = request.into_inner();
        match self.route(was_forwarded).await? {
            Route::Leader(mut leader) => {
                self.node
                    .metrics
                    .commits_forwarded
                    .fetch_add(1, Ordering::Relaxed);
                leader.commit(self.node.forwarder.request(req)).await
            }
            Route::Local => {
                let cmd =
                    validate::commit_command(req).map_err(|e| Status::invalid_argument(e.0))?;
                self.commit_here(cmd).await.map(Response::new)
            }
        }
    }

    async fn get_ruleset(
        &self,
        request: Request<pb::GetRulesetRequest>,
    ) -> Result<Response<pb::GetRulesetResponse>, Status> {
        let was_forwarded = is_forwarded(&request);
        let req = request.into_inner();
        project_name(&req.project).map_err(|e| Status::invalid_argument(e.0))?;
        let dialect = parse_dialect(req.dialect)?;
        if req.consistency == pb::ReadConsistency::Linearizable as i32 {
            match self.route(was_forwarded).await? {
                Route::Leader(mut leader) => {
                    return leader.get_ruleset(self.node.forwarder.request(req)).await
                }
                Route::Local => {
                    self.node
                        .raft
                        .ensure_linearizable()
                        .await
                        .map_err(|e| Status::unavailable(format!("linearizable read: {e}")))?;
                }
            }
        }
        head_at_least(&self.node, &req.project, req.min_version, MAX_READ_WAIT).await?;
        let ruleset = self
            .node
            .sm
            .ruleset(&req.project)
            .ok_or_else(|| Status::not_found(format!("no project '{}'", req.project)))?;
        let dcs_json =
            dcs::ruleset_json(&ruleset, dialect).map_err(|e| Status::internal(e.to_string()))?;
        let head = &ruleset.head;
        Ok(Response::new(pb::GetRulesetResponse {
            dcs_json,
            version: head.version,
            digest: head.digest.to_hex(),
            commit_time_ms: head.commit_time_ms,
            entity_count: head.entity_count as u64,
        }))
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        let req = request.into_inner();
        project_name(&req.project).map_err(|e| Status::invalid_argument(e.0))?;
        let head = head_at_least(&self.node, &req.project, req.min_version, MAX_READ_WAIT).await?;
        let limit = (req.limit as usize).clamp(1, MAX_HISTORY_PAGE);
        let records = self
            .node
            .sm
            .history(&req.project, req.from_version, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListHistoryResponse {
            records: records.iter().map(validate::record_to_pb).collect(),
            oldest_retained: self.node.sm.oldest_retained(&req.project).unwrap_or(0),
            current_version: head.version,
        }))
    }

    async fn get_cluster_status(
        &self,
        _request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        Ok(Response::new(pb::ClusterStatus {
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
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let was_forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let node = req
            .node
            .clone()
            .ok_or_else(|| Status::invalid_argument("node is required"))?;
        if node.raft_addr.is_empty() || node.admin_addr.is_empty() || node.http_addr.is_empty() {
            return Err(Status::invalid_argument(
                "node needs raft, admin and http addresses",
            ));
        }
        match self.route(was_forwarded).await? {
            Route::Leader(mut leader) => leader.add_learner(self.node.forwarder.request(req)).await,
            Route::Local => {
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
                Ok(Response::new(Self::membership_response(resp)))
            }
        }
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let was_forwarded = is_forwarded(&request);
        let req = request.into_inner();
        if req.voters.is_empty() {
            return Err(Status::invalid_argument("voters must not be empty"));
        }
        match self.route(was_forwarded).await? {
            Route::Leader(mut leader) => {
                leader
                    .change_membership(self.node.forwarder.request(req))
                    .await
            }
            Route::Local => {
                let voters: BTreeSet<NodeId> = req.voters.iter().copied().collect();
                let resp = self
                    .node
                    .raft
                    .change_membership(voters, req.retain)
                    .await
                    .map_err(write_error)?;
                Ok(Response::new(Self::membership_response(resp)))
            }
        }
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let was_forwarded = is_forwarded(&request);
        let req = request.into_inner();
        match self.route(was_forwarded).await? {
            Route::Leader(mut leader) => leader.remove_node(self.node.forwarder.request(req)).await,
            Route::Local => {
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
                Ok(Response::new(Self::membership_response(resp)))
            }
        }
    }
}
