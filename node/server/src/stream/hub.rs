//! Fan-out of applied versions to every connection of a project.
//!
//! One task reads the node's change feed, encodes each version's delta once as
//! a WebSocket frame and offers it to each subscriber's [`Outbox`]: a caught-up
//! connection gets it written into its socket at once, without waking its
//! task; anything else is queued, bounded. Apply and the other subscribers
//! never wait for a slow one: a subscriber whose backlog is full is dropped
//! and its connection closes with `4004`.

use super::config::StreamConfig;
use super::keys::KeyResolver;
use super::outbox::{Offer, Outbox};
use super::source::{ChangeError, ChangeReceiver, SourceChange, StreamSource};
use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use flagraft_client::protocol::{CloseCode, SnapshotReason};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// What the hub hands a connection.
#[derive(Clone, Debug)]
pub(crate) enum Push {
    /// A version's delta, encoded once for all subscribers.
    Delta(Arc<EncodedDelta>),
    /// Changes may have been missed: catch up from history to the head.
    Resync,
    /// Keys may have changed: resolve this connection's key again.
    Recheck,
}

#[derive(Debug)]
pub(crate) struct EncodedDelta {
    pub from_version: u64,
    pub to_version: u64,
    /// The whole WebSocket frame (header and text), the same for every subscriber.
    pub frame: Bytes,
}

/// Why the hub dropped a subscriber (0: it did not).
#[derive(Debug, Default)]
pub(crate) struct CloseSlot(AtomicU16);

impl CloseSlot {
    pub fn set(&self, code: CloseCode) {
        let _ = self
            .0
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn get(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.0.load(Ordering::Acquire))
    }
}

type Registry = HashMap<Arc<str>, HashMap<u64, Arc<Outbox>>>;

/// The stream's shared state: subscribers per project, keys, shutdown signal.
pub struct StreamHub<S> {
    pub(crate) source: S,
    pub(crate) config: StreamConfig,
    pub(crate) keys: Arc<dyn KeyResolver>,
    subs: Mutex<Registry>,
    next_id: AtomicU64,
    connections: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
    snapshot_cache: Mutex<HashMap<Arc<str>, CachedSnapshot>>,
}

/// A snapshot's version and its encoded messages.
pub(crate) type EncodedSnapshot = (u64, Arc<[Utf8Bytes]>);

struct CachedSnapshot {
    version: u64,
    reason: SnapshotReason,
    part_bytes: usize,
    parts: Arc<[Utf8Bytes]>,
}

/// A connection's place in the hub; unregisters on drop.
pub(crate) struct Registration<S: StreamSource> {
    hub: Arc<StreamHub<S>>,
    project: Arc<str>,
    id: u64,
}

impl<S: StreamSource> Registration<S> {
    pub fn project(&self) -> &Arc<str> {
        &self.project
    }
}

