//! Projects and API keys.

use super::{now_ms, outcome_error, AdminService};
use crate::auth;
use crate::validate::project_name;
use flagraft_proto::admin::v1 as pb;
use flagraft_store::{
    ApiKey, ApiKeyKind, Command, CommandOutcome, CreateKeyCommand, ProjectHead,
    MAX_KEY_DESCRIPTION_BYTES,
};
use tonic::Status;

fn project_info(h: ProjectHead) -> pb::ProjectInfo {
    pb::ProjectInfo {
        name: h.name,
        version: h.version,
        digest: h.digest.to_hex(),
        commit_time_ms: h.commit_time_ms,
        entity_count: h.entity_count as u64,
    }
}

fn kind_to_pb(kind: ApiKeyKind) -> pb::KeyKind {
    match kind {
        ApiKeyKind::Server => pb::KeyKind::Server,
        ApiKeyKind::Client => pb::KeyKind::Client,
        ApiKeyKind::Admin => pb::KeyKind::Admin,
    }
}

fn key_info(k: &ApiKey) -> pb::KeyInfo {
    pb::KeyInfo {
        id: k.id.clone(),
        project: k.project.clone(),
        kind: kind_to_pb(k.kind) as i32,
        description: k.description.clone(),
        created_ms: k.created_ms,
        revoked_ms: k.revoked_ms,
    }
}

fn unexpected(outcome: CommandOutcome) -> Status {
    outcome_error(outcome, None)
}

impl AdminService {
    pub(super) async fn create_project_local(
        &self,
        req: pb::CreateProjectRequest,
    ) -> Result<pb::ProjectInfo, Status> {
        project_name(&req.name).map_err(|e| Status::invalid_argument(e.0))?;
        if req.name.len() > flagraft_store::MAX_PROJECT_NAME_BYTES {
            return Err(Status::invalid_argument(format!(
                "a project name must have at most {} bytes",
                flagraft_store::MAX_PROJECT_NAME_BYTES
            )));
        }
        let outcome = self
            .propose(Command::CreateProject {
                name: req.name.clone(),
                time_ms: now_ms(),
            })
            .await?;
        match outcome {
            CommandOutcome::ProjectCreated { project } => self
                .node
                .sm
                .head(&project)
                .map(project_info)
                .ok_or_else(|| Status::internal("project vanished right after its creation")),
            other => Err(unexpected(other)),
        }
    }

    pub(super) fn list_projects_here(&self) -> pb::ListProjectsResponse {
        let mut projects: Vec<pb::ProjectInfo> = self
            .node
            .sm
            .projects()
            .into_iter()
            .map(project_info)
            .collect();
        projects.sort_by(|a, b| a.name.cmp(&b.name));
        pb::ListProjectsResponse { projects }
    }

    pub(super) async fn delete_project_local(
        &self,
        req: pb::DeleteProjectRequest,
    ) -> Result<pb::DeleteProjectResponse, Status> {
        project_name(&req.name).map_err(|e| Status::invalid_argument(e.0))?;
        let outcome = self
            .propose(Command::DeleteProject {
                name: req.name,
                time_ms: now_ms(),
            })
            .await?;
        match outcome {
            CommandOutcome::ProjectDeleted { .. } => Ok(pb::DeleteProjectResponse {}),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn create_key_local(
        &self,
        req: pb::CreateKeyRequest,
    ) -> Result<pb::CreateKeyResponse, Status> {
        let kind = match pb::KeyKind::try_from(req.kind) {
            Ok(pb::KeyKind::Server) => ApiKeyKind::Server,
            Ok(pb::KeyKind::Client) => ApiKeyKind::Client,
            Ok(pb::KeyKind::Admin) => ApiKeyKind::Admin,
            _ => {
                return Err(Status::invalid_argument(
                    "kind must be server, client or admin",
                ))
            }
        };
        match kind {
            ApiKeyKind::Admin if !req.project.is_empty() => {
                return Err(Status::invalid_argument(
                    "admin keys are cluster-wide: give no project",
                ))
            }
            ApiKeyKind::Admin => {}
            _ => project_name(&req.project).map_err(|e| Status::invalid_argument(e.0))?,
        }
        if req.description.len() > MAX_KEY_DESCRIPTION_BYTES {
            return Err(Status::invalid_argument(format!(
                "description exceeds {MAX_KEY_DESCRIPTION_BYTES} bytes"
            )));
        }
        let new = auth::generate(kind);
        let cmd = CreateKeyCommand {
            id: new.id.clone(),
            project: req.project,
            kind,
            sha256: new.sha256,
            description: req.description,
            time_ms: now_ms(),
        };
        let outcome = self.propose(Command::CreateKey(cmd)).await?;
        match outcome {
            CommandOutcome::KeyCreated { id } => {
                let key = self
                    .node
                    .sm
                    .api_key(&id)
                    .ok_or_else(|| Status::internal("key vanished right after its creation"))?;
                Ok(pb::CreateKeyResponse {
                    key: Some(key_info(&key)),
                    secret: new.secret,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    pub(super) fn list_keys_here(
        &self,
        req: pb::ListKeysRequest,
    ) -> Result<pb::ListKeysResponse, Status> {
        if !req.project.is_empty() {
            project_name(&req.project).map_err(|e| Status::invalid_argument(e.0))?;
        }
        let mut keys: Vec<pb::KeyInfo> = self
            .node
            .sm
            .api_keys()
            .iter()
            .filter(|k| req.include_revoked || k.revoked_ms.is_none())
            .filter(|k| {
                req.project.is_empty() || k.project == req.project || k.kind == ApiKeyKind::Admin
            })
            .map(|k| key_info(k))
            .collect();
        keys.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(pb::ListKeysResponse { keys })
    }

    pub(super) async fn revoke_key_local(
        &self,
        req: pb::RevokeKeyRequest,
    ) -> Result<pb::KeyInfo, Status> {
        if req.id.is_empty() || req.id.len() > flagraft_store::MAX_KEY_ID_BYTES {
            return Err(Status::invalid_argument("a key id is required"));
        }
        let outcome = self
            .propose(Command::RevokeKey {
                id: req.id,
                time_ms: now_ms(),
            })
            .await?;
        match outcome {
            CommandOutcome::KeyRevoked { id, .. } => self
                .node
                .sm
                .api_key(&id)
                .map(|k| key_info(&k))
                .ok_or_else(|| Status::internal("revoked key vanished")),
            other => Err(unexpected(other)),
        }
    }
}
