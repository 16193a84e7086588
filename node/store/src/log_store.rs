//! The Raft log and vote on sled.
//!
//! Appends are written to sled at once (so readers see them) and acknowledged by a flusher thread
//! that flushes sled and only then fires the callbacks: every append whose write preceded a flush
//! is covered by it, so concurrent appends share one fsync (group commit) and the Raft core can
//! replicate to followers while the local disk syncs.
//!
//! The flusher is a thread of its own calling sled's blocking `flush`, not a task awaiting
//! `flush_async`: the two make the same writes durable, but `flush_async` runs `flush` as a job
//! of sled's thread pool, whose every job wakes all its idle threads (`notify_all`): a futex
//! trace of a busy follower counted ~60 futex calls per append, most of them in that pool. sled
//! still writes each IO buffer out through its pool.

// openraft's StorageError is large and fixed by the trait; helpers return it as the trait does.
#![allow(clippy::result_large_err)]

use crate::codec;
use crate::keys;
use crate::log_cache::LogCache;
use crate::types::{LogId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, StorageIOError, Vote};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

type Vote64 = Vote<crate::NodeId>;

/// Purges, shared by the log and the state machine.
///
/// When a follower installs a snapshot, openraft 0.9 hands the install to its state machine
/// task and purges the log up to the snapshot at once, without waiting for the install. A crash
/// in between leaves the purge durable and the state machine behind it, and openraft then
/// refuses every restart (`purge_upto <= snapshot_last_log_id`). So a purge beyond the applied
/// index while a snapshot is being received is held back and written by the install, after
/// the installed state is flushed. Any other purge is written at once (openraft only purges
/// what a snapshot covers, and applied entries are written to sled before the purge batch).
///
/// Entries that retained version records name (records stored as stubs, see
/// `state::records`) stay in the tree after their purge, until the records are compacted: a
/// purge removes only the entries below the state machine's pin. Readers never see them: reads
/// start after the purge.
pub(crate) struct Purges {
    tree: sled::Tree,
    /// Set when a snapshot transfer begins (`begin_receiving_snapshot`).
    receiving: AtomicBool,
    held: Mutex<Option<LogId>>,
    /// The oldest entry a retained record names (`u64::MAX`: none). Set by the state machine
    /// after each applied batch, so a purge that reads it comes after the compactions behind it.
    pin: AtomicU64,
    /// One past the index of the last written purge (0: none).
    purged_end: AtomicU64,
}

impl Purges {
    pub(crate) fn new(db: &sled::Db) -> Result<Arc<Self>, crate::StoreError> {
        let tree = db.open_tree(keys::LOG_TREE)?;
        let purged: Option<LogId> = match tree.get(keys::PURGED)? {
            Some(raw) => codec::decode(&raw)?,
            None => None,
        };
        Ok(Arc::new(Purges {
            tree,
            receiving: AtomicBool::new(false),
            held: Mutex::new(None),
            pin: AtomicU64::new(u64::MAX),
            purged_end: AtomicU64::new(purged.map_or(0, |l| l.index.saturating_add(1))),
        }))
    }

