//! The in-memory state machine: persistent maps shared with readers and snapshot builders.

use super::records::GroupSpan;
use crate::types::{ApiKey, EntityMap, LogId, NodeAddr, NodeId, ProjectHead};
use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::EntityKey;
use openraft::StoredMembership;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The name of the project that exists from the start.
pub const DEFAULT_PROJECT: &str = "default";

/// Remembered for idempotency: what a request id's commit returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEntry {
    pub version: u64,
    pub digest: RulesetDigest,
    pub commit_time_ms: u64,
}

/// The stored head of a project (`n<name>` in the state machine tree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectMeta {
    /// Unique per creation of a project name: all other keys of the project are scoped by it,
    /// so a deleted and re-created project never sees the old one's keys.
    pub incarnation: u64,
    pub version: u64,
    pub digest: RulesetDigest,
    pub commit_time_ms: u64,
    /// Lowest version whose record is still kept (`version + 1` when none is).
    pub oldest_retained: u64,
}

/// A remembered request id. Shared, not owned: every apply copies the map nodes it changes
/// (the published view keeps the old ones), and with random ids each commit changes another
/// node of ~50 ids; cloning an `Arc` there costs no allocation, a `String` one each.
pub type RequestId = Arc<str>;

/// One project in memory. Cloning is O(1): every map is structurally shared.
#[derive(Clone, Debug)]
pub struct ProjectState {
    pub meta: ProjectMeta,
    pub entities: EntityMap,
    pub hashes: imbl::OrdMap<EntityKey, [u8; 32]>,
    /// request id -> what its commit returned, for the last `REQUEST_ID_WINDOW` versions.
    pub requests: imbl::OrdMap<RequestId, RequestEntry>,
    /// version -> request id of that version's commit, to expire `requests` by version.
    pub request_versions: imbl::OrdMap<u64, RequestId>,
    /// Entities whose latest upsert is in a retained record, with its version: their own key
    /// holds an older body or none (see `apply::compact_history`).
    pub body_in_record: imbl::OrdMap<EntityKey, u64>,
    /// Retained version -> the entities it upserted, so that compacting its record finds the
    /// entities whose latest body it holds.
    pub upserted_at: imbl::OrdMap<u64, Arc<[EntityKey]>>,
    /// Retained versions whose record is stored in chunks, with the chunk count (see
    /// `values`): compaction removes them without reading the head first.
    pub chunked_records: imbl::OrdMap<u64, u32>,
    /// The stored groups of record stubs (see `records`), by first version.
    pub stub_groups: imbl::OrdMap<u64, GroupSpan>,
}

impl ProjectState {
    pub fn new(meta: ProjectMeta) -> Self {
        ProjectState {
            meta,
            entities: EntityMap::new(),
            hashes: imbl::OrdMap::new(),
            requests: imbl::OrdMap::new(),
            request_versions: imbl::OrdMap::new(),
            body_in_record: imbl::OrdMap::new(),
            upserted_at: imbl::OrdMap::new(),
            chunked_records: imbl::OrdMap::new(),
            stub_groups: imbl::OrdMap::new(),
        }
    }

    pub fn head(&self, name: &str) -> ProjectHead {
        ProjectHead {
            name: name.to_string(),
            version: self.meta.version,
            digest: self.meta.digest,
            commit_time_ms: self.meta.commit_time_ms,
            entity_count: self.entities.len(),
        }
    }

    /// The digest recomputed from the stored per-entity hashes.
    /// The key (first version) of the stored value that holds `version`: its group's, or its own.
    pub fn record_key_version(&self, version: u64) -> u64 {
        match self.stub_groups.range(..=version).next_back() {
            Some((first, span)) if version <= span.last => *first,
            _ => version,
        }
    }

    pub fn digest_from_hashes(&self) -> RulesetDigest {
        RulesetDigest::from_hashes(self.hashes.values())
    }
}

/// Everything the state machine holds, swapped atomically after each apply.
#[derive(Clone, Debug, Default)]
pub struct SmView {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, NodeAddr>,
    pub projects: imbl::OrdMap<String, Arc<ProjectState>>,
    /// API keys by id, revoked ones included.
    pub keys: imbl::OrdMap<String, Arc<ApiKey>>,
}

impl SmView {
    /// The oldest log entry a retained record's stub names: the log must keep it.
    pub fn pinned_log_index(&self) -> Option<u64> {
        self.projects
            .values()
            .filter_map(|p| p.stub_groups.values().next().map(|g| g.log_index))
            .min()
    }

    pub fn fresh() -> Self {
        let mut view = SmView::default();
        view.projects.insert(
            DEFAULT_PROJECT.to_string(),
            Arc::new(ProjectState::new(ProjectMeta {
                incarnation: 0,
                version: 0,
                digest: RulesetDigest::EMPTY,
                commit_time_ms: 0,
                oldest_retained: 1,
            })),
        );
        view
    }
}
