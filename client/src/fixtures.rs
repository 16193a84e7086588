//! Rulesets for this workspace's benches (feature `fixtures`, off by default):
//! one definition of "10,000 gates, the first 51 in a dependency chain" for
//! the SDK's delta bench and the node's commit-check bench.

use crate::entity::{Entity, EntityKey, EntityKind};
use serde_json::{json, Value};

/// A gate passing `pass`% of users in three countries and, if `depends_on`
/// is given, everyone who passes that gate (a dependency edge).
pub fn gate(name: &str, depends_on: Option<&str>, pass: u32) -> Entity {
    let mut rules = vec![json!({
        "name": "rollout", "id": "rollout", "salt": "rollout", "passPercentage": pass,
        "returnValue": true, "idType": "userID",
        "conditions": [
            {"type": "user_field", "field": "country", "operator": "any",
             "targetValue": ["US", "CA", "DE"], "idType": "userID"}
        ],
    })];
    if let Some(d) = depends_on {
        rules.push(json!({
            "name": "dep", "id": "dep", "salt": "dep", "passPercentage": 100,
            "returnValue": true, "idType": "userID",
            "conditions": [{"type": "pass_gate", "targetValue": d, "idType": "userID"}],
        }));
    }
    Entity {
        key: EntityKey::new(EntityKind::Gate, name),
        body: json!({
            "type": "feature_gate", "entity": "feature_gate", "enabled": true,
            "salt": name, "defaultValue": false, "idType": "userID", "rules": Value::Array(rules),
        }),
    }
}

/// Gates `g0..g{n-1}`; `g1..=g{chain}` form a chain `g_i -> g_{i-1}`.
pub fn chained_gates(n: usize, chain: usize, pass: u32) -> Vec<Entity> {
    (0..n)
        .map(|i| {
            let dep = (1..=chain).contains(&i).then(|| format!("g{}", i - 1));
            gate(&format!("g{i}"), dep.as_deref(), pass)
        })
        .collect()
}