    pub(crate) fn set_pin(&self, oldest_named: Option<u64>) {
        self.pin
            .store(oldest_named.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// The first index a read may return.
    fn readable_from(&self) -> u64 {
        self.purged_end.load(Ordering::SeqCst)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<LogId>> {
        // A plain value: a panic while holding it leaves nothing half-updated.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn begin_receiving(&self) {
        self.receiving.store(true, Ordering::SeqCst);
    }

    /// Called by the install once its state is flushed: writes a held purge it covers.
    pub(crate) fn installed(&self, applied_index: u64) -> Result<(), StorageError> {
        let mut held = self.held();
        if let Some(log_id) = *held {
            if log_id.index <= applied_index {
                self.write(log_id)?;
                *held = None;
            }
        }
        self.receiving.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn request(&self, log_id: LogId, applied_index: u64) -> Result<(), StorageError> {
        let mut held = self.held();
        if log_id.index > applied_index && self.receiving.load(Ordering::SeqCst) {
            *held = Some(held.map_or(log_id, |h| h.max(log_id)));
            return Ok(());
        }
        self.write(log_id)
    }

    /// Marker and deletion in one atomic batch. Not flushed: if lost in a crash, the entries
    /// reappear below the state machine, which is harmless. Entries from the pin on stay (see
    /// above); a later purge removes them once the pin has moved past them.
    fn write(&self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        let marker = codec::encode(&Some(log_id)).map_err(|e| StorageIOError::write_logs(&e))?;
        batch.insert(keys::PURGED, marker);
        let pin = self.pin.load(Ordering::SeqCst);
        if let Some(below_pin) = pin.checked_sub(1) {
            let end = log_id.index.min(below_pin);
            for item in self
                .tree
                .range(keys::log_entry(0)..=keys::log_entry(end))
                .keys()
            {
                batch.remove(item.map_err(|e| StorageIOError::write_logs(&e))?);
            }
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.purged_end
            .fetch_max(log_id.index.saturating_add(1), Ordering::SeqCst);
        Ok(())
    }
}

/// The Raft log store; cheap to clone (the clone is also the log reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    flush_tx: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
    max_read_bytes: usize,
    max_read_entries: usize,
    /// The state machine's last applied index and the purges shared with it.
    applied: watch::Receiver<u64>,
    purges: Arc<Purges>,
    /// The newest entries, decoded (see `log_cache`).
    recent: LogCache,
    /// The committed index last written by `save_committed` (`u64::MAX`: none yet).
    saved_committed: AtomicU64,
}

/// `save_committed` writes only when the committed index moved this far since its last write.
/// The saved value is a hint (a restarted node applies up to it before it hears from a
/// leader), so it may lag; writing it on every commit was a sled write per entry into the
/// leaf that also holds the newest (large) entries, which sled rewrites every 10 writes.
const SAVE_COMMITTED_EVERY: u64 = 64;

/// What the decoded-entry cache may hold: enough for replication and apply to find what was
/// just appended, bounded in memory.
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 64 << 20;

impl LogStore {
    /// Indexes of the entries sled holds, purged ones kept for record stubs included.
    #[cfg(test)]
    pub(crate) fn stored_indexes_for_tests(&self) -> Vec<u64> {
        self.inner
            .tree
            .range(keys::log_entry(0)..=keys::log_entry(u64::MAX))
            .keys()
            .map(|k| {
                let k = k.expect("sled read in a test");
                u64::from_be_bytes(k[1..].try_into().expect("9-byte entry key"))
            })
            .collect()
    }

    /// Starts the flusher thread, which ends once the last clone of the store is dropped.
    pub(crate) fn new(
        db: sled::Db,
        max_read_bytes: usize,
        max_read_entries: usize,
        applied: watch::Receiver<u64>,
        purges: Arc<Purges>,
    ) -> Result<Self, sled::Error> {
        let tree = db.open_tree(keys::LOG_TREE)?;
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        let flusher_db = db.clone();
        std::thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || run_flusher(flusher_db, flush_rx))
            .map_err(|e| sled::Error::Io(io::Error::other(format!("log flusher thread: {e}"))))?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                db,
                tree,
                flush_tx,
                max_read_bytes: max_read_bytes.max(1),
                max_read_entries: max_read_entries.max(1),
                applied,
                purges,
                recent: LogCache::new(CACHE_ENTRIES, CACHE_BYTES),
                saved_committed: AtomicU64::new(u64::MAX),
            }),
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let raw = self
            .inner
            .tree
            .get(key)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        match raw {
            None => Ok(None),
            Some(raw) => codec::decode(&raw)
                .map(Some)
                .map_err(|e| StorageIOError::read_logs(&e).into()),
        }
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(keys::PURGED)?.flatten())
    }

