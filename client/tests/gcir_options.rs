//! Client initialize responses: target-app filtering, hashing options,
//! parameter stores, ETags, and the SDK's bootstrap document.

use flagraft_client::dcs::entities_from_dcs;
use flagraft_client::digest::RulesetDigest;
use flagraft_client::gcir::{
    client_initialize_response, content_etag, request_etag, ClientRuleset, ClientUser, GcirOptions,
    HashAlgorithm, InitializeResponse,
};
use flagraft_client::sdk::Client;
use flagraft_client::EvalOptions;
use serde_json::{json, Value};

fn gate(name: &str, entity: &str, apps: Option<&[&str]>) -> Value {
    let mut g = json!({
        "name": name, "type": "feature_gate", "entity": entity, "salt": format!("salt-{name}"),
        "enabled": true, "defaultValue": false, "idType": "userID",
        "rules": [{"id": format!("rule-{name}"), "salt": format!("rsalt-{name}"),
                   "passPercentage": 100, "returnValue": true, "idType": "userID",
                   "conditions": [{"type": "public", "idType": "userID"}]}]
    });
    if let Some(apps) = apps {
        g["targetAppIDs"] = json!(apps);
    }
    g
}

/// A v1 DCS: gates for two apps, one untargeted, a segment and a holdout;
/// a gate depending on another (secondary exposure); key → app maps; a
/// parameter store.
fn dcs() -> Value {
    let mut dep = gate("depends_on_web", "feature_gate", Some(&["web", "ios"]));
    dep["rules"][0]["conditions"] =
        json!([{"type": "pass_gate", "targetValue": "web_only", "idType": "userID"}]);
    json!({
        "has_updates": true, "time": 1,
        "feature_gates": [
            gate("web_only", "feature_gate", Some(&["web"])),
            gate("ios_only", "feature_gate", Some(&["ios"])),
            gate("untargeted", "feature_gate", None),
            gate("segment:beta", "segment", Some(&["web"])),
            gate("holdout_a", "holdout", Some(&["web"])),
            dep,
        ],
        "dynamic_configs": [], "layer_configs": [], "layers": {},
        "app_id": "server-app",
        "sdk_keys_to_app_ids": {"client-web": "web", "client-ios": "ios"},
        "param_stores": {"store_a": {"targetAppIDs": ["web"], "parameters": {
            "flag": {"ref_type": "gate", "param_type": "boolean", "gate_name": "web_only",
                     "pass_value": true, "fail_value": false},
            "fixed": {"ref_type": "static", "param_type": "number", "value": 3}
        }}}
    })
}

fn ruleset() -> ClientRuleset {
    let entities = entities_from_dcs(dcs().to_string().as_bytes()).unwrap();
    ClientRuleset::new(3, RulesetDigest::EMPTY, 1234, &entities)
}

fn build(rs: &ClientRuleset, opts: &GcirOptions) -> InitializeResponse {
    let eval = EvalOptions::default();
    let user = ClientUser::from_json(&json!({"userID": "u1"})).unwrap();
    client_initialize_response(&rs.view(&eval), &user, opts)
}

fn gate_names(r: &InitializeResponse) -> Vec<String> {
    r.feature_gates.keys().cloned().collect()
}

#[test]
fn a_client_key_sees_only_its_apps_specs() {
    let rs = ruleset();
    let none = GcirOptions::default().with_hash(HashAlgorithm::None);
    // No key: no filtering, but never segments or holdouts.
    assert_eq!(
        gate_names(&build(&rs, &none)),
        ["depends_on_web", "ios_only", "untargeted", "web_only"]
    );
    let web = build(&rs, &none.clone().with_client_key("client-web"));
    assert_eq!(gate_names(&web), ["depends_on_web", "web_only"]);
    let ios = build(&rs, &none.clone().with_client_key("client-ios"));
    assert_eq!(gate_names(&ios), ["depends_on_web", "ios_only"]);
    // A key missing from sdk_keys_to_app_ids has no app: nothing is filtered.
    let other = build(&rs, &none.clone().with_client_key("client-unknown"));
    assert_eq!(gate_names(&other).len(), 4);
    // Parameter stores are filtered the same way.
    assert!(web.param_stores.contains_key("store_a"));
    assert!(!ios.param_stores.contains_key("store_a"));
}

