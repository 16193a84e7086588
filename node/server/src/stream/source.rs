//! What the stream needs from the node's state: heads, snapshots, history and
//! a feed of applied changes. `StateMachineStore` implements it (see
//! `store_source.rs`); tests use an in-memory fake.

use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::EntityKey;
use flagraft_client::protocol::{encode_delta, ProtocolError, SnapshotReason};
use flagraft_store::Upsert;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// A project's applied version on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    pub digest: RulesetDigest,
    pub commit_time_ms: u64,
}

/// The change that produced `version` from `version - 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaRecord {
    pub version: u64,
    pub commit_time_ms: u64,
    /// Bodies as canonical JSON text, written into frames as they are.
    pub upserts: Vec<Upsert>,
    pub deletes: Vec<EntityKey>,
    pub digest: RulesetDigest,
}

impl DeltaRecord {
    /// The `delta` message of this version (the JSON of `ServerMessage::Delta`).
    pub fn encode(&self) -> Result<String, ProtocolError> {
        encode_delta(
            self.version.saturating_sub(1),
            self.version,
            self.commit_time_ms,
            self.upserts.iter().map(|u| (&u.key, u.body.as_str())),
            &self.deletes,
            &self.digest,
        )
    }
}

/// One applied change, as the stream sees it.
#[derive(Clone, Debug)]
pub enum SourceChange {
    Version {
        project: String,
        record: Arc<DeltaRecord>,
    },
    ProjectDeleted {
        project: String,
    },
    /// Anything else the stream does not care about (e.g. a project created).
    Other,
    /// The state jumped (snapshot installed): every subscriber must catch up.
    Resync,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ChangeError {
    /// The receiver fell behind and missed this many changes.
    Lagged(u64),
    /// The source is gone.
    Closed,
}

pub trait ChangeReceiver: Send + 'static {
    fn recv(&mut self) -> impl Future<Output = Result<SourceChange, ChangeError>> + Send;
}

#[derive(Debug, thiserror::Error)]
#[error("reading the node's state: {0}")]
pub struct SourceError(pub String);

pub trait StreamSource: Send + Sync + 'static {
    type Changes: ChangeReceiver;

    fn node_id(&self) -> u64;
    fn head(&self, project: &str) -> Option<Head>;
    /// The project's current ruleset encoded as a `snapshot` message and
    /// `snapshot_part`s of about `part_bytes` each, with its head.
    fn encode_snapshot(
        &self,
        project: &str,
        reason: SnapshotReason,
        part_bytes: usize,
    ) -> Result<Option<(Head, Vec<String>)>, SourceError>;
    /// Records with version >= from, ascending, at most `limit`.
    fn history(
        &self,
        project: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Arc<DeltaRecord>>, SourceError>;
    /// Lowest version whose delta is still retained.
    fn oldest_retained(&self, project: &str) -> Option<u64>;
    /// The digest after `version`, if this node still knows it.
    fn digest_at(&self, project: &str, version: u64) -> Result<Option<RulesetDigest>, SourceError>;
    /// A feed of every change applied from now on.
    fn changes(&self) -> Self::Changes;
    /// Changes whenever anything is applied.
    fn applied_watch(&self) -> watch::Receiver<u64>;
}
