//! What a client initialize response needs beyond the compiled ruleset,
//! read once per ruleset version from the entities: each spec's
//! `targetAppIDs` and whether it declares `explicitParameters`, the
//! client-key → app maps, the app id, the parameter stores; and whether any
//! rule reads the clock (then a response depends on more than the version
//! and the user).

use crate::compile::{CompiledRuleset, Source};
use crate::entity::{Entity, EntityKind};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// Per-version metadata for client responses. Build it with
/// [`ClientMeta::new`] from the same entities the ruleset was compiled from.
#[derive(Clone, Debug, Default)]
pub struct ClientMeta {
    /// `targetAppIDs` of the specs that declare it, per spec kind.
    target_apps: [HashMap<Box<str>, Box<[String]>>; 3],
    /// Configs/experiments whose body has `explicitParameters`.
    explicit_parameters: HashSet<Box<str>>,
    app_id: Option<Value>,
    sdk_keys_to_app_ids: Option<Map<String, Value>>,
    hashed_sdk_keys_to_app_ids: Option<Map<String, Value>>,
    param_stores: Option<Map<String, Value>>,
    time_dependent: bool,
}

/// The spec kinds a response contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpecKind {
    Gate = 0,
    Config = 1,
    Layer = 2,
}

fn setting_object(body: &Value) -> Option<Map<String, Value>> {
    body.as_object().cloned()
}

impl ClientMeta {
    pub fn new<'a>(
        compiled: &CompiledRuleset,
        entities: impl IntoIterator<Item = &'a Entity>,
    ) -> ClientMeta {
        let mut meta = ClientMeta {
            time_dependent: reads_the_clock(compiled),
            ..ClientMeta::default()
        };
        for e in entities {
            let kind = match e.key.kind {
                EntityKind::Gate => SpecKind::Gate,
                EntityKind::Config => SpecKind::Config,
                EntityKind::Layer => SpecKind::Layer,
                EntityKind::IdList => continue,
                EntityKind::Setting => {
                    meta.setting(&e.key.name, &e.body);
                    continue;
                }
            };
            let name: Box<str> = e.key.name.as_str().into();
            if let Some(Value::Array(ids)) = e.body.get("targetAppIDs") {
                let ids = ids
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                meta.target_apps[kind as usize].insert(name.clone(), ids);
            }
            if kind == SpecKind::Config
                && matches!(e.body.get("explicitParameters"), Some(Value::Array(_)))
            {
                meta.explicit_parameters.insert(name);
            }
        }
        meta
    }

    fn setting(&mut self, name: &str, body: &Value) {
        match name {
            "app_id" => self.app_id = Some(body.clone()),
            "sdk_keys_to_app_ids" => self.sdk_keys_to_app_ids = setting_object(body),
            "hashed_sdk_keys_to_app_ids" => self.hashed_sdk_keys_to_app_ids = setting_object(body),
            "param_stores" => self.param_stores = setting_object(body),
            _ => {}
        }
    }

    /// True when some rule has a `current_time` condition: the same user may
    /// then get different values from the same version at different times.
    pub fn is_time_dependent(&self) -> bool {
        self.time_dependent
    }

    pub(crate) fn target_apps(&self, kind: SpecKind, name: &str) -> Option<&[String]> {
        self.target_apps[kind as usize].get(name).map(|b| &**b)
    }

    pub(crate) fn declares_explicit_parameters(&self, name: &str) -> bool {
        self.explicit_parameters.contains(name)
    }

    pub(crate) fn param_stores(&self) -> Option<&Map<String, Value>> {
        self.param_stores.as_ref()
    }

    /// The app a client key belongs to ([core] `select_app_id`): the
    /// ruleset's `app_id`, replaced by `sdk_keys_to_app_ids[key]` when that
    /// map exists, then by `hashed_sdk_keys_to_app_ids[djb2(key)]` when that
    /// one exists. Without a key: the ruleset's `app_id`.
    pub fn app_for_key(&self, client_key: Option<&str>) -> Option<&Value> {
        let mut app = self.app_id.as_ref();
        let Some(key) = client_key else {
            return app;
        };
        if let Some(m) = &self.sdk_keys_to_app_ids {
            app = m.get(key);
        }
        if let Some(m) = &self.hashed_sdk_keys_to_app_ids {
            app = m.get(&super::hashing::djb2_number(key).to_string());
        }
        app
    }
}

/// Whether a spec is left out for a client key's app ([core]
/// `should_filter_config_for_app`): only when a key is given and its app is
/// a string; then a spec without `targetAppIDs`, or whose list lacks the app,
/// is dropped.
pub(crate) fn filtered_for_app(
    target_apps: Option<&[String]>,
    client_key: Option<&str>,
    app: Option<&Value>,
) -> bool {
    if client_key.is_none() {
        return false;
    }
    let Some(Value::String(app)) = app else {
        return false;
    };
    match target_apps {
        None => true,
        Some(ids) => !ids.iter().any(|id| id == app),
    }
}

fn reads_the_clock(rs: &CompiledRuleset) -> bool {
    rs.gates
        .iter()
        .chain(&rs.configs)
        .chain(&rs.layers)
        .flat_map(|s| s.rules.iter())
        .flat_map(|r| r.conditions.iter())
        .any(|c| matches!(c.source, Source::CurrentTime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn app_selection_follows_the_core() {
        let mut m = ClientMeta {
            app_id: Some(json!("server-app")),
            ..ClientMeta::default()
        };
        assert_eq!(m.app_for_key(None), Some(&json!("server-app")));
        assert_eq!(m.app_for_key(Some("k")), Some(&json!("server-app")));
        m.sdk_keys_to_app_ids = json!({"client-k": "web"}).as_object().cloned();
        assert_eq!(m.app_for_key(Some("client-k")), Some(&json!("web")));
        assert_eq!(m.app_for_key(Some("other")), None);
        let hashed = super::super::hashing::djb2_number("client-k").to_string();
        m.hashed_sdk_keys_to_app_ids = Some(Map::from_iter([(hashed, json!("ios"))]));
        assert_eq!(m.app_for_key(Some("client-k")), Some(&json!("ios")));
    }

    #[test]
    fn filtering_only_with_a_key_and_a_string_app() {
        let web = json!("web");
        let ids = ["web".to_string()];
        let other = ["ios".to_string()];
        assert!(!filtered_for_app(None, None, Some(&web)));
        assert!(!filtered_for_app(None, Some("k"), None));
        assert!(!filtered_for_app(None, Some("k"), Some(&json!(7))));
        assert!(filtered_for_app(None, Some("k"), Some(&web)));
        assert!(!filtered_for_app(Some(&ids), Some("k"), Some(&web)));
        assert!(filtered_for_app(Some(&other), Some("k"), Some(&web)));
    }
}
