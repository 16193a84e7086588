//! Property: applying arbitrary deltas one by one to a [`LiveRuleset`] gives
//! the same evaluation results (gates, configs, experiments, layers, for a
//! set of users), the same names, ID lists and problem count as compiling the
//! resulting entities whole. Also: `check_lenient` (validation without lookup
//! sets) reports exactly the problems of `compile_lenient`.
//!
//! Material: the entities of the shared cases (`../../shared/cases`), plus
//! variants of them: disabled, unreadable, an ID list with half its members
//! or with a bad member, and gates given an extra `pass_gate` on another
//! pool gate (so references appear, dangle, and sometimes form cycles).

use flagraft_client::compile::LiveRuleset;
use flagraft_client::dcs::{entities_from_dcs, id_list_entities};
use flagraft_client::entity::{Entity, EntityKey, EntityKind};
use flagraft_client::{CompiledRuleset, EvalOptions, User};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

struct Material {
    /// Every key with its bodies (the first is the case's own).
    pool: Vec<(EntityKey, Vec<Value>)>,
    gate_names: Vec<String>,
    users: Vec<User>,
}

const CASES: [&str; 3] = ["gates", "experiments", "layers"];
/// Users per case that every comparison evaluates.
const USERS_PER_CASE: usize = 3;

fn material() -> &'static Material {
    static M: OnceLock<Material> = OnceLock::new();
    M.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases");
        let mut bodies: BTreeMap<EntityKey, Vec<Value>> = BTreeMap::new();
        let mut users = Vec::new();
        for case in CASES {
            let read = |suffix: &str| std::fs::read(dir.join(format!("{case}{suffix}")));
            let mut entities = entities_from_dcs(&read(".dcs.json").expect("case dcs")).unwrap();
            if let Ok(ids) = read(".id_lists.json") {
                entities.extend(id_list_entities(&ids).unwrap());
            }
            for e in entities {
                let v = bodies.entry(e.key).or_default();
                if !v.contains(&e.body) {
                    v.push(e.body);
                }
            }
            let us: Vec<Value> = serde_json::from_slice(&read(".users.json").unwrap()).unwrap();
            users.extend(
                us.iter()
                    .take(USERS_PER_CASE)
                    .map(|u| User::from_json(u).unwrap()),
            );
        }
        let gate_names: Vec<String> = bodies
            .keys()
            .filter(|k| k.kind == EntityKind::Gate)
            .map(|k| k.name.clone())
            .collect();
        let pool = bodies
            .into_iter()
            .map(|(key, mut v)| {
                let first = v[0].clone();
                v.extend(variants(&key, &first));
                (key, v)
            })
            .collect();
        Material {
            pool,
            gate_names,
            users,
        }
    })
}

/// Changed versions of a body (references to other gates are added per op).
fn variants(key: &EntityKey, body: &Value) -> Vec<Value> {
    match key.kind {
        EntityKind::Gate | EntityKind::Config | EntityKind::Layer => {
            let mut disabled = body.clone();
            disabled["enabled"] = json!(false);
            vec![disabled, json!({"rules": "not an array"})]
        }
        EntityKind::IdList => {
            let ids = body["ids"].as_array().cloned().unwrap_or_default();
            let half: Vec<Value> = ids.iter().step_by(2).cloned().collect();
            vec![json!({ "ids": half }), json!({"ids": [1]})]
        }
        EntityKind::Setting => vec![json!("other-value")],
    }
}

/// The body with a first rule that passes when `other` passes.
fn referencing(body: &Value, other: &str) -> Value {
    let mut b = body.clone();
    let rule = json!({"name": "ref", "id": "ref", "salt": "ref", "passPercentage": 100,
        "returnValue": true, "idType": "userID",
        "conditions": [{"type": "pass_gate", "targetValue": other, "idType": "userID"}]});
    if let Some(rules) = b.get_mut("rules").and_then(Value::as_array_mut) {
        rules.insert(0, rule);
    }
    b
}

/// One change: delete, upsert a variant, or upsert a gate referencing another.
#[derive(Clone, Debug)]
struct Op {
    key: Index,
    action: u8,
    variant: Index,
}

fn op() -> impl Strategy<Value = Op> {
    (any::<Index>(), 0u8..6, any::<Index>()).prop_map(|(key, action, variant)| Op {
        key,
        action,
        variant,
    })
}

/// Apply `ops` to `map`, returning the keys they touched.
fn apply_ops(map: &mut BTreeMap<EntityKey, Entity>, ops: &[Op]) -> Vec<EntityKey> {
    let m = material();
    let mut keys = Vec::new();
    for op in ops {
        let (key, bodies) = &m.pool[op.key.index(m.pool.len())];
        keys.push(key.clone());
        let body = match op.action {
            0 => {
                map.remove(key);
                continue;
            }
            1 if key.kind == EntityKind::Gate => {
                let other = &m.gate_names[op.variant.index(m.gate_names.len())];
                referencing(&bodies[0], other)
            }
            _ => bodies[op.variant.index(bodies.len())].clone(),
        };
        map.insert(
            key.clone(),
            Entity {
                key: key.clone(),
                body,
            },
        );
    }
    keys
}

