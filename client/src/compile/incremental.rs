//! Applying a delta to a compiled ruleset in O(what it changes), with the
//! same evaluation results (and the same problem count) as compiling the
//! resulting entities whole with [`CompiledRuleset::compile_lenient`].
//!
//! # What a delta recompiles
//!
//! Specs live in slots that never move (`SpecTable`, in `compile/table.rs`); a
//! compiled reference (`pass_gate`, `configDelegate`, `experiment_group`)
//! holds a slot, everything else about other entities is looked up by name at
//! evaluation (ID lists, settings). So a delta recompiles:
//!
//! 1. the entities it upserts (a spec kept readable keeps its slot);
//! 2. the *referrers* of every name that starts or stops existing (a spec
//!    added, deleted, or made unreadable; an ID list added or deleted): their
//!    compiled references and their "does not exist" warnings change. The
//!    book keeps a reverse index (name → referrers) for this.
//!
//! Settings (`app_id`, `default_environment`) are read by evaluation from the
//! ruleset, so changing one recompiles nothing.
//!
//! # Cycles and the entity limit
//!
//! A dependency cycle is an error of the whole ruleset (the node refuses it,
//! so it reaches the SDK only from local rules or in theory). A new cycle
//! must go through an upserted spec: a new edge either starts at one or ends
//! at a newly existing, hence upserted, spec. A DFS from the upserted specs
//! therefore finds it. When it does, or when the ruleset is over
//! [`MAX_ENTITIES`], the ruleset is compiled whole (as the lenient compiler
//! reports it) and stays so for following deltas until it is clean again.
//!
//! # Cost
//!
//! O(k · (spec size + log n)) for k changed entities plus a shallow copy of
//! the chunk lists (n / 64 pointers): measured by `cargo bench -p
//! flagraft-client --bench delta`.

