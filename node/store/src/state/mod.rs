//! The state machine store: projects, versions, history, snapshots.

mod api_keys;
mod apply;
mod dropper;
mod load;
pub(crate) mod model;
mod records;
mod redo;
mod snapshot;
mod values;

pub use apply::MAX_PROJECT_NAME_BYTES;
pub use model::DEFAULT_PROJECT;

use crate::codec;
use crate::error::StoreError;
use crate::keys;
use crate::log_store::Purges;
use crate::types::{
    ApiKey, AppliedChange, CommandOutcome, LogId, NodeAddr, NodeId, ProjectHead, RulesetSnapshot,
    StorageError, StoreConfig, TypeConfig, VersionRecord,
};
use apply::{apply_command, ApplyCtx};
use arc_swap::ArcSwap;
use dropper::Dropper;
use model::{ProjectState, SmView};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};
use values::SmWriter;

/// The state machine; cheap to clone (a handle to shared state).
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    /// Holds the redo record of the last small apply call (see `redo`).
    redo: sled::Tree,
    /// The Raft log's tree: stubbed records' bodies are read from its entries.
    log: sled::Tree,
    view: ArcSwap<SmView>,
    config: StoreConfig,
    changes: broadcast::Sender<Arc<AppliedChange>>,
    applied: watch::Sender<u64>,
    /// The last built or installed snapshot. Kept in memory only: after a restart openraft
    /// rebuilds one from the (durable) state machine when logs were purged.
    current_snapshot: Mutex<Option<StoredSnapshot>>,
    snapshot_seq: AtomicU64,
    dropper: Dropper,
    /// The log's purges: an install writes the one held back for it.
    purges: Arc<Purges>,
}

struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeAddr>,
    bytes: Arc<Vec<u8>>,
}