fn sorted(names: impl Iterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = names.map(Into::into).collect();
    v.sort();
    v
}

/// Everything observable about `live` equals `full` (a whole compile).
fn same(live: &LiveRuleset, map: &BTreeMap<EntityKey, Entity>) -> Result<(), TestCaseError> {
    let (full, problems) = CompiledRuleset::compile_lenient(map.values());
    // Validation skips building lookup sets; it must find exactly the same problems.
    prop_assert_eq!(
        &CompiledRuleset::check_lenient(map.values()),
        &problems,
        "check_lenient vs compile_lenient problems"
    );
    let inc = live.compiled();
    prop_assert_eq!(live.problem_count(), problems.len(), "problem count");
    prop_assert_eq!(sorted(inc.gate_names()), sorted(full.gate_names()));
    prop_assert_eq!(sorted(inc.config_names()), sorted(full.config_names()));
    prop_assert_eq!(
        sorted(inc.experiment_names()),
        sorted(full.experiment_names())
    );
    prop_assert_eq!(sorted(inc.layer_names()), sorted(full.layer_names()));
    let m = material();
    let opts = EvalOptions::default().with_now_ms(1_750_000_000_000);
    for (key, _) in &m.pool {
        let name = key.name.as_str();
        for user in &m.users {
            match key.kind {
                EntityKind::Gate => prop_assert_eq!(
                    inc.check_gate(user, name, &opts),
                    full.check_gate(user, name, &opts),
                    "gate {}",
                    name
                ),
                EntityKind::Config => {
                    prop_assert_eq!(
                        inc.get_config(user, name, &opts),
                        full.get_config(user, name, &opts),
                        "config {}",
                        name
                    );
                    prop_assert_eq!(
                        inc.get_experiment(user, name, &opts),
                        full.get_experiment(user, name, &opts),
                        "experiment {}",
                        name
                    );
                }
                EntityKind::Layer => prop_assert_eq!(
                    inc.get_layer(user, name, &opts),
                    full.get_layer(user, name, &opts),
                    "layer {}",
                    name
                ),
                EntityKind::IdList => {
                    prop_assert_eq!(inc.has_id_list(name), full.has_id_list(name));
                    break;
                }
                EntityKind::Setting => break,
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn deltas_applied_one_by_one_equal_a_whole_compile(
        start_full in any::<bool>(),
        deltas in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..10),
    ) {
        let m = material();
        let mut map: BTreeMap<EntityKey, Entity> = BTreeMap::new();
        if start_full {
            for (key, bodies) in &m.pool {
                map.insert(key.clone(), Entity { key: key.clone(), body: bodies[0].clone() });
            }
        }
        let mut live = LiveRuleset::build(&map);
        same(&live, &map)?;
        for ops in &deltas {
            let keys = apply_ops(&mut map, ops);
            let refs: Vec<&EntityKey> = keys.iter().collect();
            live = live.apply(&map, &refs);
            same(&live, &map)?;
        }
    }
}

/// The shared cases built incrementally, one entity per delta, in reverse
/// order (every reference dangles first, then resolves), evaluate like the
/// whole compile for every user of the case.
#[test]
fn shared_cases_built_one_entity_at_a_time() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases");
    for case in CASES {
        let read = |suffix: &str| std::fs::read(dir.join(format!("{case}{suffix}")));
        let mut entities = entities_from_dcs(&read(".dcs.json").unwrap()).unwrap();
        if let Ok(ids) = read(".id_lists.json") {
            entities.extend(id_list_entities(&ids).unwrap());
        }
        let mut map = BTreeMap::new();
        let mut live = LiveRuleset::default();
        for e in entities.iter().rev() {
            map.insert(e.key.clone(), e.clone());
            live = live.apply(&map, &[&e.key]);
        }
        assert!(
            !live.compiled_whole(),
            "{case}: no cycles in the shared cases"
        );
        let full = CompiledRuleset::compile_lenient(&entities).0;
        let inc = live.compiled();
        let users: Vec<Value> = serde_json::from_slice(&read(".users.json").unwrap()).unwrap();
        let opts = EvalOptions::default().with_now_ms(1_750_000_000_000);
        let mut compared = 0;
        for u in &users {
            let u = User::from_json(u).unwrap();
            for g in full.gate_names() {
                assert_eq!(inc.check_gate(&u, g, &opts), full.check_gate(&u, g, &opts));
                compared += 1;
            }
            for c in full.config_names().chain(full.experiment_names()) {
                assert_eq!(inc.get_config(&u, c, &opts), full.get_config(&u, c, &opts));
                compared += 1;
            }
            for l in full.layer_names() {
                assert_eq!(inc.get_layer(&u, l, &opts), full.get_layer(&u, l, &opts));
                compared += 1;
            }
        }
        assert!(
            compared >= users.len() * 6,
            "{case}: {compared} results compared"
        );
    }
}