    fn read_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
        limited: bool,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        // Entries kept after their purge for record stubs are not part of the log.
        let readable_from = self.inner.purges.readable_from();
        let start = match start {
            Bound::Included(i) if i >= readable_from => Bound::Included(i),
            Bound::Excluded(i) if i >= readable_from => Bound::Excluded(i),
            _ if readable_from == 0 => start,
            _ => Bound::Included(readable_from),
        };
        let start_index = match start {
            Bound::Included(i) => Some(i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end_index = match end {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(i),
            Bound::Unbounded => None,
        };
        let to_key = |b: Bound<u64>| match b {
            Bound::Included(i) => Bound::Included(keys::log_entry(i)),
            Bound::Excluded(i) => Bound::Excluded(keys::log_entry(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let start = match to_key(start) {
            Bound::Unbounded => Bound::Included(keys::log_entry(0)),
            b => b,
        };
        let end = match to_key(end) {
            Bound::Unbounded => Bound::Included(keys::log_entry(u64::MAX)),
            b => b,
        };
        let limit = limited.then_some((self.inner.max_read_bytes, self.inner.max_read_entries));
        if let Some(entries) = cached_range(&self.inner.recent, start_index, end_index, limit) {
            return Ok(entries);
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self.inner.tree.range::<[u8; 9], _>((start, end)) {
            let (_, raw) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            if limited
                && !out.is_empty()
                && (bytes + raw.len() > self.inner.max_read_bytes
                    || out.len() >= self.inner.max_read_entries)
            {
                break;
            }
            bytes += raw.len();
            let entry: Entry<TypeConfig> =
                codec::decode(&raw).map_err(|e| StorageIOError::read_logs(&e))?;
            out.push(entry);
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<(), sled::Error> {
        self.inner.db.flush_async().await.map(|_| ())
    }
}

/// `start..end` from the cache, when both ends are known and it holds them all.
fn cached_range(
    cache: &LogCache,
    start: Option<u64>,
    end: Option<u64>,
    limit: Option<(usize, usize)>,
) -> Option<Vec<Entry<TypeConfig>>> {
    cache.get(start?, end?, limit)
}

/// The flusher thread: each round flushes once for every append that arrived before it.
fn run_flusher(db: sled::Db, mut rx: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    let mut waiting = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        waiting.push(first);
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = db.flush();
        for callback in waiting.drain(..) {
            let outcome = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.read_range(
            range.start_bound().cloned(),
            range.end_bound().cloned(),
            false,
        )
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.read_range(Bound::Included(start), Bound::Excluded(end), true)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = self
            .inner
            .tree
            .range(keys::log_entry(0)..=keys::log_entry(u64::MAX))
            .next_back()
            .transpose()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last {
            Some((_, raw)) => {
                let entry: Entry<TypeConfig> =
                    codec::decode(&raw).map_err(|e| StorageIOError::read_logs(&e))?;
                // Only entries kept for record stubs are left: the log is empty.
                Some(entry.log_id).max(last_purged_log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote64) -> Result<(), StorageError> {
        let raw = codec::encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.inner
            .tree
            .insert(keys::VOTE, raw)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote64>, StorageError> {
        self.read_meta(keys::VOTE)
    }

    /// Not flushed by itself: it rides on the next append's flush. A stale value only says less
    /// is committed than really is: a follower learns the rest from its leader, and a leader
    /// openraft restores at startup waits for the log it restarted with before it answers a
    /// linearizable read (`NodeState::linearizable_barrier` in flagraft-node).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let index = committed.map_or(0, |c| c.index);
        let saved = self.inner.saved_committed.load(Ordering::Relaxed);
        if saved != u64::MAX && index >= saved && index - saved < SAVE_COMMITTED_EVERY {
            return Ok(());
        }
        self.inner.saved_committed.store(index, Ordering::Relaxed);
        let raw = codec::encode(&committed).map_err(|e| StorageIOError::write_logs(&e))?;
        self.inner
            .tree
            .insert(keys::COMMITTED, raw)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(keys::COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut written = Vec::new();
        for entry in entries {
            let raw = codec::encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            let size = raw.len();
            encoded.push((keys::log_entry(entry.log_id.index), raw));
            written.push((entry, size));
        }
        // One entry (the usual append: a group-commit entry) is a plain insert. sled makes a
        // batch atomic by first writing out its current IO buffer (`pin_log` rolls it): one more
        // write and sync, and one more job for its thread pool, per append.
        let stored = if encoded.len() == 1 {
            let (key, raw) = encoded.swap_remove(0);
            self.inner.tree.insert(key, raw).map(|_| ())
        } else {
            let mut batch = sled::Batch::default();
            for (key, raw) in encoded {
                batch.insert(&key, raw);
            }
            self.inner.tree.apply_batch(batch)
        };
        stored.map_err(|e| StorageIOError::write_logs(&e))?;
        self.inner.recent.appended(written);
        if let Err(returned) = self.inner.flush_tx.send(callback) {
            // The flusher is gone (runtime shutting down): flush inline instead.
            let outcome = self
                .flush()
                .await
                .map_err(|e| io::Error::other(e.to_string()));
            returned.0.log_io_completed(outcome);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The cache first: it must never hold an entry sled no longer has.
        self.inner.recent.truncated(log_id.index);
        let mut batch = sled::Batch::default();
        for item in self
            .inner
            .tree
            .range(keys::log_entry(log_id.index)..=keys::log_entry(u64::MAX))
            .keys()
        {
            batch.remove(item.map_err(|e| StorageIOError::write_logs(&e))?);
        }
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // Rare; flushing keeps a truncated suffix from reappearing after a crash.
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    /// See [`Purges`]: held back while a snapshot install it depends on is in flight.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let applied = *self.inner.applied.borrow();
        self.inner.recent.purged(log_id.index);
        self.inner.purges.request(log_id, applied)
    }
}
