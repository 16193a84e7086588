//! Local mode (rules from a file or from code, no network) and overrides.

use flagraft_client::digest::{entity_key_hash, RulesetDigest};
use flagraft_client::entity::{Entity, EntityKey, EntityKind};
use flagraft_client::sdk::{Client, EvalSource, OverrideKind, StateSource};
use flagraft_client::User;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

fn cases() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases")
}

fn users(name: &str) -> Vec<User> {
    let text = std::fs::read_to_string(cases().join(format!("{name}.users.json"))).unwrap();
    let users: Vec<Value> = serde_json::from_str(&text).unwrap();
    users.iter().map(|u| User::from_json(u).unwrap()).collect()
}

#[tokio::test]
async fn local_mode_from_a_dcs_file_answers_like_statsig() {
    let client = Client::builder()
        .local_file(cases().join("experiments.dcs.json"))
        .build()
        .await
        .unwrap();
    assert_eq!(client.health().source, StateSource::Local);
    let users = users("experiments");
    let expected = std::fs::read_to_string(cases().join("experiments.expected.jsonl")).unwrap();
    let mut checked = 0;
    for line in expected.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let user = &users[e["user"].as_u64().unwrap() as usize];
        let name = e["name"].as_str().unwrap();
        let (value, rule_id) = match e["kind"].as_str().unwrap() {
            "gate" => {
                let g = client.get_gate(user, name);
                (Value::Bool(g.value), g.rule_id)
            }
            "config" => {
                let c = client.get_config(user, name);
                (c.value, c.rule_id)
            }
            "experiment" => {
                let c = client.get_experiment(user, name);
                (c.value, c.rule_id)
            }
            _ => {
                let c = client.get_layer(user, name);
                (c.value, c.rule_id)
            }
        };
        assert_eq!(value, e["value"], "{line}");
        assert_eq!(rule_id, e["rule_id"].as_str().unwrap(), "{line}");
        checked += 1;
    }
    assert!(checked > 100, "only {checked} lines");
}

fn gate_entity(name: &str, on_for: &str) -> Entity {
    // A gate that passes only for one user ID.
    Entity {
        key: EntityKey::new(EntityKind::Gate, name),
        body: json!({
            "name": name, "type": "feature_gate", "salt": "s", "enabled": true,
            "defaultValue": false, "idType": "userID", "entity": "feature_gate",
            "rules": [{
                "name": "r", "id": "rule_on", "salt": "r", "passPercentage": 100,
                "returnValue": true, "idType": "userID",
                "conditions": [{"type": "user_field", "targetValue": [on_for],
                                "operator": "any", "field": "userID", "idType": "userID"}]
            }]
        }),
    }
}

#[tokio::test]
async fn overrides_take_precedence_user_first_then_everyone_then_rules() {
    let client = Client::builder()
        .local_rules(vec![gate_entity("g", "alice")])
        .build()
        .await
        .unwrap();
    let alice = User::with_user_id("alice");
    let bob = User::with_user_id("bob");
    assert!(client.check_gate(&alice, "g"));
    assert!(!client.check_gate(&bob, "g"));
    assert_eq!(client.get_gate(&alice, "g").source, EvalSource::Rules);

    client.override_gate("g", true, None);
    assert!(client.check_gate(&bob, "g"));
    client.override_gate("g", false, Some("bob"));
    assert!(
        !client.check_gate(&bob, "g"),
        "user override beats everyone override"
    );
    assert!(client.check_gate(&alice, "g"));
    assert_eq!(client.get_gate(&bob, "g").source, EvalSource::Override);

    client.override_gate("g", false, None);
    assert!(
        !client.check_gate(&alice, "g"),
        "everyone override beats rules"
    );
    assert!(client.remove_override(OverrideKind::Gate, "g", None));
    assert!(client.check_gate(&alice, "g"));

    // Configs, experiments and layers, including ones the rules do not know.
    assert_eq!(
        client.get_config(&alice, "c").source,
        EvalSource::Unrecognized
    );
    client.override_config("c", json!({"x": 1}), Some("alice"));
    client.override_experiment("e", json!({"arm": "b"}), None);
    client.override_layer("l", json!({"p": true}), None);
    assert_eq!(client.get_config(&alice, "c").value, json!({"x": 1}));
    assert_eq!(
        client.get_config(&bob, "c").source,
        EvalSource::Unrecognized
    );
    assert_eq!(client.get_experiment(&bob, "e").value, json!({"arm": "b"}));
    assert_eq!(client.get_layer(&bob, "l").value, json!({"p": true}));
    assert_eq!(
        client.get_config(&bob, "e").source,
        EvalSource::Unrecognized
    );
    client.clear_overrides();
    assert!(!client.check_gate(&bob, "g"));
}

#[tokio::test]
async fn local_rules_can_be_replaced_and_come_from_an_entity_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&vec![gate_entity("g", "alice")]).unwrap(),
    )
    .unwrap();
    let client = Client::builder().local_file(&path).build().await.unwrap();
    let alice = User::with_user_id("alice");
    assert!(client.check_gate(&alice, "g"));
    let v = client.version();
    let mut updates = client.updates();
    client
        .set_local_rules(vec![gate_entity("g", "bob")])
        .unwrap();
    assert_eq!(
        client.wait_for_version(v + 1, Duration::from_secs(5)).await,
        Ok(v + 1)
    );
    let update = updates.recv().await.unwrap();
    assert_eq!(update.version, v + 1);
    let bob = gate_entity("g", "bob");
    // The update carries the digest of the rules it installed.
    assert_eq!(update.digest, client.digest());
    assert_eq!(
        update.digest,
        RulesetDigest::from_hashes(&[entity_key_hash(&bob.key, &bob.body)])
    );
    assert!(!client.check_gate(&alice, "g"));

    assert!(Client::builder()
        .local_file(dir.path().join("missing.json"))
        .build()
        .await
        .is_err());
}
