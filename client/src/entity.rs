//! The unit of replication: one named entity of a ruleset.
//!
//! The replicated store keeps a ruleset as a map from [`EntityKey`] to a JSON
//! body and never interprets the body itself; the evaluator's model is built
//! from those entities. Keeping the store's view this small is what lets a
//! commit touch only the entities it changes (and re-hash only those).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which part of a `download_config_specs` document an entity belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// `feature_gates`: gates, segments (`segment:<x>`) and holdouts.
    Gate,
    /// `dynamic_configs`: dynamic configs, experiments and autotunes.
    Config,
    /// `layer_configs`: layers.
    Layer,
    /// The members of one ID list (segment list), as hashed IDs.
    IdList,
    /// Any other top-level DCS field (`app_id`, `default_environment`, ...),
    /// keyed by field name, so a ruleset round-trips without loss.
    Setting,
}

impl EntityKind {
    pub const ALL: [EntityKind; 5] = [
        EntityKind::Gate,
        EntityKind::Config,
        EntityKind::Layer,
        EntityKind::IdList,
        EntityKind::Setting,
    ];

    /// The stable name used on the wire, in digests and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Gate => "gate",
            EntityKind::Config => "config",
            EntityKind::Layer => "layer",
            EntityKind::IdList => "id_list",
            EntityKind::Setting => "setting",
        }
    }

    pub fn parse(s: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of an entity within a project.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityKey {
    pub kind: EntityKind,
    pub name: String,
}

impl EntityKey {
    pub fn new(kind: EntityKind, name: impl Into<String>) -> Self {
        EntityKey {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.kind, self.name)
    }
}

/// One entity: its key and its JSON body (a DCS spec object for gates,
/// configs and layers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub key: EntityKey,
    pub body: serde_json::Value,
}