/// Builds snapshots from the in-memory view current when `build_snapshot` runs.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl StateMachineStore {
    pub(crate) async fn open(
        db: sled::Db,
        dir: &Path,
        config: StoreConfig,
        purges: Arc<Purges>,
    ) -> Result<Self, StoreError> {
        let tree = db.open_tree(keys::SM_TREE)?;
        let redo = db.open_tree(keys::REDO_TREE)?;
        let log = db.open_tree(keys::LOG_TREE)?;
        let view = load::load_or_init(&db, &tree, &redo, &log, dir).await?;
        purges.set_pin(view.pinned_log_index());
        let capacity = config.broadcast_capacity.max(1);
        let (changes, _) = broadcast::channel(capacity);
        let dropper = Dropper::start(capacity.saturating_add(16));
        let (applied, _) = watch::channel(view.last_applied.map_or(0, |l| l.index));
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                db,
                tree,
                redo,
                log,
                view: ArcSwap::from_pointee(view),
                config,
                changes,
                applied,
                current_snapshot: Mutex::new(None),
                snapshot_seq: AtomicU64::new(0),
                dropper,
                purges,
            }),
        })
    }

    fn project(&self, name: &str) -> Option<Arc<ProjectState>> {
        self.shared.view.load().projects.get(name).cloned()
    }

    /// Every project's head, by name.
    pub fn projects(&self) -> Vec<ProjectHead> {
        let view = self.shared.view.load();
        view.projects.iter().map(|(n, p)| p.head(n)).collect()
    }

    pub fn head(&self, project: &str) -> Option<ProjectHead> {
        self.project(project).map(|p| p.head(project))
    }

    /// A consistent copy of the current ruleset (O(1): persistent map clone).
    pub fn ruleset(&self, project: &str) -> Option<RulesetSnapshot> {
        self.project(project).map(|p| RulesetSnapshot {
            head: p.head(project),
            entities: p.entities.clone(),
        })
    }

    /// The stored value that holds `version` of `project` (its group's, or its own record), with
    /// its key, if the version is retained.
    fn stored_holding(
        &self,
        project: &str,
        version: u64,
    ) -> Result<Option<([u8; 17], records::StoredRecord)>, StoreError> {
        let Some(p) = self.project(project) else {
            return Ok(None);
        };
        if version < p.meta.oldest_retained || version > p.meta.version {
            return Ok(None);
        }
        let key = keys::version(p.meta.incarnation, p.record_key_version(version));
        match values::read_value(&self.shared.tree, &key)? {
            Some(raw) => Ok(Some((key, records::decode(&raw)?))),
            None => Ok(None),
        }
    }

    /// The record of one version, if it is still retained.
    pub fn version_record(
        &self,
        project: &str,
        version: u64,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let Some((key, stored)) = self.stored_holding(project, version)? else {
            return Ok(None);
        };
        match records::Resolver::new(&self.shared.log).expand(project, stored, version..=version) {
            Ok(mut found) => Ok(found.pop()),
            Err(e) => self.unresolved(e, &key),
        }
    }

    /// The digest and commit time of one version, if its record is still retained. Cheaper
    /// than [`Self::version_record`]: reads no log entry.
    pub fn version_digest(
        &self,
        project: &str,
        version: u64,
    ) -> Result<Option<(flagraft_client::digest::RulesetDigest, u64)>, StoreError> {
        Ok(self
            .stored_holding(project, version)?
            .and_then(|(_, stored)| stored.digest_and_time(version)))
    }

    /// A record that could not be read back: compacted meanwhile (`None`) or corrupt.
    fn unresolved<T>(&self, e: records::Unresolved, key: &[u8]) -> Result<Option<T>, StoreError> {
        match e {
            records::Unresolved::EntryGone if !self.shared.tree.contains_key(key)? => Ok(None),
            records::Unresolved::EntryGone => Err(codec::CodecError::Corrupt(format!(
                "a retained record's log entry is gone (record key {key:?})"
            ))
            .into()),
            records::Unresolved::Corrupt(e) => Err(e.into()),
        }
    }

    /// Records with version >= from, ascending, at most `limit`.
    pub fn history(
        &self,
        project: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        let Some(p) = self.project(project) else {
            return Ok(Vec::new());
        };
        let start = from.max(p.meta.oldest_retained);
        if start > p.meta.version || limit == 0 {
            return Ok(Vec::new());
        }
        let inc = p.meta.incarnation;
        // Retained versions are contiguous: these are the ones wanted.
        let end = p
            .meta
            .version
            .min(start.saturating_add(u64::try_from(limit - 1).unwrap_or(u64::MAX)));
        let mut out = Vec::new();
        let mut resolver = records::Resolver::new(&self.shared.log);
        let from_key = keys::version(inc, p.record_key_version(start));
        for item in self.shared.tree.range(from_key..=keys::version(inc, end)) {
            let (key, head) = item?;
            // None: compacted since its head was read; the records after it are newer.
            let Some(raw) = values::resolve(&self.shared.tree, &key, &head)? else {
                continue;
            };
            match resolver.expand(project, records::decode(&raw)?, start..=end) {
                Ok(records) => out.extend(records),
                // Compacted since its head was read, like the `None` above.
                Err(e) => {
                    self.unresolved::<()>(e, &key)?;
                }
            }
        }
        Ok(out)
    }

    /// One API key (revoked ones included).
    pub fn api_key(&self, id: &str) -> Option<Arc<ApiKey>> {
        self.shared.view.load().keys.get(id).cloned()
    }

    /// Every API key, by id (revoked ones included).
    pub fn api_keys(&self) -> Vec<Arc<ApiKey>> {
        self.shared.view.load().keys.values().cloned().collect()
    }

    /// What the commit with `request_id` returned, while the id is remembered (see
    /// [`crate::REQUEST_ID_WINDOW`]): (version, digest, commit time).
    pub fn remembered_request(
        &self,
        project: &str,
        request_id: &str,
    ) -> Option<(u64, flagraft_client::digest::RulesetDigest, u64)> {
        let p = self.project(project)?;
        let e = p.requests.get(request_id)?;
        Some((e.version, e.digest, e.commit_time_ms))
    }

    /// Lowest version whose delta is still retained (`version + 1` when none is, e.g. at 0).
    pub fn oldest_retained(&self, project: &str) -> Option<u64> {
        self.project(project).map(|p| p.meta.oldest_retained)
    }

    /// Every applied change, in apply order, published right after apply. Never blocks apply;
    /// a lagging receiver gets `Lagged` and must resync from history.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedChange>> {
        self.shared.changes.subscribe()
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.view.load().last_applied
    }

    /// Changes whenever something is applied (value: last applied log index, 0 when none).
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// The data dir this store lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Keys in the state machine tree (tests check that nothing leaks).
    #[cfg(test)]
    pub(crate) fn stored_key_count(&self) -> usize {
        self.shared.tree.len()
    }

    /// The redo tree (tests check that a replayed record is dropped).
    #[cfg(test)]
    pub(crate) fn redo_tree_for_tests(&self) -> &sled::Tree {
        &self.shared.redo
    }

    /// The state machine tree itself (tests write what older releases left behind).
    #[cfg(test)]
    pub(crate) fn tree_for_tests(&self) -> &sled::Tree {
        &self.shared.tree
    }

    /// Makes everything applied so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.shared.db.flush_async().await?;
        Ok(())
    }

    fn publish(&self, view: SmView, changes: Vec<AppliedChange>) {
        let index = view.last_applied.map_or(0, |l| l.index);
        let old = self.shared.view.swap(Arc::new(view));
        self.shared.applied.send_replace(index);
        let mut sent = Vec::with_capacity(changes.len());
        for change in changes {
            let change = Arc::new(change);
            sent.push(change.clone());
            // An error only means nobody is subscribed.
            let _ = self.shared.changes.send(change);
        }
        self.shared.dropper.retire(old, sent);
    }

    fn set_current_snapshot(&self, meta: SnapshotMeta<NodeId, NodeAddr>, bytes: Arc<Vec<u8>>) {
        let mut slot = self
            .shared
            .current_snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A build that raced with an install must not replace a newer snapshot.
        if let Some(current) = slot.as_ref() {
            if current.meta.last_log_id > meta.last_log_id {
                return;
            }
        }
        *slot = Some(StoredSnapshot { meta, bytes });
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, NodeAddr>), StorageError> {
        let view = self.shared.view.load();
        Ok((view.last_applied, view.membership.clone()))
    }

    /// One atomic sled batch per call (all entries, their state changes, last applied and
    /// membership), then one swap of the in-memory view. Not flushed: the log is durable.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut view = SmView::clone(&self.shared.view.load());
        let mut writer = SmWriter::new(&self.shared.tree);
        let mut changes = Vec::new();
        let mut outcomes = Vec::new();
        let mut last = None;
        let mut membership_changed = false;
        let mut open_groups = HashMap::new();
        for entry in entries {
            let log_id = entry.log_id;
            view.last_applied = Some(log_id);
            last = Some(log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => CommandOutcome::MembershipChanged,
                EntryPayload::Membership(m) => {
                    view.membership = StoredMembership::new(Some(log_id), m);
                    membership_changed = true;
                    CommandOutcome::MembershipChanged
                }
                EntryPayload::Normal(command) => {
                    let mut ctx = ApplyCtx {
                        writer: &mut writer,
                        changes: &mut changes,
                        history_limit: self.shared.config.history_limit,
                        open_groups: &mut open_groups,
                    };
                    apply_command(&mut view, command, log_id.index, &mut ctx)
                        .map_err(|e| StorageIOError::apply(log_id, &e))?
                }
            };
            outcomes.push(outcome);
        }
        let Some(last) = last else {
            return Ok(outcomes);
        };
        let encode_err = |e: codec::CodecError| StorageIOError::apply(last, &e);
        apply::close_groups(&mut view, &mut open_groups, &mut writer).map_err(encode_err)?;
        writer.insert(
            keys::APPLIED,
            codec::encode(&view.last_applied).map_err(encode_err)?,
        );
        // Stored only when a membership entry changed it: every sled insert is a leaf update,
        // and normal entries leave it as it is.
        if membership_changed {
            writer.insert(
                keys::MEMBERSHIP,
                codec::encode(&view.membership).map_err(encode_err)?,
            );
        }
        writer.commit(&self.shared.redo).map_err(encode_err)?;
        // After the writes: a purge that reads the new pin comes after the compactions behind it.
        self.shared.purges.set_pin(view.pinned_log_index());
        self.publish(view, changes);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        self.shared.purges.begin_receiving();
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Replaces the whole state in one atomic batch and flushes it before returning, because
    /// openraft purges the log up to the snapshot right after.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeAddr>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = Arc::new(snapshot.into_inner());
        let signature = Some(meta.signature());
        let read_err = |e: &dyn std::fmt::Display| {
            StorageIOError::read_snapshot(signature.clone(), openraft::AnyError::error(e))
        };
        let tree = self.shared.tree.clone();
        let decoded = bytes.clone();
        let (view, batch) =
            tokio::task::spawn_blocking(move || snapshot::prepare_install(&decoded, &tree))
                .await
                .map_err(|e| read_err(&e))?
                .map_err(|e| read_err(&e))?;
        if view.last_applied != meta.last_log_id || view.membership != meta.last_membership {
            return Err(read_err(&"snapshot data does not match its meta").into());
        }
        let write_err = |e: &sled::Error| {
            StorageIOError::write_snapshot(signature.clone(), openraft::AnyError::new(e))
        };
        // A redo record from before the snapshot must not be replayed over it.
        redo::clear(&self.shared.redo).map_err(|e| write_err(&e))?;
        self.shared
            .tree
            .apply_batch(batch)
            .map_err(|e| write_err(&e))?;
        self.shared
            .db
            .flush_async()
            .await
            .map_err(|e| write_err(&e))?;
        let last_applied = view.last_applied;
        self.shared.purges.set_pin(view.pinned_log_index());
        self.publish(
            view,
            vec![AppliedChange::SnapshotInstalled { last_applied }],
        );
        self.set_current_snapshot(meta.clone(), bytes);
        // Flushed above: the purge held back for this install may be written now.
        self.shared
            .purges
            .installed(last_applied.map_or(0, |l| l.index))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let slot = self
            .shared
            .current_snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(slot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.bytes.as_ref().clone())),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Serialises the view current at this moment on a blocking thread (applies go on), then
    /// flushes sled so that the state the snapshot reports is durable before openraft purges
    /// the log behind it.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let view = self.shared.view.load_full();
        let shared = self.shared.clone();
        let captured = view.clone();
        let write_err = |e: &dyn std::fmt::Display| {
            StorageIOError::write_snapshot(None, openraft::AnyError::error(e))
        };
        let bytes = tokio::task::spawn_blocking(move || {
            snapshot::build(&captured, &shared.tree, &shared.log)
        })
        .await
        .map_err(|e| write_err(&e))?
        .map_err(|e| write_err(&e))?;
        self.shared
            .db
            .flush_async()
            .await
            .map_err(|e| write_err(&e))?;
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match view.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: view.last_applied,
            last_membership: view.membership.clone(),
            snapshot_id,
        };
        let bytes = Arc::new(bytes);
        let store = StateMachineStore {
            shared: self.shared.clone(),
        };
        store.set_current_snapshot(meta.clone(), bytes.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes.as_ref().clone())),
        })
    }
}
