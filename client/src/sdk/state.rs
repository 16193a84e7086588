//! One immutable version of the ruleset as the SDK holds it: entities with
//! their hashes, the running digest, and the evaluator's compiled form.
//! Each applied message produces a new `RulesetState`, swapped in atomically.
//!
//! A delta costs what it changes: the entity map is persistent (`imbl`), and
//! the compiled form is updated by [`LiveRuleset::apply`], which recompiles
//! only the changed entities and the specs whose references they affect.

use crate::compile::{CompiledRuleset, EntityLookup, LiveRuleset};
use crate::digest::{entity_key_hash, RulesetDigest};
use crate::entity::{Entity, EntityKey};
use crate::protocol::{Delta, Snapshot};
use std::sync::Arc;

/// Entities with their hashes, shared between versions.
pub(crate) type EntityMap = imbl::OrdMap<EntityKey, (Arc<Entity>, [u8; 32])>;

impl EntityLookup for EntityMap {
    fn entity(&self, key: &EntityKey) -> Option<&Entity> {
        self.get(key).map(|(e, _)| &**e)
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn all(&self) -> Box<dyn Iterator<Item = &Entity> + '_> {
        Box::new(self.values().map(|(e, _)| &**e))
    }
}

/// Where the state the SDK evaluates against came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateSource {
    /// Nothing yet: every evaluation returns code defaults.
    Empty,
    /// The disk cache, while no node was reachable.
    DiskCache,
    /// A node of the cluster.
    Network,
    /// Local mode: rules given in code or a file.
    Local,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("delta from version {from} does not apply to version {have}")]
    VersionGap { have: u64, from: u64 },
    #[error("digest mismatch at version {version}: expected {expected}, computed {computed}")]
    DigestMismatch {
        version: u64,
        expected: RulesetDigest,
        computed: RulesetDigest,
    },
    #[error("invalid delta: {0}")]
    Invalid(&'static str),
}

pub struct RulesetState {
    pub version: u64,
    pub digest: RulesetDigest,
    pub commit_time_ms: u64,
    pub source: StateSource,
    pub(crate) entities: EntityMap,
    pub(crate) live: LiveRuleset,
    /// Problems the lenient compiler found (specs it left out).
    pub problems: usize,
}

impl std::fmt::Debug for RulesetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesetState")
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("source", &self.source)
            .field("entities", &self.entities.len())
            .finish_non_exhaustive()
    }
}

impl RulesetState {
    pub fn empty() -> Self {
        Self::build(
            0,
            0,
            StateSource::Empty,
            EntityMap::new(),
            RulesetDigest::EMPTY,
            None,
        )
    }

    /// A state from a whole entity list; checks `expected` when given.
    pub fn from_entities(
        version: u64,
        commit_time_ms: u64,
        source: StateSource,
        entities: Vec<Entity>,
        expected: Option<RulesetDigest>,
    ) -> Result<Self, ApplyError> {
        let mut map = EntityMap::new();
        let mut digest = RulesetDigest::EMPTY;
        for e in entities {
            let h = entity_key_hash(&e.key, &e.body);
            if let Some((_, old)) = map.insert(e.key.clone(), (Arc::new(e), h)) {
                digest.remove(&old); // a duplicate key: last one wins, as a map would
            }
            digest.add(&h);
        }
        if let Some(expected) = expected {
            if expected != digest {
                return Err(ApplyError::DigestMismatch {
                    version,
                    expected,
                    computed: digest,
                });
            }
        }
        Ok(Self::build(
            version,
            commit_time_ms,
            source,
            map,
            digest,
            None,
        ))
    }

    pub fn from_snapshot(s: Snapshot) -> Result<Self, ApplyError> {
        Self::from_entities(
            s.version,
            s.commit_time_ms,
            StateSource::Network,
            s.entities,
            Some(s.digest),
        )
    }

    /// The state after `d`; `d` must start at this state's version and end at its digest.
    pub fn apply_delta(&self, d: Delta) -> Result<Self, ApplyError> {
        if d.from_version != self.version {
            return Err(ApplyError::VersionGap {
                have: self.version,
                from: d.from_version,
            });
        }
        if d.to_version <= d.from_version {
            return Err(ApplyError::Invalid("to_version <= from_version"));
        }
        let mut map = self.entities.clone();
        let mut digest = self.digest;
        let mut changed: Vec<EntityKey> = Vec::with_capacity(d.deletes.len() + d.upserts.len());
        for key in d.deletes {
            if let Some((_, h)) = map.remove(&key) {
                digest.remove(&h);
            }
            changed.push(key);
        }
        for e in d.upserts {
            let h = entity_key_hash(&e.key, &e.body);
            changed.push(e.key.clone());
            if let Some((_, old)) = map.insert(e.key.clone(), (Arc::new(e), h)) {
                digest.remove(&old);
            }
            digest.add(&h);
        }
        if digest != d.digest {
            return Err(ApplyError::DigestMismatch {
                version: d.to_version,
                expected: d.digest,
                computed: digest,
            });
        }
        let changed: Vec<&EntityKey> = changed.iter().collect();
        let live = self.live.apply(&map, &changed);
        Ok(Self::build(
            d.to_version,
            d.commit_time_ms,
            StateSource::Network,
            map,
            digest,
            Some(live),
        ))
    }

    /// `live`: the compiled form of `entities` when already known.
    fn build(
        version: u64,
        commit_time_ms: u64,
        source: StateSource,
        entities: EntityMap,
        digest: RulesetDigest,
        live: Option<LiveRuleset>,
    ) -> Self {
        let live = live.unwrap_or_else(|| LiveRuleset::build(&entities));
        RulesetState {
            version,
            digest,
            commit_time_ms,
            source,
            entities,
            problems: live.problem_count(),
            live,
        }
    }

