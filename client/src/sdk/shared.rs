//! State shared by the client handle (readers) and its background tasks (the
//! single writer): the current ruleset, overrides, version watch, update feed
//! and health.

use super::overrides::Overrides;
use super::state::{RulesetState, StateSource};
use crate::digest::RulesetDigest;
use crate::entity::EntityKey;
use crate::eval::EvalOptions;
use crate::protocol::CloseCode;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// A newly applied version.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub version: u64,
    /// The ruleset digest at `version` (the state this update installed).
    pub digest: RulesetDigest,
    pub commit_time_ms: u64,
    /// The entities changed by a delta; None for a whole new ruleset (snapshot, cache, local).
    pub changed: Option<Arc<[EntityKey]>>,
}

/// The client's view of its connection and freshness.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// Where the current rules came from.
    pub source: StateSource,
    pub version: u64,
    pub connected: bool,
    /// Endpoint and node id of the current (or last) connection.
    pub endpoint: Option<String>,
    pub node_id: Option<u64>,
    /// The project's version on that node at its last heartbeat or welcome.
    pub node_head_version: Option<u64>,
    /// Versions this client is behind that node (0 when current).
    pub lag_versions: u64,
    /// Time since the last message from a node.
    pub since_last_message: Option<Duration>,
    pub last_error: Option<String>,
    pub last_close: Option<CloseCode>,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Specs the evaluator could not compile in the current rules.
    pub ruleset_problems: usize,
}

#[derive(Default)]
pub(crate) struct HealthInner {
    pub connected: bool,
    pub endpoint: Option<String>,
    pub node_id: Option<u64>,
    pub node_head_version: Option<u64>,
    pub last_message: Option<Instant>,
    pub last_error: Option<String>,
    pub last_close: Option<CloseCode>,
    pub reconnects: u64,
}

pub(crate) struct Shared {
    pub state: ArcSwap<RulesetState>,
    pub overrides: ArcSwap<Overrides>,
    pub version: watch::Sender<u64>,
    pub updates: broadcast::Sender<Update>,
    health: Mutex<HealthInner>,
    pub eval: EvalOptions,
}

impl Shared {
    pub fn new(initial: RulesetState, eval: EvalOptions) -> Self {
        let version = initial.version;
        Shared {
            state: ArcSwap::from_pointee(initial),
            overrides: ArcSwap::from_pointee(Overrides::default()),
            version: watch::channel(version).0,
            updates: broadcast::channel(256).0,
            health: Mutex::new(HealthInner::default()),
            eval,
        }
    }

    pub fn health_mut(&self) -> MutexGuard<'_, HealthInner> {
        // Health is plain data; a panic while holding it leaves nothing inconsistent.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Swap in a new state (readers see the old or the new one, never a mix).
    pub fn install(&self, state: RulesetState, changed: Option<Arc<[EntityKey]>>) {
        let update = Update {
            version: state.version,
            digest: state.digest,
            commit_time_ms: state.commit_time_ms,
            changed,
        };
        // Order matters: an update's receiver sees the new rules, and whoever saw
        // the version watch reach v (wait_for_version) subscribed after v's update.
        let version = update.version;
        self.state.store(Arc::new(state));
        let _ = self.updates.send(update); // no receivers is fine
        self.version.send_replace(version);
    }

    /// Mark rules loaded from the disk cache as confirmed by a node (same
    /// version, no update event; wakes `build()` and version waiters).
    pub fn confirm_cached(&self) {
        let held = self.state.load_full();
        if held.source == StateSource::DiskCache {
            self.state
                .store(Arc::new(held.with_source(StateSource::Network)));
            self.version.send_replace(held.version);
        }
    }

    pub fn health(&self) -> Health {
        let state = self.state.load();
        let h = self.health_mut();
        Health {
            source: state.source,
            version: state.version,
            connected: h.connected,
            endpoint: h.endpoint.clone(),
            node_id: h.node_id,
            node_head_version: h.node_head_version,
            lag_versions: h
                .node_head_version
                .map_or(0, |n| n.saturating_sub(state.version)),
            since_last_message: h.last_message.map(|t| t.elapsed()),
            last_error: h.last_error.clone(),
            last_close: h.last_close,
            reconnects: h.reconnects,
            ruleset_problems: state.problems,
        }
    }
}
