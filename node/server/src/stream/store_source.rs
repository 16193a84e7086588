//! The stream's view of the node's replicated state machine.

use super::source::{
    ChangeError, ChangeReceiver, DeltaRecord, Head, SourceChange, SourceError, StreamSource,
};
use flagraft_client::digest::RulesetDigest;
use flagraft_client::protocol::{encode_snapshot_parts, SnapshotReason};
use flagraft_store::{AppliedChange, NodeId, ProjectHead, StateMachineStore, VersionRecord};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// A node's state machine as a [`StreamSource`]; it serves its own applied state.
#[derive(Clone)]
pub struct StoreSource {
    sm: StateMachineStore,
    node_id: NodeId,
}

impl StoreSource {
    pub fn new(sm: StateMachineStore, node_id: NodeId) -> Self {
        StoreSource { sm, node_id }
    }
}

fn head_of(h: &ProjectHead) -> Head {
    Head {
        version: h.version,
        digest: h.digest,
        commit_time_ms: h.commit_time_ms,
    }
}

fn delta_of(r: &VersionRecord) -> DeltaRecord {
    DeltaRecord {
        version: r.version,
        commit_time_ms: r.commit_time_ms,
        upserts: r.upserts.clone(),
        deletes: r.deletes.clone(),
        digest: r.digest,
    }
}

fn store_err(e: flagraft_store::StoreError) -> SourceError {
    SourceError(e.to_string())
}

pub struct StoreChanges(broadcast::Receiver<Arc<AppliedChange>>);

impl ChangeReceiver for StoreChanges {
    async fn recv(&mut self) -> Result<SourceChange, ChangeError> {
        match self.0.recv().await {
            Ok(change) => Ok(match &*change {
                AppliedChange::Version { project, record } => SourceChange::Version {
                    project: project.clone(),
                    record: Arc::new(delta_of(record)),
                },
                AppliedChange::ProjectDeleted { project } => SourceChange::ProjectDeleted {
                    project: project.clone(),
                },
                AppliedChange::SnapshotInstalled { .. } => SourceChange::Resync,
                AppliedChange::ProjectCreated { .. } | AppliedChange::KeysChanged => {
                    SourceChange::Other
                }
            }),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(ChangeError::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(ChangeError::Closed),
        }
    }
}

impl StreamSource for StoreSource {
    type Changes = StoreChanges;

    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn head(&self, project: &str) -> Option<Head> {
        self.sm.head(project).map(|h| head_of(&h))
    }

    fn encode_snapshot(
        &self,
        project: &str,
        reason: SnapshotReason,
        part_bytes: usize,
    ) -> Result<Option<(Head, Vec<String>)>, SourceError> {
        let Some(rs) = self.sm.ruleset(project) else {
            return Ok(None);
        };
        let head = head_of(&rs.head);
        let text = encode_snapshot_parts(
            head.version,
            &head.digest,
            head.commit_time_ms,
            reason,
            rs.entities.iter().map(|(k, v)| (k, v.as_str())),
            part_bytes,
        )
        .map_err(|e| SourceError(e.to_string()))?;
        Ok(Some((head, text)))
    }

    fn history(
        &self,
        project: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Arc<DeltaRecord>>, SourceError> {
        let records = self.sm.history(project, from, limit).map_err(store_err)?;
        Ok(records.iter().map(|r| Arc::new(delta_of(r))).collect())
    }

    fn oldest_retained(&self, project: &str) -> Option<u64> {
        self.sm.oldest_retained(project)
    }

    fn digest_at(&self, project: &str, version: u64) -> Result<Option<RulesetDigest>, SourceError> {
        Ok(self
            .sm
            .version_digest(project, version)
            .map_err(store_err)?
            .map(|(digest, _)| digest))
    }

    fn changes(&self) -> StoreChanges {
        StoreChanges(self.sm.subscribe())
    }

    fn applied_watch(&self) -> watch::Receiver<u64> {
        self.sm.applied_watch()
    }
}
