//! An in-memory StreamSource for tests: commits, compaction, deletion and a
//! lossy change feed, without Raft or sled.

use super::source::{
    ChangeError, ChangeReceiver, DeltaRecord, Head, SourceChange, SourceError, StreamSource,
};
use flagraft_client::digest::{entity_key_hash, RulesetDigest};
use flagraft_client::entity::{Entity, EntityKey};
use flagraft_client::protocol::{encode_snapshot_parts, SnapshotReason};
use flagraft_store::Upsert;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

#[derive(Default)]
struct Project {
    version: u64,
    digest: RulesetDigest,
    commit_time_ms: u64,
    entities: BTreeMap<EntityKey, serde_json::Value>,
    history: BTreeMap<u64, Arc<DeltaRecord>>,
}

#[derive(Clone)]
pub(crate) struct MemorySource {
    node_id: u64,
    projects: Arc<Mutex<HashMap<String, Project>>>,
    feed: broadcast::Sender<SourceChange>,
    applied: Arc<watch::Sender<u64>>,
}

impl MemorySource {
    pub fn new(node_id: u64, feed_capacity: usize) -> Self {
        let src = MemorySource {
            node_id,
            projects: Arc::default(),
            feed: broadcast::channel(feed_capacity).0,
            applied: Arc::new(watch::channel(0).0),
        };
        src.create("default");
        src
    }

    pub fn create(&self, project: &str) {
        self.lock().insert(project.to_string(), Project::default());
    }

    pub fn delete(&self, project: &str) {
        self.lock().remove(project);
        self.publish(SourceChange::ProjectDeleted {
            project: project.to_string(),
        });
    }

    /// Apply one version; returns it.
    pub fn commit(&self, project: &str, upserts: Vec<Entity>, deletes: Vec<EntityKey>) -> u64 {
        let record = self.apply(project, upserts, deletes);
        let version = record.version;
        self.publish(SourceChange::Version {
            project: project.to_string(),
            record,
        });
        version
    }

    /// Apply one version without publishing it (a change the feed lost).
    pub fn commit_unpublished(&self, project: &str, upserts: Vec<Entity>) -> u64 {
        self.apply(project, upserts, Vec::new()).version
    }

    fn apply(
        &self,
        project: &str,
        upserts: Vec<Entity>,
        deletes: Vec<EntityKey>,
    ) -> Arc<DeltaRecord> {
        {
            let mut projects = self.lock();
            let p = projects.get_mut(project).expect("test project exists");
            for key in &deletes {
                if let Some(old) = p.entities.remove(key) {
                    p.digest.remove(&entity_key_hash(key, &old));
                }
            }
            for e in &upserts {
                if let Some(old) = p.entities.insert(e.key.clone(), e.body.clone()) {
                    p.digest.remove(&entity_key_hash(&e.key, &old));
                }
                p.digest.add(&entity_key_hash(&e.key, &e.body));
            }
            p.version += 1;
            p.commit_time_ms += 1;
            let record = Arc::new(DeltaRecord {
                version: p.version,
                commit_time_ms: p.commit_time_ms,
                upserts: upserts.iter().map(Upsert::from).collect(),
                deletes,
                digest: p.digest,
            });
            p.history.insert(p.version, Arc::clone(&record));
            record
        }
    }

    /// Drop the deltas below `keep_from`.
    pub fn compact(&self, project: &str, keep_from: u64) {
        if let Some(p) = self.lock().get_mut(project) {
            p.history = p.history.split_off(&keep_from);
        }
    }

    /// Publish an arbitrary change (for Resync tests).
    pub fn publish(&self, change: SourceChange) {
        let _ = self.feed.send(change);
        self.applied.send_modify(|n| *n += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Project>> {
        self.projects.lock().expect("test lock")
    }
}

pub(crate) struct MemoryChanges(broadcast::Receiver<SourceChange>);

impl ChangeReceiver for MemoryChanges {
    async fn recv(&mut self) -> Result<SourceChange, ChangeError> {
        match self.0.recv().await {
            Ok(c) => Ok(c),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(ChangeError::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(ChangeError::Closed),
        }
    }
}

impl StreamSource for MemorySource {
    type Changes = MemoryChanges;

    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn head(&self, project: &str) -> Option<Head> {
        self.lock().get(project).map(|p| Head {
            version: p.version,
            digest: p.digest,
            commit_time_ms: p.commit_time_ms,
        })
    }

    fn encode_snapshot(
        &self,
        project: &str,
        reason: SnapshotReason,
        part_bytes: usize,
    ) -> Result<Option<(Head, Vec<String>)>, SourceError> {
        let projects = self.lock();
        let Some(p) = projects.get(project) else {
            return Ok(None);
        };
        let text = encode_snapshot_parts(
            p.version,
            &p.digest,
            p.commit_time_ms,
            reason,
            p.entities.iter(),
            part_bytes,
        )
        .map_err(|e| SourceError(e.to_string()))?;
        let head = Head {
            version: p.version,
            digest: p.digest,
            commit_time_ms: p.commit_time_ms,
        };
        Ok(Some((head, text)))
    }

    fn history(
        &self,
        project: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Arc<DeltaRecord>>, SourceError> {
        Ok(self
            .lock()
            .get(project)
            .map(|p| {
                p.history
                    .range(from..)
                    .take(limit)
                    .map(|(_, r)| Arc::clone(r))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn oldest_retained(&self, project: &str) -> Option<u64> {
        self.lock()
            .get(project)
            .and_then(|p| p.history.keys().next().copied())
    }

    fn digest_at(&self, project: &str, version: u64) -> Result<Option<RulesetDigest>, SourceError> {
        Ok(self
            .lock()
            .get(project)
            .and_then(|p| p.history.get(&version).map(|r| r.digest)))
    }

    fn changes(&self) -> MemoryChanges {
        MemoryChanges(self.feed.subscribe())
    }

    fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}
