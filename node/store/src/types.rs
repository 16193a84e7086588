//! The types shared with the node: Raft type config, log commands, their outcomes and the
//! read models handed out by the state machine.

use crate::body::{Body, Upsert};
use crate::codec::CodecError;
use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::{Entity, EntityKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

pub type NodeId = u64;

/// Addresses of one member, "host:port" each. Carried in Raft membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub raft: String,
    pub admin: String,
    pub http: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "raft={} admin={} http={}",
            self.raft, self.admin, self.http
        )
    }
}

openraft::declare_raft_types!(
    /// flagraft's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandOutcome,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;

/// What goes through the Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Commit(CommitCommand),
    /// Several commits proposed together (the leader's group commit): applied in order, each as
    /// its own version with its own outcome, exactly as if proposed one after the other. One Raft
    /// entry for many commits: one append, one replication message, one flush.
    CommitBatch(Vec<CommitCommand>),
    CreateProject {
        name: String,
        time_ms: u64,
    },
    /// Also revokes every key of the project (at `time_ms`).
    DeleteProject {
        name: String,
        time_ms: u64,
    },
    /// Records an API key. The leader generates the id and the secret before proposing; only the
    /// secret's SHA-256 travels through the log.
    CreateKey(CreateKeyCommand),
    /// Marks a key revoked (kept for listing; it no longer authenticates).
    RevokeKey {
        id: String,
        time_ms: u64,
    },
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApiKeyKind {
    /// Reads a project's whole ruleset (update stream, polling).
    Server,
    /// Reads pre-evaluated values of a project (client initialize, client stream).
    Client,
    /// Calls the Admin API (cluster-wide: not limited to its project).
    Admin,
}

impl ApiKeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKeyKind::Server => "server",
            ApiKeyKind::Client => "client",
            ApiKeyKind::Admin => "admin",
        }
    }
}

/// Longest key id and description accepted by apply, in bytes.
pub const MAX_KEY_ID_BYTES: usize = 64;
pub const MAX_KEY_DESCRIPTION_BYTES: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKeyCommand {
    /// Unique, chosen by the leader (random).
    pub id: String,
    /// The project a server or client key reads; empty for admin keys.
    pub project: String,
    pub kind: ApiKeyKind,
    /// SHA-256 of the whole secret key string.
    pub sha256: [u8; 32],
    pub description: String,
    /// Leader wall clock at proposal.
    pub time_ms: u64,
}

/// A stored API key: metadata and the hash of its secret, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub project: String,
    pub kind: ApiKeyKind,
    pub sha256: [u8; 32],
    pub description: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

/// A batch of upserts and deletes applied atomically as one version of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitCommand {
    pub project: String,
    /// Bodies in canonical JSON text, canonicalised by the leader.
    pub upserts: Vec<Upsert>,
    pub deletes: Vec<EntityKey>,
    pub author: String,
    pub message: String,
    /// Conflict if the project's version differs.
    pub expected_version: Option<u64>,
    /// Idempotency: the same id again (within [`crate::REQUEST_ID_WINDOW`] versions) returns the
    /// first commit's version and commits nothing.
    pub request_id: Option<String>,
    /// Leader wall clock; the state machine uses max(previous commit time, this).
    pub proposed_time_ms: u64,
}

/// The result of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Committed {
        project: String,
        version: u64,
        digest: RulesetDigest,
        commit_time_ms: u64,
        duplicate: bool,
    },
    Conflict {
        project: String,
        current_version: u64,
    },
    UnknownProject {
        project: String,
    },
    ProjectCreated {
        project: String,
    },
    ProjectExists {
        project: String,
    },
    ProjectDeleted {
        project: String,
    },
    /// Deterministic refusal decided in apply (e.g. delete of an entity that does not exist).
    Rejected {
        reason: String,
    },
    /// For membership and blank entries.
    MembershipChanged,
    /// One outcome per commit of a [`Command::CommitBatch`], in its order.
    Batch(Vec<CommandOutcome>),
    KeyCreated {
        id: String,
    },
    /// Also the answer for a key that was already revoked (with its first revocation time).
    KeyRevoked {
        id: String,
        revoked_ms: u64,
    },
    UnknownKey {
        id: String,
    },
}

/// Tunables of one node's store. None of them influences the outcome of an apply, so nodes may
/// differ in them without diverging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Versions of deltas kept per project (at least this many, and at least 1; a group of
    /// record stubs applied together is dropped whole, so up to 31 more may be kept).
    pub history_limit: u64,
    /// Capacity of the applied-changes broadcast channel.
    pub broadcast_capacity: usize,
    /// sled page cache size. sled splits it into 256 LRU shards; one log leaf of group-commit
    /// entries (up to 17 entries of up to ~70 KiB) outgrows a shard of a 128 MiB cache and evicts
    /// the shard's history pages, which compaction then reads back from disk.
    pub cache_capacity_bytes: u64,
    /// Upper bound on the encoded size of one `limited_get_log_entries` answer (replication batch).
    pub max_log_read_bytes: usize,
    /// Upper bound on the number of entries in one `limited_get_log_entries` answer.
    pub max_log_read_entries: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_limit: 10_000,
            broadcast_capacity: 4096,
            cache_capacity_bytes: 512 * 1024 * 1024,
            max_log_read_bytes: 4 * 1024 * 1024,
            max_log_read_entries: 4096,
        }
    }
}

/// Who owns a data dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: NodeId,
    pub cluster: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} of cluster '{}'", self.node_id, self.cluster)
    }
}

/// A project's current version and digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectHead {
    pub name: String,
    pub version: u64,
    pub digest: RulesetDigest,
    pub commit_time_ms: u64,
    pub entity_count: usize,
}

/// A persistent (structurally shared) map: cloning it is O(1), so a reader's copy never blocks
/// apply and apply never copies the ruleset.
pub type EntityMap = imbl::OrdMap<EntityKey, Body>;

/// A consistent copy of a project's ruleset at `head.version`.
#[derive(Clone, Debug)]
pub struct RulesetSnapshot {
    pub head: ProjectHead,
    pub entities: EntityMap,
}

impl RulesetSnapshot {
    /// The entities with their bodies parsed, in key order.
    pub fn to_entities(&self) -> Result<Vec<Entity>, CodecError> {
        self.entities
            .iter()
            .map(|(key, body)| {
                Ok(Entity {
                    key: key.clone(),
                    body: body.to_value()?,
                })
            })
            .collect()
    }
}

/// One version of a project: its metadata, its delta and the digest after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub author: String,
    pub message: String,
    pub commit_time_ms: u64,
    pub request_id: Option<String>,
    pub upserts: Vec<Upsert>,
    pub deletes: Vec<EntityKey>,
    pub digest: RulesetDigest,
}

/// A change published after it was applied.
#[derive(Clone, Debug, PartialEq)]
pub enum AppliedChange {
    Version {
        project: String,
        record: Arc<VersionRecord>,
    },
    ProjectCreated {
        project: String,
    },
    ProjectDeleted {
        project: String,
    },
    /// The whole state was replaced by a snapshot from the leader: every subscriber must
    /// resync every project from [`crate::StateMachineStore::ruleset`].
    SnapshotInstalled {
        last_applied: Option<LogId>,
    },
    /// Keys were created or revoked (a project delete revokes its keys): whoever holds
    /// connections authenticated by a key must check it again.
    KeysChanged,
}