use super::{id_list_members, CSpec, CompiledRuleset, Compiler};
use crate::entity::{Entity, EntityKey, EntityKind};
use crate::limits::MAX_ENTITIES;
use crate::model::Spec;
use crate::ops::Sets;
use hashbrown::HashSet;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Read access to the entities a [`LiveRuleset`] is compiled from (the
/// ruleset *after* the delta being applied).
pub trait EntityLookup {
    fn entity(&self, key: &EntityKey) -> Option<&Entity>;
    fn count(&self) -> usize;
    fn all(&self) -> Box<dyn Iterator<Item = &Entity> + '_>;
}

impl EntityLookup for BTreeMap<EntityKey, Entity> {
    fn entity(&self, key: &EntityKey) -> Option<&Entity> {
        self.get(key)
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn all(&self) -> Box<dyn Iterator<Item = &Entity> + '_> {
        Box::new(self.values())
    }
}

/// A compiled ruleset that can be updated by deltas. Immutable: applying a
/// delta returns a new one, sharing everything unchanged with this one.
#[derive(Clone, Debug, Default)]
pub struct LiveRuleset {
    compiled: CompiledRuleset,
    book: Book,
}

type Key = Arc<EntityKey>;

/// What the compiled form does not say but a delta needs.
#[derive(Clone, Debug, Default)]
struct Book {
    /// Every gate, config, layer and ID list entity (readable or not).
    info: imbl::HashMap<Key, Info>,
    /// Referenced name → the specs that reference it.
    dependents: imbl::HashMap<Key, imbl::HashSet<Key>>,
    /// Empty slots of the gate, config and layer tables.
    free: [imbl::Vector<u32>; 3],
    /// Problems the lenient compiler would report for the whole ruleset.
    problems: usize,
    /// Compiled whole (a cycle, or too many entities): so is the next delta.
    whole: bool,
}

#[derive(Clone, Debug)]
struct Info {
    /// The slot of a readable spec.
    slot: Option<u32>,
    /// Its own problems and its "does not exist" warnings.
    problems: usize,
    /// The names it references (sorted, without duplicates).
    refs: Arc<[Key]>,
}

/// One spec entity to (re)compile in this delta.
struct Work {
    key: Key,
    slot: Option<u32>,
    spec: Option<Spec>,
    problems: usize,
}

fn table_no(kind: EntityKind) -> Option<usize> {
    match kind {
        EntityKind::Gate => Some(0),
        EntityKind::Config => Some(1),
        EntityKind::Layer => Some(2),
        EntityKind::IdList | EntityKind::Setting => None,
    }
}

const KINDS: [EntityKind; 3] = [EntityKind::Gate, EntityKind::Config, EntityKind::Layer];

impl LiveRuleset {
    /// Compile a whole ruleset.
    pub fn build(entities: &dyn EntityLookup) -> LiveRuleset {
        let keys: Vec<&EntityKey> = entities.all().map(|e| &e.key).collect();
        LiveRuleset::default().update(entities, &keys)
    }

    /// The ruleset after a delta: `entities` is the ruleset after it,
    /// `changed` the keys it upserted or deleted (duplicates allowed).
    pub fn apply(&self, entities: &dyn EntityLookup, changed: &[&EntityKey]) -> LiveRuleset {
        if self.book.whole {
            return LiveRuleset::build(entities);
        }
        self.update(entities, changed)
    }

    pub fn compiled(&self) -> &CompiledRuleset {
        &self.compiled
    }

    /// How many problems (errors and warnings) the lenient compiler reports
    /// for this ruleset.
    pub fn problem_count(&self) -> usize {
        self.book.problems
    }

    /// Whether the last update compiled the whole ruleset (a dependency
    /// cycle or too many entities) instead of what changed.
    pub fn compiled_whole(&self) -> bool {
        self.book.whole
    }

    fn whole(entities: &dyn EntityLookup) -> LiveRuleset {
        let (compiled, problems) = CompiledRuleset::compile_lenient(entities.all());
        LiveRuleset {
            compiled,
            book: Book {
                problems: problems.len(),
                whole: true,
                ..Book::default()
            },
        }
    }

    fn update(&self, entities: &dyn EntityLookup, changed: &[&EntityKey]) -> LiveRuleset {
        if entities.count() > MAX_ENTITIES {
            return LiveRuleset::whole(entities);
        }
        let mut next = self.clone();
        let mut seen: HashSet<&EntityKey> = HashSet::with_capacity(changed.len());
        let mut work = Vec::new();
        let mut appeared_or_gone = Vec::new();
        // In the given order, so new specs get slots deterministically.
        for &key in changed {
            if seen.insert(key) {
                next.take(entities, key, &mut work, &mut appeared_or_gone);
            }
        }
        let changed = seen;
        let mut referrers: HashSet<Key> = HashSet::new();
        for name in &appeared_or_gone {
            if let Some(set) = next.book.dependents.get(name) {
                referrers.extend(set.iter().filter(|r| !changed.contains(&***r)).cloned());
            }
        }
        for r in referrers {
            next.retake(entities, r, &mut work);
        }
        let roots = next.compile(work);
        if next.has_cycle(&roots) {
            return LiveRuleset::whole(entities);
        }
        next
    }

    /// Forget what the book knows about `key`.
    fn forget(&mut self, key: &EntityKey) -> Option<Info> {
        let old = self.book.info.remove(key)?;
        self.book.problems = self.book.problems.saturating_sub(old.problems);
        for r in old.refs.iter() {
            if let Some(set) = self.book.dependents.get_mut(r) {
                set.remove(key);
                if set.is_empty() {
                    self.book.dependents.remove(r);
                }
            }
        }
        Some(old)
    }

    fn remember(&mut self, key: Key, info: Info) {
        self.book.problems += info.problems;
        for r in info.refs.iter() {
            match self.book.dependents.get_mut(r) {
                Some(set) => {
                    set.insert(key.clone());
                }
                None => {
                    self.book
                        .dependents
                        .insert(r.clone(), imbl::HashSet::unit(key.clone()));
                }
            }
        }
        self.book.info.insert(key, info);
    }

    /// Phase 1 for one changed key: drop its old state, update the name
    /// indexes and slots, and queue specs for compilation.
    fn take(
        &mut self,
        entities: &dyn EntityLookup,
        key: &EntityKey,
        work: &mut Vec<Work>,
        appeared_or_gone: &mut Vec<Key>,
    ) {
        let old = self.forget(key);
        let entity = entities.entity(key);
        let shared_key = Arc::new(key.clone());
        let Some(t) = table_no(key.kind) else {
            let rs = &mut self.compiled;
            if key.kind == EntityKind::Setting {
                rs.set_setting(&key.name, entity.map(|e| &e.body));
                return;
            }
            let existed = rs.id_lists.contains_key(&key.name);
            let members = entity.map(|e| id_list_members(key, &e.body));
            match &members {
                Some(Ok(_)) => {}
                _ => rs.id_lists.remove(&key.name),
            }
            if let Some(m) = members {
                let problems = match m {
                    Ok(set) => {
                        rs.id_lists.insert(key.name.as_str().into(), Arc::new(set));
                        0
                    }
                    Err(_) => 1,
                };
                let info = Info {
                    slot: None,
                    problems,
                    refs: Arc::new([]),
                };
                self.remember(shared_key.clone(), info);
            }
            if existed != self.compiled.id_lists.contains_key(&key.name) {
                appeared_or_gone.push(shared_key);
            }
            return;
        };
        let mut problems = Vec::new();
        let spec = entity.and_then(|e| Spec::from_body(&e.key, &e.body, &mut problems));
        let old_slot = old.and_then(|i| i.slot);
        let rs = &mut self.compiled;
        let (table, index) = match t {
            0 => (&mut rs.gates, &mut rs.gate_index),
            1 => (&mut rs.configs, &mut rs.config_index),
            _ => (&mut rs.layers, &mut rs.layer_index),
        };
        let slot = match (&spec, old_slot) {
            (Some(_), Some(s)) => Some(s),
            (Some(_), None) => {
                let s = match self.book.free[t].pop_back() {
                    Some(s) => s,
                    None => table.push_empty(),
                };
                index.insert(key.name.as_str().into(), s);
                appeared_or_gone.push(shared_key.clone());
                Some(s)
            }
            (None, Some(s)) => {
                table.set(s, None);
                index.remove(&key.name);
                self.book.free[t].push_back(s);
                appeared_or_gone.push(shared_key.clone());
                None
            }
            (None, None) => None,
        };
        if entity.is_some() {
            work.push(Work {
                key: shared_key,
                slot,
                spec,
                problems: problems.len(),
            });
        }
    }

    /// Phase 2: an unchanged spec that references a name which appeared or
    /// went away is compiled again.
    fn retake(&mut self, entities: &dyn EntityLookup, key: Key, work: &mut Vec<Work>) {
        let Some(old) = self.forget(&key) else {
            return;
        };
        let Some(e) = entities.entity(&key) else {
            return;
        };
        let mut problems = Vec::new();
        let spec = Spec::from_body(&e.key, &e.body, &mut problems);
        work.push(Work {
            key,
            slot: old.slot,
            spec,
            problems: problems.len(),
        });
    }

    /// Phase 3: compile the queued specs against the updated indexes and
    /// put them in their slots. Returns the (table, slot) of each.
    fn compile(&mut self, work: Vec<Work>) -> Vec<(u8, u32)> {
        let mut done: Vec<(Key, Info, Option<CSpec>)> = Vec::with_capacity(work.len());
        for w in work {
            let t = table_no(w.key.kind).unwrap_or(0);
            let (info, compiled) = match (&w.spec, w.slot) {
                (Some(spec), Some(slot)) => {
                    let mut problems = Vec::new();
                    let c = Compiler {
                        rs: &self.compiled,
                        problems: &mut problems,
                        sets: Sets::Build,
                    }
                    .spec(KINDS[t], spec);
                    let info = Info {
                        slot: Some(slot),
                        problems: w.problems
                            + problems.len()
                            + reference_warnings(&self.compiled, spec),
                        refs: references(spec),
                    };
                    (info, Some(c))
                }
                _ => {
                    let info = Info {
                        slot: None,
                        problems: w.problems,
                        refs: Arc::new([]),
                    };
                    (info, None)
                }
            };
            done.push((w.key, info, compiled));
        }
        let mut roots = Vec::with_capacity(done.len());
        for (key, info, compiled) in done {
            if let (Some(c), Some(slot)) = (compiled, info.slot) {
                let t = table_no(key.kind).unwrap_or(0);
                let table = match t {
                    0 => &mut self.compiled.gates,
                    1 => &mut self.compiled.configs,
                    _ => &mut self.compiled.layers,
                };
                table.set(slot, Some(Arc::new(c)));
                roots.push((t as u8, slot));
            }
            self.remember(key, info);
        }
        roots
    }

    /// Phase 4: whether a dependency cycle is reachable from `roots`
    /// (visits only what the roots reach).
    fn has_cycle(&self, roots: &[(u8, u32)]) -> bool {
        let mut found = false;
        crate::validate::walk_cycles(
            roots.iter().copied(),
            |n| edges(&self.compiled, n),
            |_, _| {
                found = true;
                std::ops::ControlFlow::Break(())
            },
        );
        found
    }
}

/// The dependency edges of a compiled spec (as `validate` defines them).
fn edges(rs: &CompiledRuleset, (t, slot): (u8, u32)) -> Vec<(u8, u32)> {
    let spec = match t {
        0 => rs.gates.get(slot),
        1 => rs.configs.get(slot),
        _ => rs.layers.get(slot),
    };
    spec.map(crate::validate::spec_edges).unwrap_or_default()
}

fn is_segment_list_operator(op: Option<&str>) -> bool {
    matches!(op, Some("in_segment_list" | "not_in_segment_list"))
}

/// Every name a spec's compiled form or warnings depend on.
fn references(spec: &Spec) -> Arc<[Key]> {
    let mut out: Vec<EntityKey> = Vec::new();
    for rule in &spec.rules {
        if let Some(d) = &rule.config_delegate {
            out.push(EntityKey::new(EntityKind::Config, d.as_str()));
        }
        for c in &rule.conditions {
            match c.condition_type.as_str() {
                "pass_gate" | "fail_gate" => {
                    if let Some(g) = c.target_value.as_str() {
                        out.push(EntityKey::new(EntityKind::Gate, g));
                    }
                }
                "experiment_group" => out.push(EntityKey::new(
                    EntityKind::Config,
                    c.field.as_deref().unwrap_or(""),
                )),
                _ => {}
            }
            if is_segment_list_operator(c.operator.as_deref()) {
                if let Some(list) = c.target_value.as_str() {
                    out.push(EntityKey::new(EntityKind::IdList, list));
                }
            }
        }
    }
    if let Some(layer) = &spec.layer {
        out.push(EntityKey::new(EntityKind::Layer, layer.as_str()));
    }
    out.sort();
    out.dedup();
    out.into_iter().map(Arc::new).collect()
}

/// How many "does not exist" warnings `validate::check_references` gives
/// this spec (the same checks, counted).
fn reference_warnings(rs: &CompiledRuleset, spec: &Spec) -> usize {
    let mut n = 0;
    for rule in &spec.rules {
        if let Some(d) = &rule.config_delegate {
            n += usize::from(!rs.config_index.contains_key(d));
        }
        for c in &rule.conditions {
            match c.condition_type.as_str() {
                "pass_gate" | "fail_gate" => {
                    if let Some(g) = c.target_value.as_str() {
                        n += usize::from(!rs.gate_index.contains_key(g));
                    }
                }
                "experiment_group" => {
                    let f = c.field.as_deref().unwrap_or("");
                    n += usize::from(!rs.config_index.contains_key(f));
                }
                _ => {}
            }
            if is_segment_list_operator(c.operator.as_deref()) {
                if let Some(list) = c.target_value.as_str() {
                    n += usize::from(!rs.has_id_list(list));
                }
            }
        }
    }
    if let Some(layer) = &spec.layer {
        n += usize::from(!rs.layer_index.contains_key(layer));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::User;
    use crate::EvalOptions;
    use serde_json::{json, Value};

    fn gate(name: &str, conditions: Value) -> Entity {
        Entity {
            key: EntityKey::new(EntityKind::Gate, name),
            body: json!({"name": name, "type": "feature_gate", "entity": "feature_gate",
                "salt": name, "enabled": true, "defaultValue": false, "idType": "userID",
                "rules": [{"name": "r", "id": "r", "salt": "r", "passPercentage": 100,
                    "conditions": conditions, "returnValue": true, "idType": "userID"}]}),
        }
    }

    fn pass(g: &str) -> Value {
        json!([{"type": "pass_gate", "targetValue": g, "idType": "userID"}])
    }

    struct Rules(BTreeMap<EntityKey, Entity>);

    impl Rules {
        fn new() -> Self {
            Rules(BTreeMap::new())
        }

        /// Apply upserts/deletes to both the live ruleset and the map.
        fn apply(&mut self, live: &LiveRuleset, up: Vec<Entity>, del: &[EntityKey]) -> LiveRuleset {
            let mut keys: Vec<EntityKey> = del.to_vec();
            for k in del {
                self.0.remove(k);
            }
            for e in up {
                keys.push(e.key.clone());
                self.0.insert(e.key.clone(), e);
            }
            let refs: Vec<&EntityKey> = keys.iter().collect();
            live.apply(&self.0, &refs)
        }

        fn full(&self) -> (CompiledRuleset, usize) {
            let (rs, p) = CompiledRuleset::compile_lenient(self.0.values());
            (rs, p.len())
        }
    }

    fn value(rs: &CompiledRuleset, g: &str) -> bool {
        let user = User::from_json(&json!({"userID": "u"})).unwrap();
        rs.check_gate(&user, g, &EvalOptions::default()).value
    }

    #[test]
    fn a_gate_appearing_and_going_recompiles_its_referrers() {
        let mut r = Rules::new();
        let live = r.apply(&LiveRuleset::default(), vec![gate("a", pass("b"))], &[]);
        assert!(!value(live.compiled(), "a"));
        assert_eq!(live.problem_count(), r.full().1);
        assert_eq!(
            live.problem_count(),
            1,
            "a names a gate that does not exist"
        );

        let live = r.apply(&live, vec![gate("b", json!([{"type": "public"}]))], &[]);
        assert!(value(live.compiled(), "a"));
        assert_eq!(live.problem_count(), 0);

        let b = EntityKey::new(EntityKind::Gate, "b");
        let live = r.apply(&live, vec![], std::slice::from_ref(&b));
        assert!(!value(live.compiled(), "a"));
        assert_eq!(live.problem_count(), 1);

        // b comes back in b's old slot's neighbourhood; c reuses the freed slot.
        let live = r.apply(
            &live,
            vec![gate("c", json!([{"type": "public"}])), gate("b", pass("c"))],
            &[],
        );
        assert!(value(live.compiled(), "a"));
        assert_eq!((live.problem_count(), r.full().1), (0, 0));
        assert!(!live.compiled_whole());
    }

    /// What makes a delta cost O(changed): every spec it does not touch is
    /// the previous version's allocation, not a recompiled copy.
    #[test]
    fn a_one_gate_delta_shares_every_other_spec() {
        let mut r = Rules::new();
        let mut up: Vec<Entity> = (0..1000)
            .map(|i| gate(&format!("g{i}"), json!([{"type": "public"}])))
            .collect();
        up.push(gate("top", pass("g7")));
        let before = r.apply(&LiveRuleset::default(), up, &[]);
        let after = r.apply(&before, vec![gate("g7", pass("g8"))], &[]);
        let (a, b) = (&before.compiled().gates, &after.compiled().gates);
        assert_eq!(a.len(), b.len());
        let recompiled: Vec<&str> = (0..a.len() as u32)
            .filter(|&s| match (a.shared(s), b.shared(s)) {
                (Some(x), Some(y)) => !Arc::ptr_eq(x, y),
                _ => true,
            })
            .map(|s| &*b[s as usize].name)
            .collect();
        assert_eq!(recompiled, ["g7"], "top references g7 but g7 stayed a gate");
        assert!(value(after.compiled(), "top"));
        assert_eq!(after.problem_count(), r.full().1);
    }

    #[test]
    fn a_cycle_compiles_whole_until_it_is_gone() {
        let mut r = Rules::new();
        let live = r.apply(
            &LiveRuleset::default(),
            vec![gate("a", pass("b")), gate("b", json!([{"type": "public"}]))],
            &[],
        );
        assert!(!live.compiled_whole());
        let live = r.apply(&live, vec![gate("b", pass("a"))], &[]);
        assert!(live.compiled_whole());
        assert_eq!(live.problem_count(), r.full().1);
        assert!(live.problem_count() >= 1);
        let live = r.apply(&live, vec![gate("b", json!([{"type": "public"}]))], &[]);
        assert!(!live.compiled_whole());
        assert_eq!(live.problem_count(), 0);
        assert!(value(live.compiled(), "a"));
    }

    #[test]
    fn settings_and_id_lists_follow_deltas() {
        let mut r = Rules::new();
        let list_gate = Entity {
            key: EntityKey::new(EntityKind::Gate, "g"),
            body: json!({"name": "g", "salt": "s", "defaultValue": false, "idType": "userID",
                "rules": [{"id": "r", "salt": "r", "passPercentage": 100, "returnValue": true,
                    "idType": "userID", "conditions": [{"type": "unit_id",
                    "operator": "in_segment_list", "targetValue": "l", "idType": "userID"}]}]}),
        };
        let live = r.apply(&LiveRuleset::default(), vec![list_gate], &[]);
        assert_eq!(live.problem_count(), 1, "ID list 'l' has no members");
        let list = Entity {
            key: EntityKey::new(EntityKind::IdList, "l"),
            body: json!({"ids": ["abcdefgh"]}),
        };
        let live = r.apply(&live, vec![list], &[]);
        assert_eq!(live.problem_count(), 0);
        assert!(live.compiled().has_id_list("l"));
        let app = Entity {
            key: EntityKey::new(EntityKind::Setting, "app_id"),
            body: json!("web"),
        };
        let live = r.apply(&live, vec![app], &[]);
        assert!(live.compiled().app_id.is_some());
        let live = r.apply(
            &live,
            vec![],
            &[
                EntityKey::new(EntityKind::Setting, "app_id"),
                EntityKey::new(EntityKind::IdList, "l"),
            ],
        );
        assert!(live.compiled().app_id.is_none());
        assert!(!live.compiled().has_id_list("l"));
        assert_eq!(live.problem_count(), 1);
    }
}
