//! Who may open a stream: a key resolves to a project and a key kind.
//!
//! A node resolves keys with `crate::auth::ReplicatedKeys` (keys created
//! through the Admin API), falling back to a static map from the node's
//! config ([`StaticKeys`], `[stream.keys]`).

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// May read the whole ruleset: streams and polling.
    Server,
    /// For client-side SDKs (not served by the stream).
    Client,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyGrant {
    pub project: String,
    pub kind: KeyKind,
}

pub trait KeyResolver: Send + Sync + 'static {
    /// The grant of a key, or None if the key is unknown or revoked.
    fn resolve(&self, key: &str) -> Option<KeyGrant>;
}

/// A key map from configuration; `revoke` removes a key at run time.
#[derive(Debug, Default)]
pub struct StaticKeys {
    keys: RwLock<HashMap<String, KeyGrant>>,
}

impl StaticKeys {
    pub fn new(keys: HashMap<String, KeyGrant>) -> Self {
        StaticKeys {
            keys: RwLock::new(keys),
        }
    }

    pub fn insert(&self, key: impl Into<String>, grant: KeyGrant) {
        self.write().insert(key.into(), grant);
    }

    /// Forget a key. Call `StreamHub::recheck_keys` to close its streams now;
    /// otherwise they close at their next heartbeat.
    pub fn revoke(&self, key: &str) -> bool {
        self.write().remove(key).is_some()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, KeyGrant>> {
        // A panic elsewhere while holding the lock cannot leave a HashMap half-updated
        // in a way that matters here, so a poisoned lock is still usable.
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl KeyResolver for StaticKeys {
    fn resolve(&self, key: &str) -> Option<KeyGrant> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_keys_resolve_and_revoke() {
        let keys = StaticKeys::default();
        let grant = KeyGrant {
            project: "default".into(),
            kind: KeyKind::Server,
        };
        keys.insert("k1", grant.clone());
        assert_eq!(keys.resolve("k1"), Some(grant));
        assert_eq!(keys.resolve("k2"), None);
        assert!(keys.revoke("k1"));
        assert_eq!(keys.resolve("k1"), None);
    }

    #[test]
    fn grants_deserialize_from_config() {
        let map: HashMap<String, KeyGrant> =
            serde_json::from_str(r#"{"srv-1": {"project": "p", "kind": "server"}}"#).unwrap();
        assert_eq!(map["srv-1"].kind, KeyKind::Server);
    }
}
