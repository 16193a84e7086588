//! Small builders for admin API tests: gate bodies, rules, commits.

use flagraft_proto::admin::v1 as pb;
use serde_json::{json, Value};

/// A gate body (DCS spec without its name) with `rules`.
pub fn gate_body(salt: &str, rules: Value) -> Value {
    json!({
        "type": "feature_gate",
        "entity": "feature_gate",
        "enabled": true,
        "salt": salt,
        "defaultValue": false,
        "idType": "userID",
        "rules": rules,
    })
}

/// A rule passing everyone who passes gate `target`.
pub fn pass_gate_rule(id: &str, target: &str) -> Value {
    json!({
        "name": id, "id": id, "salt": id, "passPercentage": 100,
        "returnValue": true, "idType": "userID",
        "conditions": [{"type": "pass_gate", "targetValue": target, "idType": "userID"}],
    })
}

/// A dynamic config body returning `value` to everyone.
pub fn config_body(value: Value) -> Value {
    json!({
        "type": "dynamic_config",
        "entity": "dynamic_config",
        "enabled": true,
        "salt": "cfg",
        "defaultValue": value,
        "idType": "userID",
        "rules": [],
    })
}

pub fn entity(kind: &str, name: &str, body: &Value) -> pb::Entity {
    pb::Entity {
        kind: kind.into(),
        name: name.into(),
        json: body.to_string(),
    }
}

pub fn key(kind: &str, name: &str) -> pb::EntityKey {
    pb::EntityKey {
        kind: kind.into(),
        name: name.into(),
    }
}

/// A commit to `project` of `upserts` and `deletes`.
pub fn commit(
    project: &str,
    upserts: Vec<pb::Entity>,
    deletes: Vec<pb::EntityKey>,
    message: &str,
) -> pb::CommitRequest {
    pb::CommitRequest {
        project: project.into(),
        upserts,
        deletes,
        author: "admin-test".into(),
        message: message.into(),
        ..Default::default()
    }
}
