//! Reads served by any node from its own state: rulesets (current or past),
//! single entities, history pages and diffs.

use super::AdminService;
use crate::history::{self, VersionView};
use crate::limits::{MAX_HISTORY_PAGE, MAX_NAME_BYTES, MAX_READ_WAIT};
use crate::reads::head_at_least;
use crate::validate::{self, project_name};
use flagraft_client::dcs::Dialect;
use flagraft_client::entity::{EntityKey, EntityKind};
use flagraft_proto::admin::v1 as pb;
use flagraft_store::{ProjectHead, RulesetSnapshot, StateMachineStore};
use tonic::Status;

fn parse_dialect(d: i32) -> Result<Dialect, Status> {
    match pb::Dialect::try_from(d) {
        Ok(pb::Dialect::Unspecified | pb::Dialect::V1) => Ok(Dialect::V1),
        Ok(pb::Dialect::V2) => Ok(Dialect::V2),
        Err(_) => Err(Status::invalid_argument(format!("unknown dialect {d}"))),
    }
}

fn bad_project(e: validate::Invalid) -> Status {
    Status::invalid_argument(e.0)
}

/// The view of `project` at `version` (current when None), rebuilt on a
/// blocking thread (it may read many history records).
async fn view_at(
    sm: &StateMachineStore,
    project: &str,
    version: Option<u64>,
) -> Result<VersionView, Status> {
    let sm = sm.clone();
    let project = project.to_string();
    tokio::task::spawn_blocking(move || match version {
        None => history::current(&sm, &project),
        Some(v) => history::rebuild(&sm, &project, v).map(|r| r.view),
    })
    .await
    .map_err(|e| Status::internal(format!("history task failed: {e}")))?
    .map_err(Status::from)
}

fn entity_key(kind: &str, name: &str) -> Result<EntityKey, Status> {
    let kind = EntityKind::parse(kind).ok_or_else(|| {
        Status::invalid_argument(format!(
            "unknown entity kind '{}' (gate, config, layer, id_list, setting)",
            kind.chars().take(40).collect::<String>()
        ))
    })?;
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "{kind} name must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(EntityKey::new(kind, name))
}

fn change_kind(from: bool, to: bool) -> pb::ChangeKind {
    match (from, to) {
        (false, true) => pb::ChangeKind::Added,
        (true, false) => pb::ChangeKind::Removed,
        _ => pb::ChangeKind::Modified,
    }
}

impl AdminService {
    pub(super) async fn get_ruleset_here(
        &self,
        req: pb::GetRulesetRequest,
    ) -> Result<pb::GetRulesetResponse, Status> {
        project_name(&req.project).map_err(bad_project)?;
        let dialect = parse_dialect(req.dialect)?;
        head_at_least(&self.node, &req.project, req.min_version, MAX_READ_WAIT).await?;
        let view = view_at(&self.node.sm, &req.project, req.version).await?;
        let snapshot = RulesetSnapshot {
            head: ProjectHead {
                name: req.project.clone(),
                version: view.version,
                digest: view.digest,
                commit_time_ms: view.commit_time_ms,
                entity_count: view.entities.len(),
            },
            entities: view.entities,
        };
        let dcs_json = crate::dcs::ruleset_json(&snapshot, dialect)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(pb::GetRulesetResponse {
            dcs_json,
            version: snapshot.head.version,
            digest: snapshot.head.digest.to_hex(),
            commit_time_ms: snapshot.head.commit_time_ms,
            entity_count: snapshot.head.entity_count as u64,
        })
    }

    pub(super) async fn get_entity_here(
        &self,
        req: pb::GetEntityRequest,
    ) -> Result<pb::GetEntityResponse, Status> {
        project_name(&req.project).map_err(bad_project)?;
        let key = entity_key(&req.kind, &req.name)?;
        head_at_least(&self.node, &req.project, req.min_version, MAX_READ_WAIT).await?;
        let view = view_at(&self.node.sm, &req.project, req.version).await?;
        let body = view.entities.get(&key).ok_or_else(|| {
            Status::not_found(format!(
                "{key} does not exist in project '{}' at version {}",
                req.project, view.version
            ))
        })?;
        Ok(pb::GetEntityResponse {
            entity: Some(validate::entity_to_pb(&key, body)),
            version: view.version,
        })
    }

    pub(super) async fn list_history_here(
        &self,
        req: pb::ListHistoryRequest,
    ) -> Result<pb::ListHistoryResponse, Status> {
        project_name(&req.project).map_err(bad_project)?;
        let head = head_at_least(&self.node, &req.project, req.min_version, MAX_READ_WAIT).await?;
        let limit = (req.limit as usize).clamp(1, MAX_HISTORY_PAGE);
        let records = self
            .node
            .sm
            .history(&req.project, req.from_version, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        let next_from_version = records
            .last()
            .map(|r| r.version + 1)
            .filter(|next| records.len() == limit && *next <= head.version);
        Ok(pb::ListHistoryResponse {
            records: records.iter().map(validate::record_to_pb).collect(),
            oldest_retained: self.node.sm.oldest_retained(&req.project).unwrap_or(0),
            current_version: head.version,
            next_from_version,
        })
    }

    pub(super) async fn diff_here(&self, req: pb::DiffRequest) -> Result<pb::DiffResponse, Status> {
        project_name(&req.project).map_err(bad_project)?;
        let sm = self.node.sm.clone();
        let project = req.project.clone();
        let diff = tokio::task::spawn_blocking(move || {
            history::diff(&sm, &project, req.from_version, req.to_version)
        })
        .await
        .map_err(|e| Status::internal(format!("history task failed: {e}")))??;
        Ok(pb::DiffResponse {
            from_version: diff.from.version,
            to_version: diff.to.version,
            from_digest: diff.from.digest.to_hex(),
            to_digest: diff.to.digest.to_hex(),
            changes: diff
                .changes
                .into_iter()
                .map(|c| pb::EntityChange {
                    kind: c.key.kind.as_str().to_string(),
                    name: c.key.name,
                    change: change_kind(c.from.is_some(), c.to.is_some()) as i32,
                    from_json: c.from.map(|b| b.as_str().to_string()).unwrap_or_default(),
                    to_json: c.to.map(|b| b.as_str().to_string()).unwrap_or_default(),
                })
                .collect(),
        })
    }
}
