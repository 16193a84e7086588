//! Where client responses get their rules: a project's head and entities
//! (the node's state machine; an in-memory fake in tests), compiled once per
//! version and cached.

use flagraft_client::digest::RulesetDigest;
use flagraft_client::entity::Entity;
use flagraft_client::gcir::ClientRuleset;
use flagraft_store::{NodeId, StateMachineStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A project's applied version on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulesetHead {
    pub version: u64,
    pub digest: RulesetDigest,
    pub commit_time_ms: u64,
}

pub trait RulesetSource: Send + Sync + 'static {
    fn node_id(&self) -> u64;
    fn head(&self, project: &str) -> Option<RulesetHead>;
    /// The project's entities with the head they are at (one consistent copy).
    fn entities(&self, project: &str) -> Option<(RulesetHead, Vec<Entity>)>;
    /// Changes whenever anything is applied.
    fn applied_watch(&self) -> watch::Receiver<u64>;
}

/// The node's state machine as a [`RulesetSource`].
#[derive(Clone)]
pub struct StoreRulesets {
    sm: StateMachineStore,
    node_id: NodeId,
}

impl StoreRulesets {
    pub fn new(sm: StateMachineStore, node_id: NodeId) -> Self {
        StoreRulesets { sm, node_id }
    }
}

impl RulesetSource for StoreRulesets {
    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn head(&self, project: &str) -> Option<RulesetHead> {
        self.sm.head(project).map(|h| RulesetHead {
            version: h.version,
            digest: h.digest,
            commit_time_ms: h.commit_time_ms,
        })
    }

    fn entities(&self, project: &str) -> Option<(RulesetHead, Vec<Entity>)> {
        let rs = self.sm.ruleset(project)?;
        let head = RulesetHead {
            version: rs.head.version,
            digest: rs.head.digest,
            commit_time_ms: rs.head.commit_time_ms,
        };
        // Stored bodies were checked to be JSON when they were applied or loaded; one that
        // no longer parses is a corrupt store: no answer rather than a wrong one.
        match rs.to_entities() {
            Ok(entities) => Some((head, entities)),
            Err(e) => {
                tracing::error!(project, error = %e, "cannot read the project's bodies");
                None
            }
        }
    }

    fn applied_watch(&self) -> watch::Receiver<u64> {
        self.sm.applied_watch()
    }
}

/// The compiled ruleset of each project at its latest seen version.
#[derive(Default)]
pub struct RulesetCache {
    map: Mutex<HashMap<Arc<str>, Arc<ClientRuleset>>>,
    /// One compilation at a time: requests arriving together on a new
    /// version wait for it instead of each compiling it.
    building: tokio::sync::Mutex<()>,
}

impl RulesetCache {
    pub(crate) fn cached(&self, project: &str) -> Option<Arc<ClientRuleset>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(project).cloned()
    }

    /// The project's ruleset at its current head (None: no such project).
    /// Compiling a new version runs on the blocking pool.
    pub async fn current<S: RulesetSource>(
        &self,
        source: &Arc<S>,
        project: &str,
    ) -> Option<Arc<ClientRuleset>> {
        let head = source.head(project)?;
        if let Some(c) = self.cached(project) {
            if c.version == head.version {
                return Some(c);
            }
        }
        let _building = self.building.lock().await;
        if let Some(c) = self.cached(project) {
            if c.version >= head.version {
                return Some(c);
            }
        }
        let src = Arc::clone(source);
        let p = project.to_string();
        let built = tokio::task::spawn_blocking(move || {
            let (head, entities) = src.entities(&p)?;
            Some(Arc::new(ClientRuleset::new(
                head.version,
                head.digest,
                head.commit_time_ms,
                &entities,
            )))
        })
        .await
        .ok()
        .flatten()?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let keep = match map.get(project) {
            Some(c) if c.version > built.version => Arc::clone(c),
            _ => {
                map.insert(Arc::from(project), Arc::clone(&built));
                built
            }
        };
        Some(keep)
    }
}
