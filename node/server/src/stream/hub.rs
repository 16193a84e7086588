//! Fan-out of applied versions to every connection of a project.
//!
//! One task reads the node's change feed, encodes each version's delta once and
//! offers it to each subscriber's bounded queue with `try_send`: apply and the
//! other subscribers never wait for a slow one. A full queue marks the
//! subscriber too slow and drops it; its connection closes with `4004`.

use super::config::StreamConfig;
use super::keys::KeyResolver;
use super::source::{ChangeError, ChangeReceiver, SourceChange, StreamSource};
use axum::extract::ws::Utf8Bytes;
use flagraft_client::protocol::{encode_server, CloseCode, ServerMessage, SnapshotReason};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

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
    pub text: Utf8Bytes,
}

/// Why the hub dropped a subscriber (0: it did not).
#[derive(Debug, Default)]
pub(crate) struct CloseSlot(AtomicU16);

impl CloseSlot {
    fn set(&self, code: CloseCode) {
        let _ = self
            .0
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn get(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.0.load(Ordering::Acquire))
    }
}

struct Subscriber {
    tx: mpsc::Sender<Push>,
    close: Arc<CloseSlot>,
}

type Registry = HashMap<Arc<str>, HashMap<u64, Subscriber>>;

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
    pub rx: mpsc::Receiver<Push>,
    pub close: Arc<CloseSlot>,
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
        tokio::spawn(async move { hub.fanout(changes).await })
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

    /// Register a connection for `project`; None when the node is full.
    pub(crate) fn register(self: &Arc<Self>, project: &str) -> Option<Registration<S>> {
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
        let (tx, rx) = mpsc::channel(self.config.backlog);
        let close = Arc::new(CloseSlot::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let project: Arc<str> = Arc::from(project);
        self.lock_subs()
            .entry(Arc::clone(&project))
            .or_default()
            .insert(
                id,
                Subscriber {
                    tx,
                    close: Arc::clone(&close),
                },
            );
        Some(Registration {
            hub: Arc::clone(self),
            project,
            id,
            rx,
            close,
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
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
            };
            match change {
                Ok(SourceChange::Version { project, record }) => {
                    if !self.has_subscribers(&project) {
                        continue;
                    }
                    let text = match encode_server(&ServerMessage::Delta(record.to_delta())) {
                        Ok(t) => t,
                        Err(e) => {
                            // Subscribers will miss this version and fill the gap from history.
                            tracing::error!(project, version = record.version, error = %e, "cannot encode delta");
                            continue;
                        }
                    };
                    let push = Push::Delta(Arc::new(EncodedDelta {
                        from_version: record.version.saturating_sub(1),
                        to_version: record.version,
                        text: Utf8Bytes::from(text),
                    }));
                    self.offer(&project, &push);
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

    /// Offer one push to every subscriber of a project, dropping the ones that are full.
    fn offer(&self, project: &str, push: &Push) {
        let mut subs = self.lock_subs();
        let Some(p) = subs.get_mut(project) else {
            return;
        };
        p.retain(|_, s| try_push(s, push.clone()));
        if p.is_empty() {
            subs.remove(project);
        }
    }

    fn broadcast(&self, make: impl Fn() -> Push) {
        let mut subs = self.lock_subs();
        for p in subs.values_mut() {
            p.retain(|_, s| try_push(s, make()));
        }
        subs.retain(|_, p| !p.is_empty());
    }

    fn close_project(&self, project: &str, code: CloseCode) {
        if let Some(p) = self.lock_subs().remove(project) {
            for s in p.values() {
                s.close.set(code);
            }
        }
    }
}

/// False when the subscriber must be dropped (its queue is full or its connection gone).
fn try_push(s: &Subscriber, push: Push) -> bool {
    match s.tx.try_send(push) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            s.close.set(CloseCode::TooSlow);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