    /// The same rules, marked as coming from `source` (shares everything).
    pub(crate) fn with_source(&self, source: StateSource) -> Self {
        Self::build(
            self.version,
            self.commit_time_ms,
            source,
            self.entities.clone(),
            self.digest,
            Some(self.live.clone()),
        )
    }

    /// The evaluator's form of these rules.
    pub fn compiled(&self) -> &CompiledRuleset {
        self.live.compiled()
    }

    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    pub fn entities(&self) -> impl Iterator<Item = &Entity> {
        self.entities.values().map(|(e, _)| &**e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::EntityKind;
    use crate::protocol::SnapshotReason;
    use serde_json::json;

    fn e(name: &str, n: i64) -> Entity {
        Entity {
            key: EntityKey::new(EntityKind::Gate, name),
            body: json!({ "n": n }),
        }
    }

    fn digest_of(entities: &[Entity]) -> RulesetDigest {
        RulesetDigest::from_hashes(
            &entities
                .iter()
                .map(|e| entity_key_hash(&e.key, &e.body))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn snapshot_then_delta_checks_digests_and_versions() {
        let snap = Snapshot {
            version: 4,
            digest: digest_of(&[e("a", 1), e("b", 1)]),
            commit_time_ms: 1,
            reason: SnapshotReason::Initial,
            entities: vec![e("a", 1), e("b", 1)],
            more: false,
        };
        let s = RulesetState::from_snapshot(snap.clone()).unwrap();
        assert_eq!((s.version, s.entity_count()), (4, 2));
        let d = Delta {
            from_version: 4,
            to_version: 5,
            commit_time_ms: 2,
            upserts: vec![e("a", 2), e("c", 1)],
            deletes: vec![EntityKey::new(EntityKind::Gate, "b")],
            digest: digest_of(&[e("a", 2), e("c", 1)]),
        };
        let s2 = s.apply_delta(d.clone()).unwrap();
        assert_eq!((s2.version, s2.entity_count()), (5, 2));
        // Wrong base version, wrong digest.
        assert!(matches!(
            s2.apply_delta(d.clone()),
            Err(ApplyError::VersionGap { have: 5, from: 4 })
        ));
        let bad = Delta {
            digest: RulesetDigest::EMPTY,
            ..d
        };
        assert!(matches!(
            s.apply_delta(bad),
            Err(ApplyError::DigestMismatch { version: 5, .. })
        ));
        let bad_snap = Snapshot {
            digest: RulesetDigest::EMPTY,
            ..snap
        };
        assert!(RulesetState::from_snapshot(bad_snap).is_err());
    }

    /// A delta for `next` on top of `s` (upserts of what changed, deletes of what went).
    fn delta_to(s: &RulesetState, next: &[Entity]) -> Delta {
        let keys: std::collections::HashSet<&EntityKey> = next.iter().map(|e| &e.key).collect();
        Delta {
            from_version: s.version,
            to_version: s.version + 1,
            commit_time_ms: 0,
            upserts: next
                .iter()
                .filter(|e| s.entities.get(&e.key).is_none_or(|(old, _)| **old != **e))
                .cloned()
                .collect(),
            deletes: s
                .entities
                .keys()
                .filter(|k| !keys.contains(k))
                .cloned()
                .collect(),
            digest: digest_of(next),
        }
    }

    /// Deltas go through the incremental compiler; the result evaluates and
    /// counts problems like a state built whole from the same entities.
    #[test]
    fn deltas_evaluate_like_a_whole_state() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases");
        let dcs = std::fs::read(dir.join("gates.dcs.json")).unwrap();
        let ids = std::fs::read(dir.join("gates.id_lists.json")).unwrap();
        let mut entities = crate::dcs::entities_from_dcs(&dcs).unwrap();
        entities.extend(crate::dcs::id_list_entities(&ids).unwrap());
        let users: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(dir.join("gates.users.json")).unwrap()).unwrap();
        let users: Vec<crate::User> = users
            .iter()
            .take(20)
            .map(|u| crate::User::from_json(u).unwrap())
            .collect();
        let gate = |n: &str| EntityKey::new(EntityKind::Gate, n);
        let without = |es: &[Entity], k: &EntityKey| -> Vec<Entity> {
            es.iter().filter(|e| e.key != *k).cloned().collect()
        };
        // Referenced gates and a segment list go and come back; one gate changes.
        let mut steps = vec![without(&entities, &gate("email_domain"))];
        steps.push(without(&steps[0], &gate("segment:beta_testers")));
        steps.push(without(
            &steps[1],
            &EntityKey::new(EntityKind::IdList, "beta_testers"),
        ));
        let mut changed = entities.clone();
        if let Some(e) = changed.iter_mut().find(|e| e.key == gate("rollout_30")) {
            e.body["enabled"] = json!(false);
        }
        steps.push(changed);
        steps.push(entities.clone());

        let opts = crate::EvalOptions::default().with_now_ms(1_750_000_000_000);
        let mut s = RulesetState::from_entities(1, 0, StateSource::Network, entities.clone(), None)
            .unwrap();
        for next in steps {
            s = s.apply_delta(delta_to(&s, &next)).unwrap();
            let whole = RulesetState::from_entities(s.version, 0, StateSource::Network, next, None)
                .unwrap();
            assert!(!s.live.compiled_whole(), "applied incrementally");
            assert_eq!(s.problems, whole.problems);
            let (a, b) = (s.compiled(), whole.compiled());
            let names: Vec<&str> = b.gate_names().collect();
            assert_eq!(a.gate_names().count(), names.len());
            for u in &users {
                for g in &names {
                    assert_eq!(a.check_gate(u, g, &opts), b.check_gate(u, g, &opts), "{g}");
                }
            }
        }
    }
}