impl<S: StreamSource> Drop for Registration<S> {
    fn drop(&mut self) {
        let mut subs = self.hub.lock_subs();
        if let Some(p) = subs.get_mut(&self.project) {
            p.remove(&self.id);
            if p.is_empty() {
                subs.remove(&self.project);
            }
        }
        drop(subs);
        self.hub
            .connections
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl<S: StreamSource> StreamHub<S> {
    /// A hub; call [`StreamHub::spawn_fanout`] to start delivering changes.
    pub fn new(source: S, config: StreamConfig, keys: Arc<dyn KeyResolver>) -> Arc<Self> {
        Arc::new(StreamHub {
            source,
            config,
            keys,
            subs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            connections: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            snapshot_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Start the fan-out task. It ends when the source's feed closes or on shutdown.
    pub fn spawn_fanout(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let hub = Arc::clone(self);
        let changes = hub.source.changes();
        // Outside tokio's cooperative budget: with it, every socket write after
        // the first 128 of a version would be refused as "not ready" and left
        // to the connection's task, waking thousands of tasks per commit.
        tokio::spawn(tokio::task::coop::unconstrained(async move {
            hub.fanout(changes).await
        }))
    }

    /// Number of open stream connections (registered after a valid hello).
    pub fn connection_count(&self) -> usize {
        *self.connections.borrow()
    }

    /// Tell every connection goodbye (`4005 shutting_down`); new ones are refused.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Wait until every connection is gone, at most `timeout`. True if drained.
    pub async fn drained(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.connections.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Ask every connection to resolve its key again (closing revoked ones).
    pub fn recheck_keys(&self) {
        self.broadcast(|| Push::Recheck);
    }

    fn lock_subs(&self) -> MutexGuard<'_, Registry> {
        // Critical sections only touch the maps; a poisoned lock is still consistent.
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connection's outbox for `project`; None when the node is full.
    pub(crate) fn register(
        self: &Arc<Self>,
        project: &str,
        outbox: &Arc<Outbox>,
    ) -> Option<Registration<S>> {
        let mut admitted = false;
        self.connections.send_if_modified(|n| {
            admitted = *n < self.config.max_connections;
            if admitted {
                *n += 1;
            }
            admitted
        });
        if !admitted {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let project: Arc<str> = Arc::from(project);
        self.lock_subs()
            .entry(Arc::clone(&project))
            .or_default()
            .insert(id, Arc::clone(outbox));
        Some(Registration {
            hub: Arc::clone(self),
            project,
            id,
        })
    }

    /// The project's snapshot messages at its current head, encoded once per version
    /// (a reconnect storm encodes it once, not once per client).
    pub(crate) fn snapshot_parts(
        &self,
        project: &str,
        reason: SnapshotReason,
        part_bytes: usize,
    ) -> Result<Option<EncodedSnapshot>, super::source::SourceError> {
        let head = self.source.head(project);
        if let Some(head) = head {
            let cache = self
                .snapshot_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(project) {
                if c.version == head.version && c.reason == reason && c.part_bytes == part_bytes {
                    return Ok(Some((c.version, Arc::clone(&c.parts))));
                }
            }
        }
        let Some((head, parts)) = self.source.encode_snapshot(project, reason, part_bytes)? else {
            return Ok(None);
        };
        let parts: Arc<[Utf8Bytes]> = parts.into_iter().map(Utf8Bytes::from).collect();
        let mut cache = self
            .snapshot_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.insert(
            Arc::from(project),
            CachedSnapshot {
                version: head.version,
                reason,
                part_bytes,
                parts: Arc::clone(&parts),
            },
        );
        Ok(Some((head.version, parts)))
    }

    async fn fanout(&self, mut changes: S::Changes) {
        let mut shutdown = self.shutdown_signal();
        // Reused for every version: no allocation per subscriber and commit.
        let mut batch: Vec<(u64, Arc<Outbox>)> = Vec::new();
        loop {
            // Shutdown first: once a node has said goodbye, no delta may follow it.
            let change = tokio::select! {
                biased;
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                c = changes.recv() => c,
            };
            match change {
                Ok(SourceChange::Version { project, record }) => {
                    // Deltas are written straight into sockets: re-check, the goodbye may
                    // have been decided while this task waited.
                    if self.is_shutting_down() {
                        return;
                    }
                    if !self.has_subscribers(&project) {
                        continue;
                    }
                    let text = match record.encode() {
                        Ok(t) => t,
                        Err(e) => {
                            // Subscribers will miss this version and fill the gap from history.
                            tracing::error!(project, version = record.version, error = %e, "cannot encode delta");
                            continue;
                        }
                    };
                    let delta = Arc::new(EncodedDelta {
                        from_version: record.version.saturating_sub(1),
                        to_version: record.version,
                        frame: super::frame::text(&text),
                    });
                    self.offer(&project, &delta, &mut batch);
                }
                Ok(SourceChange::ProjectDeleted { project }) => {
                    self.close_project(&project, CloseCode::ProjectDeleted);
                }
                Ok(SourceChange::Other) => {}
                Ok(SourceChange::Resync) => self.broadcast(|| Push::Resync),
                Err(ChangeError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "stream fan-out lagged; subscribers resync from history"
                    );
                    self.broadcast(|| Push::Resync);
                }
                Err(ChangeError::Closed) => {
                    self.shutdown();
                    return;
                }
            }
        }
    }

    fn has_subscribers(&self, project: &str) -> bool {
        self.lock_subs().contains_key(project)
    }

    /// Offer a delta to every subscriber of a project, dropping the ones that
    /// are too slow. The registry is locked only to list them, not while writing.
    fn offer(&self, project: &str, delta: &Arc<EncodedDelta>, batch: &mut Vec<(u64, Arc<Outbox>)>) {
        batch.clear();
        if let Some(p) = self.lock_subs().get(project) {
            batch.extend(p.iter().map(|(id, o)| (*id, Arc::clone(o))));
        }
        let mut dropped = 0usize;
        for (id, outbox) in batch.iter_mut() {
            if outbox.offer_delta(delta) == Offer::Dropped {
                dropped += 1;
            } else {
                *id = 0; // kept
            }
        }
        if dropped > 0 {
            let mut subs = self.lock_subs();
            if let Some(p) = subs.get_mut(project) {
                for (id, _) in batch.iter().filter(|(id, _)| *id != 0) {
                    p.remove(id);
                }
                if p.is_empty() {
                    subs.remove(project);
                }
            }
        }
        batch.clear();
    }

    fn broadcast(&self, make: impl Fn() -> Push) {
        let mut subs = self.lock_subs();
        for p in subs.values_mut() {
            p.retain(|_, o| o.offer(make()) == Offer::Kept);
        }
        subs.retain(|_, p| !p.is_empty());
    }

    fn close_project(&self, project: &str, code: CloseCode) {
        if let Some(p) = self.lock_subs().remove(project) {
            for o in p.values() {
                o.close_with(code);
            }
        }
    }
}