#[test]
fn names_exposures_and_param_refs_are_hashed() {
    let rs = ruleset();
    for h in HashAlgorithm::ALL {
        let r = build(&rs, &GcirOptions::default().with_hash(h));
        assert_eq!(r.hash_used, h.as_str());
        let dep = &r.feature_gates[&h.hash("depends_on_web")];
        assert_eq!(dep.name, h.hash("depends_on_web"));
        assert!(dep.value);
        assert_eq!(dep.secondary_exposures.len(), 1);
        assert_eq!(dep.secondary_exposures[0].gate, h.hash("web_only"));
        assert_eq!(dep.secondary_exposures[0].gate_value, "true");
        assert_eq!(dep.secondary_exposures[0].rule_id, "rule-web_only");
        let store = &r.param_stores[&h.hash("store_a")];
        assert_eq!(store["flag"]["gate_name"], json!(h.hash("web_only")));
        assert_eq!(store["fixed"]["value"], json!(3));
    }
    // Hashed, names appear nowhere as a JSON string (rule ids here embed
    // them, hence the quotes).
    let text = String::from_utf8(build(&rs, &GcirOptions::default()).to_json_bytes()).unwrap();
    for name in ["\"web_only\"", "\"depends_on_web\"", "\"store_a\""] {
        assert!(!text.contains(name), "{name} leaked: {text}");
    }
}

#[test]
fn time_dependence_is_detected() {
    assert!(!ruleset().meta.is_time_dependent());
    let mut d = dcs();
    d["feature_gates"][0]["rules"][0]["conditions"] = json!([{"type": "current_time",
        "operator": "after", "targetValue": 0, "idType": "userID"}]);
    let entities = entities_from_dcs(d.to_string().as_bytes()).unwrap();
    let rs = ClientRuleset::new(1, RulesetDigest::EMPTY, 1, &entities);
    assert!(rs.meta.is_time_dependent());
}

#[test]
fn etags_depend_on_version_user_and_options_only() {
    let u = |s: &str| ClientUser::from_json(&serde_json::from_str(s).unwrap()).unwrap();
    let a = u(r#"{"userID":"u","custom":{"x":1,"y":2}}"#);
    let a2 = u(r#"{"custom":{"y":2,"x":1},"userID":"u"}"#);
    let b = u(r#"{"userID":"v"}"#);
    let d = RulesetDigest::EMPTY;
    let o = GcirOptions::default();
    let tag = request_etag(5, &d, &a, &o);
    assert_eq!(tag, request_etag(5, &d, &a2, &o));
    assert_ne!(tag, request_etag(6, &d, &a, &o));
    assert_ne!(tag, request_etag(5, &d, &b, &o));
    assert_ne!(
        tag,
        request_etag(5, &d, &a, &o.clone().with_hash(HashAlgorithm::Sha256))
    );
    assert_ne!(
        tag,
        request_etag(5, &d, &a, &o.clone().with_client_key("k"))
    );
    assert!(tag.starts_with("\"i5-") && tag.ends_with('"'));
    assert_ne!(content_etag(5, b"{}"), content_etag(5, b"{ }"));
}

#[tokio::test]
async fn the_sdk_bootstrap_document_equals_the_builders() {
    let entities = entities_from_dcs(dcs().to_string().as_bytes()).unwrap();
    let client = Client::builder()
        .local_rules(entities.clone())
        .build()
        .await
        .unwrap();
    let state = client.ruleset();
    let rs = ClientRuleset::new(state.version, state.digest, state.commit_time_ms, &entities);
    let user =
        json!({"userID": "u1", "customIDs": {"stableID": "s"}, "privateAttributes": {"p": 1}});
    for opts in [
        GcirOptions::default(),
        GcirOptions::default().with_hash(HashAlgorithm::Sha256),
        GcirOptions::default().with_client_key("client-web"),
    ] {
        let from_sdk = client.client_initialize_response(&user, &opts).unwrap();
        let eval = EvalOptions::default();
        let direct = client_initialize_response(
            &rs.view(&eval),
            &ClientUser::from_json(&user).unwrap(),
            &opts,
        );
        assert_eq!(from_sdk.to_json_bytes(), direct.to_json_bytes());
        assert!(!from_sdk.feature_gates.is_empty());
    }
    assert!(client
        .client_initialize_response(&json!("not a user"), &GcirOptions::default())
        .is_err());
}
